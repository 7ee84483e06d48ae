"""The torch-free contracts the API, the worker, the gate and the CLI share: edit-method and attack params with their
traits, the audit config, metric names, statuses, built-in datasets and upload formats. Nothing here imports torch,
so the API validates a request exactly as the worker will read it."""
