"""The audit config of `POST /edits` (`audit`): which attacks and corruptions, how many samples, the seed."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from editaudit.contracts.attacks import ATTACK_PARAMS, AttackSpec
from editaudit.contracts.registry import Seed, Strict

# The 15 ImageNet-C corruption types (Hendrycks & Dietterich 2019) -> their family; the worker's corruptions/
# registry implements each name (a parity test keeps the two equal). A new corruption adds its name here.
CORRUPTIONS: dict[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
}
CORRUPTION_NAMES = tuple(CORRUPTIONS)


def register_corruption_name(name: str, family: str) -> None:
    """Make a corruption name valid in `audit.corruptions.names` (the worker registers its implementation)."""
    CORRUPTIONS.setdefault(name, family)


def _known_corruption(name: str) -> str:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {sorted(CORRUPTIONS)}")
    return name


CorruptionName = Annotated[str, AfterValidator(_known_corruption)]


class CorruptionConfig(Strict):
    names: list[CorruptionName] | Literal["all"] = "all"
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)

    @property
    def resolved_names(self) -> list[str]:
        return list(CORRUPTIONS) if self.names == "all" else list(dict.fromkeys(self.names))


class AuditConfig(Strict):
    attacks: list[AttackSpec] = Field(default_factory=list, max_length=16)
    corruptions: CorruptionConfig | None = None
    max_samples: int | None = Field(None, ge=1, description="per split, class-stratified, seeded")
    seed: Seed = 0
    batch_size: int | None = Field(None, ge=1, le=65536, description="the unit of the audit's random draws; "
                                   "unset: chosen by the worker from the input size and free memory (recorded in "
                                   "the result's sections.inputs.batch_size)")
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile on CUDA (auto: large audits)")
    fold_bn: bool = Field(True, description="fold eval-mode BatchNorm into the convolution before it, in the audited "
                                            "copies of both models (the same function, ~1.1x faster attacks)")

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [a.id for a in self.attacks]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"attack ids must be unique; repeated: {sorted(dup)}")
        for a in self.attacks:  # `test.adv.pgd.accuracy` must not be an FGSM's number
            if a.id in ATTACK_PARAMS and a.id != a.name:
                raise ValueError(f"attack id {a.id!r} is the name of another attack; this one is a {a.name!r}")
        if self.corruptions is not None and not self.corruptions.resolved_names:
            raise ValueError(f"corruptions.names is empty; valid names: {sorted(CORRUPTIONS)}")
        return self
