"""Shared infrastructure of the API and the worker: settings, database, repository queries, object store, queue,
keys, logs. Torch-free; imports only editaudit.contracts."""
