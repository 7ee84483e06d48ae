"""`editaudit models upload` and `editaudit datasets upload`: files in, ids out. The file is streamed, not read
into memory; uploading the same content again answers the existing id."""

from __future__ import annotations

import click

from editaudit.cli.common import EXIT_CODES_HELP, api_options, client, handled, json_option, read_json, show

quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only the id (for scripts).")
idempotency_option = click.option("--idempotency-key", default=None, metavar="K",
                                  help="Retrying with the same key returns the first answer.")
FILE = click.Path(exists=True, dir_okay=False, readable=True)


@click.group()
def models():
    """Checkpoints: safetensors state_dicts checked against their architecture."""


@models.command("upload", epilog=EXIT_CODES_HELP)
@click.argument("file", type=FILE)
@click.option("--spec", required=True, metavar="JSON|@FILE",
              help='The model spec, inline or @spec.json: {"arch": "editaudit/smallcnn", "num_classes": 10, '
                   '"input_shape": [1, 8, 8]} (optional "mean", "std"; GET /archs lists architectures).')
@idempotency_option
@json_option
@quiet_option
@api_options
def upload_model(file, spec, idempotency_key, as_json, quiet, url, key):
    """Upload FILE (a safetensors state_dict; pickle files are refused) and print the model's id."""
    spec_obj = read_json(spec, "--spec")
    if not isinstance(spec_obj, dict):
        raise click.UsageError("--spec must be a JSON object")
    with handled(url), client(url, key) as api:
        model = api.upload_model(file, spec_obj, idempotency_key=idempotency_key)
    show(model, as_json, quiet,
         lambda m: f"model {m['id']}  {m['arch']}  sha256 {m['sha256'][:12]}…  {m['size_bytes']} bytes")


@click.group()
def datasets():
    """Edit, generalization and test sets: safetensors or .npz with x, y (optional x_orig, mask)."""


@datasets.command("upload", epilog=EXIT_CODES_HELP)
@click.argument("file", type=FILE)
@idempotency_option
@json_option
@quiet_option
@api_options
def upload_dataset(file, idempotency_key, as_json, quiet, url, key):
    """Upload FILE (.safetensors or .npz: x float32 [N,C,H,W] in [0,1] or uint8 [N,H,W,C], y int64 [N]) and print
    the dataset's id."""
    with handled(url), client(url, key) as api:
        ds = api.upload_dataset(file, idempotency_key=idempotency_key)
    show(ds, as_json, quiet, lambda d: f"dataset {d['id']}  n={d['n']}  shape={d['shape']}  sha256 {d['sha256'][:12]}…")
