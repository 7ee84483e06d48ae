"""Fidelity to the reference ImageNet-C code without the reference installed: on a fixed seeded batch of 224-px
images, each corruption's mean |corrupted - clean| at each severity must stay within the fidelity tolerance of the
reference's figure on the same batch (REFERENCE_MAC, measured with the `imagecorruptions` package by
`python bench/corruptions_fidelity.py --pin`; rerun it if the batch changes). Our side is seeded, so the test is
deterministic; the reference's figures are one seeded draw, which the tolerance covers.
"""

import pytest
import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions import CORRUPTION_NAMES, corrupt

MAC_TOL = 0.10  # relative, as bench/corruptions_fidelity.py

# imagecorruptions 1.1.2, `python bench/corruptions_fidelity.py --pin` (seed 0)
REFERENCE_MAC = {
    'gaussian_noise': [0.0632, 0.0938, 0.1371, 0.1885, 0.2499],
    'shot_noise': [0.0696, 0.106, 0.1491, 0.2191, 0.2717],
    'impulse_noise': [0.0151, 0.0299, 0.0448, 0.085, 0.1352],
    'defocus_blur': [0.0237, 0.0241, 0.0251, 0.0265, 0.0289],
    'glass_blur': [0.027, 0.0259, 0.0372, 0.0334, 0.0352],
    'motion_blur': [0.0278, 0.0385, 0.0543, 0.0722, 0.0845],
    'zoom_blur': [0.0394, 0.0497, 0.0588, 0.0678, 0.078],
    'snow': [0.1708, 0.2791, 0.2756, 0.3299, 0.3935],
    'frost': [0.2489, 0.2836, 0.301, 0.2834, 0.2928],
    'fog': [0.131, 0.1456, 0.1612, 0.1642, 0.1728],
    'brightness': [0.0714, 0.1383, 0.1907, 0.2255, 0.243],
    'contrast': [0.1014, 0.1183, 0.1352, 0.1521, 0.1605],
    'elastic_transform': [0.0282, 0.0311, 0.0345, 0.037, 0.0404],
    'pixelate': [0.0195, 0.0217, 0.0237, 0.0259, 0.027],
    'jpeg_compression': [0.0272, 0.0292, 0.0308, 0.0359, 0.0432],
}


def fixed_batch(n: int = 16, size: int = 224) -> torch.Tensor:
    """Smooth random colour fields with grain, as 8-bit values: what both sides see (the reference takes uint8)."""
    g = torch.Generator().manual_seed(2024)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return torch.floor(x * 255) / 255


def mean_abs_change(name: str, severity: int, x: torch.Tensor) -> float:
    """Ours, compared as the 8-bit image the reference returns (np.uint8 truncation)."""
    y = torch.floor(corrupt(x, name, severity, torch.Generator().manual_seed(0)) * 255) / 255
    return float((y - x).abs().mean())


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return fixed_batch()


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_mean_abs_change_matches_the_reference(name, batch):
    ours = [mean_abs_change(name, s, batch) for s in range(1, 6)]
    ratios = [o / r for o, r in zip(ours, REFERENCE_MAC[name], strict=True)]
    assert all(abs(r - 1) <= MAC_TOL for r in ratios), [round(r, 3) for r in ratios]
