"""Celery worker (tasks are thin adapters) and the ML core in `editaudit.worker.ml`."""
