"""The model specifications (one TOML per variant), installed as package data."""
