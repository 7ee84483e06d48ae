"""`editaudit models upload|import|list|get|layers|lineage|download` and `editaudit datasets upload|import|list|get`:
files in, ids out, and what the server holds. An upload is streamed, not read into memory; the same content again
answers the existing id. `import` also waits, with progress, while a worker checks what the API cannot (a timm or
Hugging Face checkpoint, an image-folder archive)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    api_options,
    document_command,
    document_options,
    fetch,
    key_value_table,
    list_command,
    read_json,
    show_document,
)
from editaudit.cli.edits import idempotency_option
from editaudit.cli.progress import ProgressReporter, every_option
from editaudit.client import Client
from editaudit.client.types import Download
from editaudit.core.tables import render

FILE = click.Path(exists=True, dir_okay=False, readable=True)


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group()
def models():
    """Checkpoints: safetensors state_dicts checked against their architecture (registered ones, timm, Hugging
    Face); their layers and lineage."""


@models.command("upload", epilog=EXIT_CODES_HELP)
@click.argument("file", type=FILE)
@click.option("--spec", required=True, metavar="JSON|@FILE",
              help='The model spec, inline or @spec.json: {"arch": "editaudit/smallcnn", "num_classes": 10, '
                   '"input_shape": [1, 8, 8]} (optional "mean", "std"; `editaudit archs` lists architectures).')
@idempotency_option
@document_options("the model", quiet=True)
def upload_model(file, spec, idempotency_key, fmt, output, quiet, url, key):
    """Upload FILE (a safetensors state_dict; pickle files are refused) and print the model's id."""
    spec_obj = read_json(spec, "--spec")
    if not isinstance(spec_obj, dict):
        raise click.UsageError("--spec must be a JSON object")
    model = fetch(url, key, lambda api: api.upload_model(file, spec_obj, idempotency_key=idempotency_key))
    show_document(model, fmt, output, lambda: f"model {model['id']}  {model['arch']}  sha256 {model['sha256'][:12]}…"
                                              f"  {model['size_bytes']} bytes", model["id"] if quiet else None)


@models.command("import", epilog="Exit codes: 0 ready, 1 the worker's check refused it (invalid: the reason is "
                                   "printed), 2 error, 3 not found, 4 usage.")
@click.argument("source")
@click.option("--weights", type=FILE, default=None, metavar="FILE",
              help="timm: the safetensors state_dict (a Hugging Face folder holds its own model.safetensors).")
@click.option("--num-classes", type=int, default=None, help="timm: classes (default: from the checkpoint's "
                                                              "classifier, else timm's pretrained config).")
@click.option("--input-shape", default=None, metavar="C,H,W", help="timm: input shape (default: the pretrained "
                                                                    "config's input_size).")
@click.option("--spec", "extra", default=None, metavar="JSON|@FILE",
              help='More spec fields, e.g. {"class_names": [...], "preprocess": {"resize": 256}}.')
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait while a worker checks the checkpoint (validating -> ready | invalid).")
@every_option
@document_options("the model", quiet=True)
def import_model(source, weights, num_classes, input_shape, extra, wait, progress_every, fmt, output, quiet, url,
                 key):
    """Import a timm model (SOURCE = timm/<name>, with --weights) or a Hugging Face image classifier (SOURCE = a
    folder with config.json, model.safetensors and optionally preprocessor_config.json, as save_pretrained writes
    it). Nothing is downloaded: timm builds the architecture with pretrained=False, transformers from the config
    (no remote code), and the weights are yours. A worker builds the model and loads the weights; the first tensor
    that does not fit is named.

    \b
    Examples:
      editaudit models import timm/resnet50 --weights resnet50.safetensors
      editaudit models import ./vit-finetuned
    """
    spec = dict(read_json(extra, "--spec")) if extra else {}
    if num_classes is not None:
        spec["num_classes"] = num_classes
    if input_shape is not None:
        try:
            spec["input_shape"] = [int(d) for d in input_shape.split(",")]
        except ValueError:
            raise click.UsageError("--input-shape takes C,H,W, e.g. 3,224,224") from None
    folder = Path(source)
    if folder.is_dir():
        if weights is not None:
            raise click.UsageError("a Hugging Face folder holds its own model.safetensors; drop --weights")
        upload = lambda api: api.import_hf_model(folder, wait=False, **spec)  # noqa: E731
    elif source.startswith("timm/"):
        if weights is None:
            raise click.UsageError("timm models need --weights (a safetensors state_dict)")
        upload = lambda api: api.import_timm_model(source, weights, wait=False, **spec)  # noqa: E731
    else:
        raise click.UsageError(f"{source!r} is neither timm/<name> nor a folder with a Hugging Face config.json")
    model = fetch(url, key, lambda api: _wait(api, "model", upload(api), wait, progress_every))
    show_document(model, fmt, output, lambda: model_line(model), model["id"] if quiet else None)
    _exit_for(model)


