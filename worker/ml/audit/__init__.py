"""The robustness audit: attacks (registry in `attacks/`), metrics and statistics."""
