"""The deployment gate, torch-free: policies (policy), their evaluation against an audit (evaluate) and the
verdict's formats (render). The API evaluates; the CLI renders."""