def model_line(m: Mapping[str, Any]) -> str:
    spec = m.get("spec") or {}
    line = (f"model {m['id']}  {m['arch']}  {m.get('status', 'ready')}  classes={spec.get('num_classes', '?')}  "
            f"input={'x'.join(map(str, spec.get('input_shape') or [])) or '?'}  sha256 {m['sha256'][:12]}…")
    return line + (f"\n  invalid: {m['error']}" if m.get("status") == "invalid" else "")


def _wait(api: Client, kind: str, row: Any, wait: bool, every: float) -> Any:
    """The row once a worker has checked it (with progress on stderr), or as uploaded with --no-wait."""
    if not wait or row.get("status") != "validating":
        return row
    reporter = ProgressReporter(kind, every=every)

    def show(current: Mapping[str, Any]) -> None:
        p = current.get("progress") or {}
        stage = ("decoding images" if p.get("total") else "checking") if current["status"] == "validating" else ""
        reporter({"id": current["id"], "status": current["status"],
                  "progress": {"stage": stage, "done": p.get("done"), "total": p.get("total")}})

    try:
        return api.wait_until_ready(kind, row["id"], on_progress=show, timeout=None)
    finally:
        reporter.close()


def _exit_for(row: Mapping[str, Any]) -> None:
    if row.get("status") == "invalid":
        click.echo(f"{row['id']} is invalid: {row.get('error')}", err=True)
        sys.exit(1)


list_models = list_command(
    models, Client.iter_models, ["id", "arch", "status", "size", "parent", "made by edit", "created"],
    lambda m: [m["id"], m["arch"], m.get("status", "ready"), _size(m.get("size_bytes")),
               m.get("parent_model_id") or "-", m.get("edit_id") or "-", m["created_at"][:19]],
    "The tenant's models, newest first (uploaded ones and those edits made).", align_right={3})


def model_table(m: Mapping[str, Any]) -> str:
    spec = m.get("spec") or {}
    return key_value_table([
        ("id", m["id"]), ("arch", m["arch"]), ("status", m.get("status")), ("error", m.get("error")),
        ("num classes", spec.get("num_classes")),
        ("input shape", "x".join(map(str, spec.get("input_shape") or [])) or None),
        ("size", f"{_size(m.get('size_bytes'))} ({m.get('size_bytes')} bytes)"), ("sha256", m["sha256"]),
        ("parent model", m.get("parent_model_id")), ("made by edit", m.get("edit_id")),
        ("created", m["created_at"])])


get_model = document_command(
    models, "get", Client.get_model, model_table,
    "Show a model: architecture, spec, size, sha256, and the edit that made it (if one did).",
    argument="model_id", what="the model")


@models.command("layers", epilog=EXIT_CODES_HELP)
@click.argument("model_id")
@click.option("--match", "pattern", default=None, metavar="GLOB",
              help="Only layers whose name matches, e.g. 'layer4*'.")
@document_options("the layers")
def layers(model_id, pattern, fmt, output, url, key):
    """The layers an edit may name in `layers` (with type, weight shape and parameter count).

    \b
    Example:
      editaudit models layers "$MODEL" --match 'fc*'
    """
    import fnmatch

    out = fetch(url, key, lambda api: api.get_model_layers(model_id))
    if pattern:
        out = {**out, "layers": [lay for lay in out["layers"] if fnmatch.fnmatchcase(lay["name"], pattern)]}
    renamed = any(lay.get("checkpoint_name") for lay in out["layers"])
    show_document(out, fmt, output, lambda: f"model {out['model_id']} ({out['arch']}): {len(out['layers'])} "
                  "editable layers (a block's path or a glob names several)\n\n" + render(
                      ["layer", "type", "weight shape", "parameters", "rewrite"] + (["in the checkpoint"] if renamed
                                                                                    else []),
                      [[lay["name"], lay["type"], "x".join(map(str, lay.get("weight_shape") or [])) or "-",
                        f"{lay['parameters']:,}", lay.get("rewrite") or "-"]
                       + ([lay.get("checkpoint_name") or "-"] if renamed else []) for lay in out["layers"]],
                      align_right={3}))


def lineage_table(out: Mapping[str, Any]) -> str:
    rows = [["ancestor", n["id"], n.get("edit_id") or "-", n["created_at"][:19]] for n in out["ancestors"]
            if n["id"] != out["model_id"]]
    rows.append(["this model", out["model_id"], "", ""])
    rows += [["child", n["id"], n.get("edit_id") or "-", n["created_at"][:19]] for n in out["children"]]
    return render(["", "model", "made by edit", "created"], rows, align_right=set())


lineage = document_command(
    models, "lineage", Client.get_model_lineage, lineage_table,
    "Where a model comes from (its ancestors, root first, each with the edit that made the next) and the models\n"
    "edits made from it.", argument="model_id", what="the lineage")


@models.command("download", epilog=EXIT_CODES_HELP)
@click.argument("model_id")
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the safetensors file ('-': stdout; a file is written beside it first and moved "
                   "there once verified).")
