"""The HTTP API, persistence, object store, settings and CLI. Never imports torch."""
