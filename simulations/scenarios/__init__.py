"""The bundled scenario files (TOML): ``sandflower simulate NAME`` finds them by name."""
