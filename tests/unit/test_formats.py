"""Upload parsing: safetensors headers, pickle refusal, dataset validation (no torch needed by the code under test)."""

import io
import pickle

import numpy as np
import pytest
import torch
from safetensors.numpy import save as np_save

from editaudit.contracts.formats import (
    DatasetArrays,
    FormatError,
    dataset_to_npz,
    looks_like_pickle,
    parse_dataset,
    read_safetensors_header,
)


def test_header_read_without_loading():
    data = np_save({"w": np.zeros((3, 4), np.float32), "b": np.ones(3, np.float32)})
    h = read_safetensors_header(data)
    assert h["w"].shape == (3, 4) and h["w"].dtype == "F32" and h["b"].shape == (3,)


def test_torch_save_is_refused_as_pickle(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with pytest.raises(FormatError) as e:
        read_safetensors_header(buf.getvalue())
    assert e.value.pickle and "pickle" in e.value.reason


def test_plain_pickle_is_refused_and_never_loaded():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    data = pickle.dumps(Boom(), protocol=4)
    assert looks_like_pickle(data)
    with pytest.raises(FormatError):
        read_safetensors_header(data)
    with pytest.raises(FormatError):
        parse_dataset(data, "x.safetensors")


def test_truncated_safetensors_is_rejected():
    data = np_save({"w": np.zeros((30, 4), np.float32)})
    with pytest.raises(FormatError, match="offsets|exceeds"):
        read_safetensors_header(data[:-8])


def test_dataset_uint8_nhwc_is_converted():
    x = np.full((2, 8, 8, 3), 255, np.uint8)
    ds = parse_dataset(np_save({"x": x, "y": np.array([0, 1], np.int64)}))
    assert ds.x.shape == (2, 3, 8, 8) and ds.x.dtype == np.float32 and ds.x.max() == 1.0


@pytest.mark.parametrize("arrays,match", [
    ({"y": np.zeros(2, np.int64)}, "missing array 'x'"),
    ({"x": np.full((2, 1, 4, 4), 2.0, np.float32), "y": np.zeros(2, np.int64)}, r"\[0,1\]"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "3 labels for 2 images"),
    ({"x": np.zeros((0, 1, 4, 4), np.float32), "y": np.zeros(0, np.int64)}, "empty"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(2, np.int64),
      "mask": np.zeros((2, 4, 4), np.float32)}, "mask must be"),
])
def test_dataset_errors_name_the_problem(arrays, match):
    with pytest.raises(FormatError, match=match):
        parse_dataset(np_save(arrays))


def test_npz_roundtrip_with_orig_and_mask():
    x = np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32)
    ds = DatasetArrays(x=x, y=np.array([1, 2, 3]), x_orig=x, mask=np.ones((3, 1, 4, 4), np.float32))
    back = parse_dataset(dataset_to_npz(ds), "d.npz")
    assert np.array_equal(back.x, x) and back.x_orig is not None and back.mask.shape == (3, 1, 4, 4)


def test_npz_with_object_array_is_refused():
    buf = io.BytesIO()
    np.savez(buf, x=np.array([object()], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(FormatError, match="unpickling"):
        parse_dataset(buf.getvalue(), "d.npz")


def test_npz_members_must_be_arrays_and_not_explode():
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x", b"raw bytes")
        zf.writestr("y.npy", b"")
    with pytest.raises(FormatError, match=".npy arrays"):
        parse_dataset(buf.getvalue(), "d.npz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("x.npy")
        zf.writestr(info, b"")
    with pytest.raises(FormatError, match="expands"):
        parse_dataset(buf.getvalue(), "d.npz", max_expanded=-1)
