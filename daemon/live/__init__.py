"""The live daemon: service, ticks, the training thread, health, scheduling, metrics and
their HTTP exporter."""
