"""Data files: names, the CSV reader, read-ahead, the import of one file, replay inputs."""
