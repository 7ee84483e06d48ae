"""Image-folder archives made in tests (Pillow): class-coloured images, optionally with x_orig / mask twins."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def image_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def class_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A class's colour with noise and a random bright square: classes a small network can tell apart."""
    img = np.clip(np.array(COLOURS[label % len(COLOURS)], np.float32) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    y, x = rng.integers(0, size // 2, 2)
    img[y: y + size // 4, x: x + size // 4] = 255
    return img.astype(np.uint8)


def folder_members(classes: list[str], per_class: int, size: int = 32, seed: int = 0, fmt: str = "PNG",
                   twins: bool = False) -> dict[str, bytes]:
    """{member path: bytes} in the ImageFolder layout; with `twins`, x/ x_orig/ mask/ trees where x is x_orig with
    a textured patch pasted where the mask is."""
    rng = np.random.default_rng(seed)
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
    out: dict[str, bytes] = {}
    for label, name in enumerate(classes):
        for i in range(per_class):
            orig = class_image(label, size, rng)
            if not twins:
                out[f"{name}/{i:04d}.{ext}"] = image_bytes(orig, fmt)
                continue
            mask = np.zeros((size, size), np.uint8)
            mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
            stripes = ((np.arange(size)[:, None] + np.arange(size)[None, :]) % 6 < 3).astype(np.uint8) * 255
            x = orig.copy()
            x[mask > 0] = np.stack([stripes] * 3, -1)[mask > 0]
            out[f"x/{name}/{i:04d}.png"] = image_bytes(x)
            out[f"x_orig/{name}/{i:04d}.png"] = image_bytes(orig)
            out[f"mask/{name}/{i:04d}.png"] = image_bytes(mask)
    return out


def tar_bytes(members: dict[str, bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()
