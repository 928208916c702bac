"""Settings: the keys, their checks, the TOML / environment / flag loader."""
