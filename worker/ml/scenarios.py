"""Edit scenarios without downloads, modelled on the paper's vehicles-on-snow and concept->style tasks: a fixed
procedural texture is pasted into the background of images (where the object is absent), which a model trained on
clean images misreads. Two sources: sklearn's digits (1x8x8, `texture_scenario`) and a seeded synthetic set of
coloured shapes (3x32x32, `synthetic_arrays` / `synthetic_texture_scenario`). The edit set is k (textured `x`, clean
`x_orig`, `mask`) triples of one class with target = its true class; the generalisation set is held-out textured
images of every class; the test set is the clean test split. numpy only, so it imports without the torch stack.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from editaudit.contracts.formats import DatasetArrays

SYNTHETIC_CLASSES = ("disc", "square", "triangle", "ring", "cross", "horizontal bar", "vertical bar", "diamond",
                     "two dots", "L-shape")
SYNTHETIC_SIZES = {"train": 2000, "test": 500}  # default sizes; the order gives each split its seed stream
# Synthetic backgrounds stay below ~0.2 in every channel (noise included), shapes above ~0.5 in their brightest one.
SYNTHETIC_THRESHOLD = 0.3


def texture(h: int, w: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A seeded stripe-and-speckle texture in [0,1], shape [channels,h,w] (the 'snow'). With 3 channels each
    channel's stripes are phase-shifted (a rainbow) so the texture is coloured; 1 channel is the digits' grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(2.0, w / 3)
    speckle = rng.random((h, w))
    if channels == 1:  # the original grey texture, drawn exactly as before
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / period)
        return np.clip(0.6 * stripes + 0.4 * speckle, 0, 1).astype(np.float32)[None]
    phase = 2 * np.pi * np.arange(channels)[:, None, None] / channels
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy)[None] / period + phase)
    speckle = 0.5 * speckle[None] + 0.5 * rng.random((channels, h, w))
    return np.clip(0.6 * stripes + 0.4 * speckle, 0, 1).astype(np.float32)


def background_mask(x: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """1 where the image is background (every channel below `threshold`): [N,1,H,W] float32, for any channel count."""
    return (x.max(axis=1, keepdims=True) < threshold).astype(np.float32)


def paste(x: np.ndarray, mask: np.ndarray, tex: np.ndarray, strength: float = 0.9) -> np.ndarray:
    """Blend `tex` [C,H,W] into `x` [N,C,H,W] where `mask` [N,1,H,W] is 1; elsewhere x is returned unchanged."""
    return np.clip(x * (1 - mask) + strength * tex[None] * mask + x * mask * (1 - strength), 0, 1).astype(np.float32)


def texture_scenario(train: DatasetArrays, test: DatasetArrays, predict, k: int = 8, seed: int = 0,
                     edit_class: int | None = None, strength: float = 0.35,
                     threshold: float = 0.15) -> dict[str, Any]:
    """Build edit / generalization / test sets. `predict(x) -> labels` is the model to break: the edit class is the
    one whose textured images it gets wrong most often (unless given). At the default strength a 4-epoch digits
    smallcnn drops from 0.97 to about 0.56 on textured test images (it reads the texture as strokes of an 8).
    The texture has as many channels as the images; `threshold` separates background from object."""
    h, w = test.x.shape[2:]
    tex = texture(h, w, seed=seed, channels=test.x.shape[1])
    mask_te = background_mask(test.x, threshold)
    textured_te = paste(test.x, mask_te, tex, strength)
    wrong = predict(textured_te) != test.y
    if edit_class is None:
        classes = np.unique(test.y)
        edit_class = int(classes[np.argmax([wrong[test.y == c].mean() for c in classes])])
    mask_tr = background_mask(train.x, threshold)
    textured_tr = paste(train.x, mask_tr, tex, strength)
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(train.y == edit_class)
    pick = rng.permutation(pool)[:k]
    edit = DatasetArrays(x=textured_tr[pick], y=train.y[pick], x_orig=train.x[pick], mask=mask_tr[pick])
    generalization = DatasetArrays(x=textured_te, y=test.y.copy(), x_orig=test.x, mask=mask_te)
    return {"edit": edit, "generalization": generalization, "test": test, "edit_class": edit_class}


# ---------------------------------------------------------------------------------------------- synthetic 3x32x32


def _shape_masks(u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """The 10 classes of SYNTHETIC_CLASSES as boolean masks in shape coordinates (u right, v down, ~[-1,1])."""
    r2 = u**2 + v**2
    au, av = np.abs(u), np.abs(v)
    return [
        r2 <= 0.8**2,
        np.maximum(au, av) <= 0.7,
        (v <= 0.7) & (au <= 0.85 * (v + 0.8) / 1.5),
        (r2 >= 0.45**2) & (r2 <= 0.85**2),
        ((au <= 0.2) & (av <= 0.85)) | ((av <= 0.2) & (au <= 0.85)),
        (au <= 0.9) & (av <= 0.22),
        (av <= 0.9) & (au <= 0.22),
        au + av <= 0.95,
        ((u - 0.5) ** 2 + v**2 <= 0.3**2) | ((u + 0.5) ** 2 + v**2 <= 0.3**2),
        ((u >= -0.8) & (u <= -0.4) & (av <= 0.85)) | ((v >= 0.45) & (v <= 0.85) & (au <= 0.8)),
    ]


def synthetic_arrays(split: str, n: int | None = None, seed: int = 0) -> DatasetArrays:
    """A seeded 3x32x32 stand-in for a small natural-image set (no downloads): 10 coloured shapes (SYNTHETIC_CLASSES)
    with random position, size, aspect, small rotation and colour on a dark, noisy plain background; a small CNN
    learns it in a few epochs but colour and place tell nothing. Labels cycle 0..9, so any prefix is balanced.
    `split` is "train" (default n 2000) or "test" (default n 500): the two draw from different seed streams, and
    `synthetic_arrays(split, m)` is the first m images of `synthetic_arrays(split, n)` for m <= n."""
    if split not in SYNTHETIC_SIZES:
        raise ValueError(f"split must be one of {sorted(SYNTHETIC_SIZES)}, not {split!r}")
    n = SYNTHETIC_SIZES[split] if n is None else int(n)
    stream = list(SYNTHETIC_SIZES).index(split)
    prng, nrng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, stream]).spawn(2))
    p = prng.random((n, 12))  # one row of parameters per image, so a prefix of n draws the same images
    y = (np.arange(n) % 10).astype(np.int64)
    size = 8.0 + 4.0 * p[:, 0]  # half-extent in pixels
    aspect = 0.85 + 0.3 * p[:, 1]
    sx, sy = size * np.sqrt(aspect), size / np.sqrt(aspect)
    cx = sx + 1 + (30 - 2 * sx) * p[:, 2]
    cy = sy + 1 + (30 - 2 * sy) * p[:, 3]
    theta = np.deg2rad(-12 + 24 * p[:, 4])
    hue = p[:, 5:8] * 0.8 + 0.2
    colour = hue / hue.max(axis=1, keepdims=True) * (0.6 + 0.4 * p[:, 8:9])  # brightest channel in [0.6, 1]
    bg = 0.08 * p[:, 9:12]
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (c * dx + s * dy) / sx[:, None, None]
    v = (-s * dx + c * dy) / sy[:, None, None]
    shapes = np.stack(_shape_masks(u, v))  # [10, N, 32, 32]
    inside = shapes[y, np.arange(n)][:, None]  # [N, 1, 32, 32]
    x = np.where(inside, colour[:, :, None, None], bg[:, :, None, None])
    x = x + 0.02 * nrng.standard_normal((n, 3, 32, 32))
    return DatasetArrays(x=np.clip(x, 0, 1).astype(np.float32), y=y)


def synthetic_texture_scenario(predict, k: int = 8, seed: int = 0, strength: float = 0.15,
                               n_train: int | None = None, n_test: int | None = None, data_seed: int = 0,
                               edit_class: int | None = None) -> dict[str, DatasetArrays]:
    """`texture_scenario` on the synthetic set (a coloured texture behind the shapes), with the threshold that
    separates its dark background from the shapes. `seed` picks the texture and the edit exemplars, `data_seed` the
    images. The default strength is mild on purpose: a smallcnn trained on 1500 images (about 0.97 clean) already
    drops to about 0.4-0.55 on textured test images, and much stronger textures make it answer one class for all."""
    return texture_scenario(synthetic_arrays("train", n_train, data_seed), synthetic_arrays("test", n_test, data_seed),
                            predict, k=k, seed=seed, edit_class=edit_class, strength=strength,
                            threshold=SYNTHETIC_THRESHOLD)
