"""The bundled scenarios as ready cases: a baseline trained here to convergence (its train/test curve kept), and the
edit / generalization / test sets of a texture scenario (worker/ml/scenarios.py). Benches and tests that measure
editing itself start here, so a finding is about the edit, not about an under-trained baseline whose edit steps act
as more training.

    case = build_case("digits", seed=0)   # case.model, case.splits, case.edit_class, case.layer, case.curve
    run = run_as_job(case.model, case.splits, "rewrite", ["fc1"], {}, seed=0, audit={...})  # edit + audit

Registered by name in SCENARIOS: `digits` (8x8 digits, texture at the demo's strength), `synthetic` (3x32x32
coloured shapes), `stamp` (digits at 16x16 with the texture at full strength: an edit whose first loss is large),
`resnet18` (torchvision ResNet-18 on the shapes at 3x64x64: for a GPU).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.edits import EditParams, parse_hyperparams
from editaudit.contracts.formats import DatasetArrays
from editaudit.worker.ml.archs import build_inner, create_model
from editaudit.worker.ml.archs.registry import Normalized
from editaudit.worker.ml.audit.outcomes import Evaluation
from editaudit.worker.ml.audit.runner import AuditRun, run_audit
from editaudit.worker.ml.data import TensorDataset, digits_arrays, hold_out_for_edit, load_builtin
from editaudit.worker.ml.edits import EditResult, edit_notes, run_edit
from editaudit.worker.ml.scenarios import SYNTHETIC_THRESHOLD, synthetic_arrays, texture_scenario
from editaudit.worker.ml.train import accuracy, train_classifier


@dataclass
class Case:
    name: str
    seed: int
    spec: dict
    model: Normalized
    splits: dict[str, TensorDataset]  # edit, generalization, test
    edit_class: int
    layer: str  # the single layer the layer methods edit
    curve: list[dict] = field(default_factory=list)  # per epoch: train and test accuracy of the baseline


@dataclass(frozen=True)
class Scenario:
    """How to make one: the data (train, test), the texture's strength and threshold, the training schedule."""

    data: Callable[[], tuple[DatasetArrays, DatasetArrays]]
    epochs: int
    settle_epochs: int
    strength: float
    threshold: float = 0.15
    layer: str = "fc1"
    lr: float = 3e-3
    arch: str = "editaudit/smallcnn"
    describe: str = "editaudit/smallcnn on sklearn's 8×8 digits"
    study_layers: tuple[str, ...] = ("features.3", "features.7", "fc1")  # bench/study.py's default layers


def _upsample(d: DatasetArrays, size: int) -> DatasetArrays:
    x = F.interpolate(torch.from_numpy(d.x), size=(size, size), mode="bilinear", align_corners=False)
    return DatasetArrays(x=x.clamp(0, 1).numpy(), y=d.y)


SCENARIOS: dict[str, Scenario] = {
    "digits": Scenario(lambda: (digits_arrays("train"), digits_arrays("test")), epochs=12, settle_epochs=1,
                       strength=0.35),
    "synthetic": Scenario(lambda: (synthetic_arrays("train", 1500), synthetic_arrays("test", 500)), epochs=10,
                          settle_epochs=1, strength=0.15, threshold=SYNTHETIC_THRESHOLD),
    "stamp": Scenario(lambda: (_upsample(digits_arrays("train"), 16), _upsample(digits_arrays("test"), 16)),
                      epochs=12, settle_epochs=1, strength=0.9),
    # the larger one, for a GPU: torchvision's ResNet-18 (random init) on the coloured shapes at 64x64
    "resnet18": Scenario(lambda: (_upsample(synthetic_arrays("train", 2000), 64),
                                  _upsample(synthetic_arrays("test", 500), 64)),
                         epochs=12, settle_epochs=1, strength=0.15, threshold=SYNTHETIC_THRESHOLD, layer="fc",
                         lr=1e-3, arch="torchvision/resnet18",
                         describe="torchvision/resnet18 on the bundled coloured shapes at 3×64×64",
                         study_layers=("layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2", "fc")),
}


def train_baseline(sc: Scenario, train: DatasetArrays, test: DatasetArrays, seed: int,
                   device: str = "cpu") -> tuple[torch.nn.Module, list[dict]]:
    """The scenario's architecture (`sc.arch`) trained on `device` for its epochs (then its settle epochs at lr/10),
    seeded; the curve holds train and test accuracy after every epoch."""
    xt, yt = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    xe, ye = torch.from_numpy(test.x).to(device), torch.from_numpy(test.y).to(device)
    torch.manual_seed(seed)
    net = build_inner(sc.arch, 10, list(train.x.shape[1:])).to(device)
    curve: list[dict] = []

    def record(epoch: int, lr: float) -> None:
        curve.append({"epoch": epoch, "lr": lr, "train_accuracy": accuracy(net, xt, yt),
                      "test_accuracy": accuracy(net, xe, ye)})

    train_classifier(net, xt, yt, epochs=sc.epochs, lr=sc.lr, seed=seed, settle_epochs=sc.settle_epochs,
                     on_epoch=record)
    return net, curve


