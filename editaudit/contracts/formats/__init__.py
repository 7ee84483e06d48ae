"""Torch-free readers for the files users upload: safetensors checkpoints and datasets (safetensors or .npz).

Shared by the API (validation before anything is stored) and the worker (loading). Every reader takes a path, an
open binary file or bytes, and reads in bounded slices: an upload is never held in memory whole to be checked.
Image-folder archives (.tar, .tar.gz, .zip, from an open file) are checked from their members' headers, never decoded.
Nothing here ever unpickles: safetensors is a JSON header plus raw buffers, and `.npz` members are read as `.npy`
headers first, with `allow_pickle=False`.
"""

from editaudit.contracts.formats.archive import (
    ArchiveLimits,
    ArchiveSummary,
    Member,
    is_archive_name,
    iter_archive,
    scan_archive,
)
from editaudit.contracts.formats.dataset import (
    MAX_NPZ_EXPANDED_BYTES,
    DatasetArrays,
    DatasetSummary,
    dataset_to_npz,
    parse_dataset,
    scan_dataset,
)
from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.safetensors_file import (
    MAX_HEADER_BYTES,
    MAX_HEADER_DEPTH,
    SAFETENSORS_DTYPES,
    TensorInfo,
    nonfinite_tensors,
    read_safetensors_header,
)
from editaudit.contracts.formats.source import CHUNK_BYTES, Source, looks_like_pickle

__all__ = [
    "CHUNK_BYTES", "MAX_HEADER_BYTES", "MAX_HEADER_DEPTH", "MAX_NPZ_EXPANDED_BYTES", "SAFETENSORS_DTYPES",
    "ArchiveLimits", "ArchiveSummary", "DatasetArrays", "DatasetSummary", "FormatError", "Member", "Source",
    "TensorInfo", "dataset_to_npz", "is_archive_name", "iter_archive", "looks_like_pickle", "nonfinite_tensors",
    "parse_dataset", "read_safetensors_header", "scan_archive", "scan_dataset",
]
