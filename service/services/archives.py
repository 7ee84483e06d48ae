"""Image-folder archive uploads on the API side: the import options, and what a row records before the ingest job
has decoded anything (counts and classes from the members, the shape the options will give). Nothing here decodes
an image: editaudit.contracts.formats.archive reads headers only."""

from __future__ import annotations

import json
from typing import BinaryIO

from pydantic import ValidationError

from editaudit.contracts.formats import ArchiveSummary, is_archive_name
from editaudit.contracts.formats.archive import sniff_container
from editaudit.contracts.formats.shards import IngestOptions, resized_size
from editaudit.service.errors import Problem, validation_problem


def is_archive(f: BinaryIO, filename: str) -> bool:
    """By name, or by content (a gzip stream, or a tar header's `ustar` at byte 257); a zip named .npz is a
    tensor file."""
    if filename.lower().endswith(".npz"):
        return False
    if is_archive_name(filename):
        return True
    f.seek(0)
    head = f.read(512)
    f.seek(0)
    return sniff_container(head) in ("tar", "tar.gz")  # an unnamed zip stays a tensor file (.npz) by content


def archive_suffix(container: str) -> str:
    return {"tar": ".tar", "tar.gz": ".tar.gz", "zip": ".zip"}[container]


def parse_options(raw: str | None) -> IngestOptions:
    if raw is None:
        return IngestOptions()
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise Problem(422, f"options is not valid JSON: {e}", field="options") from None
    try:
        return IngestOptions.model_validate(obj)
    except ValidationError as e:
        raise validation_problem(e, "options") from None


def archive_facts(summary: ArchiveSummary, opts: IngestOptions, max_pixels: int) -> dict:
    """The row's n, shape, label_max, classes and twins as the members and options decide them (shape is final
    unless a resize without a crop meets images of mixed aspect; the ingest job writes the final one)."""
    if opts.class_to_idx is not None:
        unmapped = [c for c in summary.classes if c not in opts.class_to_idx]
        if unmapped:
            raise Problem(422, f"class_to_idx has no label for the class folders {unmapped[:10]}",
                          field="options.class_to_idx")
        label_max = max(opts.class_to_idx[c] for c in summary.classes)
    else:
        label_max = len(summary.classes) - 1
    size = list(summary.size) if summary.size is not None else None
    if opts.resize is not None and size is not None:
        w, h = resized_size(size[1], size[0], opts.resize)  # as the worker's decoder will compute it
        if w * h > max_pixels:
            raise Problem(422, f"resizing the {size[0]}x{size[1]} images to a shorter side of {opts.resize} gives "
                               f"{h}x{w}, more than the {max_pixels} pixels an image may have", field="options.resize")
        size = [h, w]
    if opts.crop is not None:
        if size is not None and any(c > d for c, d in zip(opts.crop, size, strict=True)):
            raise Problem(422, f"crop {opts.crop} is larger than the images ({size} after resize)",
                          field="options.crop")
        size = list(opts.crop)
    if size is None:
        raise Problem(422, "the images have mixed sizes and a resize without a crop keeps them mixed; add a crop",
                      field="options.crop")
    return {"n": summary.n, "shape": [summary.channels, *size], "label_max": label_max,
            "classes": summary.classes, "has_x_orig": summary.has_x_orig, "has_mask": summary.has_mask}