def build_case(name: str, seed: int = 0, device: str = "cpu") -> Case:
    """The scenario `name` at `seed` (the baseline's initialisation and training order, the texture and the edit
    exemplars)."""
    sc = SCENARIOS[name]
    train, test = sc.data()
    net, curve = train_baseline(sc, train, test, seed, device)
    spec = {"arch": sc.arch, "num_classes": 10, "input_shape": list(train.x.shape[1:])}
    model = create_model(spec)
    model.net.load_state_dict(net.state_dict())
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    made = texture_scenario(train, test, predict, k=8, seed=seed, strength=sc.strength, threshold=sc.threshold)
    splits = {k: TensorDataset.from_arrays(made[k]) for k in ("edit", "generalization", "test")}
    return Case(name, seed, spec, model, splits, int(made["edit_class"]), sc.layer, curve)


# --- one edit and its audit, as the job runs them (worker/jobs/run.py, without the database, store and shards) ------


@dataclass
class JobRun:
    """What `run_as_job` did: the validated params, the edit, the splits as the audit saw them (`test` is the rest
    when part of it was held out for the edit), the held-out part, the audit (None when not asked for) and the
    seconds each took."""

    params: EditParams
    edited: EditResult
    splits: dict[str, TensorDataset]
    held_out: TensorDataset | None
    audit: AuditRun | None
    durations_s: dict[str, float]


def run_as_job(model: Normalized, splits: Mapping[str, TensorDataset], method: str, layers: list[str],
               hyperparams: Mapping, seed: int | None = None, audit: Mapping | AuditConfig | None = None,
               baseline_evals: dict | None = None, device: str = "cpu") -> JobRun:
    """One edit of `model` (not changed) and, when `audit` is given, its audit, the way the job runs them: the
    hyperparameters validated (with `seed` when given), the global RNG seeded with the edit's seed, the locality set
    held out of the test split when the edit wants one, the reference sets (every split but `edit`, the held-out part,
    builtin datasets a field names), the edit, then the audit of the rest (seeded by `seed` unless the config sets
    one) with the method's sections (1-LI's alpha curve) and the edit's notes added. `baseline_evals`, a dict the
    caller keeps for one model and one `splits`, caches the baseline's evaluation per audited inputs and config as
    the job's baseline cache does. Linked edits (`base_edit_id`) and uploaded datasets by id are the job's alone."""
    params = parse_hyperparams(method, {**hyperparams, **({} if seed is None else {"seed": seed})})
    if params.edit_refs():
        raise ValueError(f"{sorted(params.edit_refs())} name stored edits: run those through the service")
    t0 = time.perf_counter()
    torch.manual_seed(params.seed)
    audited = dict(splits)
    held = (hold_out_for_edit(params, audited) or (None,))[0]
    reference = {k: v for k, v in audited.items() if k != "edit"}
    for role, (path, ref, _) in params.datasets().items():
        if not ref.startswith("builtin:"):
            raise ValueError(f"{path} = {ref!r}: only builtin datasets are loaded here")
        reference[role] = load_builtin(ref)
    if held is not None:
        reference.update(dict.fromkeys(params.held_out_roles(), held))
    edited = run_edit(method, copy.deepcopy(model), audited["edit"], list(layers), params, device,
                      reference=reference)
    durations = {"edit": time.perf_counter() - t0}
    run = None
    if audit is not None:
        cfg = audit.model_dump(mode="json") if isinstance(audit, AuditConfig) else dict(audit)
        if seed is not None:
            cfg.setdefault("seed", seed)
        key = (id(model), json.dumps(cfg, sort_keys=True),
               tuple((k, id(splits[k]), held is not None and k == "test") for k in sorted(audited)))
        cached: Evaluation | None = (baseline_evals or {}).get(key)
        t1 = time.perf_counter()
        run = run_audit(model, edited.model, audited, cfg, device, baseline_eval=cached)
        durations["audit"] = time.perf_counter() - t1
        if baseline_evals is not None:
            baseline_evals[key] = run.baseline
        result = run.result
        result.durations_s |= durations
        result.add_sections(edited.audit, params.audit_sections)
        result.notes[:0] = edit_notes(edited.info)
    return JobRun(params, edited, audited, held, run, durations)
