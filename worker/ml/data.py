"""Datasets as tensors: uploaded files (via the torch-free parser) and the built-in digits split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editaudit.contracts.datasets import BUILTIN_DATASETS
from editaudit.contracts.formats import DatasetArrays, parse_dataset


@dataclass
class TensorDataset:
    x: torch.Tensor  # float32 [N,C,H,W] in [0,1]
    y: torch.Tensor  # int64 [N]
    x_orig: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    identity: str | None = None  # what the data is (sha256, builtin@version) where known: caches key on it

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def from_arrays(cls, a: DatasetArrays) -> "TensorDataset":
        opt = lambda v: None if v is None else torch.from_numpy(np.ascontiguousarray(v))  # noqa: E731
        return cls(torch.from_numpy(a.x), torch.from_numpy(a.y), opt(a.x_orig), opt(a.mask))


def digits_arrays(split: str) -> DatasetArrays:
    """sklearn's bundled digits, scaled to [0,1]; sample i is in `test` when i % 4 == 0, else in `train`."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 4 == 0
    sel = test if split == "test" else ~test
    return DatasetArrays(x=np.ascontiguousarray(x[sel]), y=y[sel])


_BUILTINS = {"builtin:digits-train": lambda: digits_arrays("train"), "builtin:digits-test": lambda: digits_arrays("test")}
assert set(_BUILTINS) == set(BUILTIN_DATASETS)


def load_builtin(name: str) -> TensorDataset:
    return TensorDataset.from_arrays(_BUILTINS[name]())


def load_bytes(data: bytes, filename: str = "") -> TensorDataset:
    return TensorDataset.from_arrays(parse_dataset(data, filename))
