"""The `editaudit` command line: the CI gate and the API's resources over HTTP (needs only the base install), plus
`serve`, `migrate`, `demo` and `keys`, which need the `api` (and for jobs the `worker`) extra."""
