"""Data model, JSON codec, errors and paths: pure Python, no Qt, no I/O policy."""