@api_options
def download_model(model_id, output, url, key):
    """Download a model's weights, streamed and verified against the server's X-Content-SHA256 (a mismatch leaves
    no file and exits 2)."""
    download_to(output, lambda api, dest: api.download_model_weights(model_id, dest), url, key)


def download_to(output: str, download: Callable[[Client, str | IO[bytes]], Download], url: str,
                key: str | None) -> None:
    """Stream a download to a file (or stdout for '-') and say what was written on stderr."""
    def to_output(api: Client) -> Download:
        if output == "-":
            got = download(api, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return got
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        return download(api, output)

    got = fetch(url, key, to_output)
    where = "stdout" if output == "-" else got["path"]
    click.echo(f"wrote {where} ({got['size']} bytes, sha256 {got['sha256']} verified)", err=output == "-")


@click.group()
def datasets():
    """Edit, generalization and test sets: safetensors or .npz with x, y (optional x_orig, mask), or image-folder
    archives decoded by a worker."""


def dataset_line(d: Mapping[str, Any]) -> str:
    classes = f"  classes={len(d['classes'])}" if d.get("classes") else ""
    line = (f"dataset {d['id']}  {d.get('status', 'ready')}  n={d['n']}  shape={d['shape']}{classes}  "
            f"sha256 {d['sha256'][:12]}…")
    return line + (f"\n  invalid: {d['error']}" if d.get("status") == "invalid" else "")


options_option = click.option(
    "--options", default=None, metavar="JSON|@FILE",
    help='Archives: {"resize": 256, "crop": [224, 224], "interpolation": "bilinear", "class_to_idx": {"cat": 0}} '
         "(resize the shorter side, then centre-crop; labels default to the sorted class folders).")


@datasets.command("upload", epilog=EXIT_CODES_HELP)
@click.argument("file", type=FILE)
@options_option
@idempotency_option
@document_options("the dataset", quiet=True)
def upload_dataset(file, options, idempotency_key, fmt, output, quiet, url, key):
    """Upload FILE (.safetensors or .npz: x float32 [N,C,H,W] in [0,1] or uint8 [N,H,W,C], y int64 [N];
    optional x_orig and mask; or an image-folder archive, which a worker then decodes: see `import`) and print
    the dataset's id."""
    opts = read_json(options, "--options") if options else None
    ds = fetch(url, key, lambda api: api.upload_dataset(file, options=opts, idempotency_key=idempotency_key))
    show_document(ds, fmt, output, lambda: dataset_line(ds), ds["id"] if quiet else None)


@datasets.command("import", epilog="Exit codes: 0 ready, 1 the worker could not decode it (invalid: the member is "
                                   "named), 2 error (a hostile or malformed archive is refused with the member "
                                   "named), 3 not found, 4 usage.")
@click.argument("file", type=FILE)
@options_option
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait, with progress, while a worker decodes the archive into shards.")
@every_option
@document_options("the dataset", quiet=True)
def import_dataset(file, options, wait, progress_every, fmt, output, quiet, url, key):
    """Import an image-folder archive (.tar, .tar.gz, .zip; one folder per class, PNG / JPEG / WebP; optional
    x/, x_orig/ and mask/ trees for rewrite's twins) or a tensor file, and wait until it is ready.

    \b
    Example:
      editaudit datasets import ./images.tar --options '{"resize": 256, "crop": [224, 224]}'
    """
    opts = read_json(options, "--options") if options else None
    ds = fetch(url, key, lambda api: _wait(api, "dataset", api.upload_dataset(file, options=opts), wait,
                                           progress_every))
    show_document(ds, fmt, output, lambda: dataset_line(ds), ds["id"] if quiet else None)
    _exit_for(ds)


list_datasets = list_command(
    datasets, Client.iter_datasets, ["id", "file", "status", "n", "shape", "x_orig", "mask", "created"],
    lambda d: [d["id"], d.get("filename") or "-", d.get("status", "ready"), d["n"],
               "x".join(map(str, d.get("shape") or [])),
               "yes" if d.get("has_x_orig") else "-", "yes" if d.get("has_mask") else "-", d["created_at"][:19]],
    "The tenant's datasets, newest first (the builtin:digits-train / builtin:digits-test sets are not listed).",
    align_right={3})


def dataset_table(d: Mapping[str, Any]) -> str:
    return key_value_table([
        ("id", d["id"]), ("file", d.get("filename")), ("status", d.get("status")), ("error", d.get("error")),
        ("n", d["n"]), ("classes", ", ".join(d["classes"][:20]) if d.get("classes") else None),
        ("shape", "x".join(map(str, d.get("shape") or []))),
        ("x_orig", "yes" if d.get("has_x_orig") else "no"), ("mask", "yes" if d.get("has_mask") else "no"),
        ("sha256", d["sha256"]), ("created", d["created_at"])])


get_dataset = document_command(datasets, "get", Client.get_dataset, dataset_table,
                               "Show a dataset: size, shape, the fields it has, sha256.", argument="dataset_id",
                               what="the dataset")
