"""The .proto files and their generated Python (model spec, kernel manifest, reports)."""
