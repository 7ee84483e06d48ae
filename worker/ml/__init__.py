"""The ML core: architectures, edit methods and the audit. Plain functions over nn.Module and tensors; no DB, HTTP
or Celery imports, so it can be used and tested on its own."""
