"""A small version of Brown et al.'s study with the service's defaults: every edit method on the digits texture
scenario (a smallcnn trained here; 8 textured digits of one class with their clean twins), audited the way the job
audits (the same hold-out of the test split for gradient methods' locality term, PGD-10 L-inf, all 15 corruptions
at severities 1/3/5), for two seeds (model training, scenario draw and edit all seeded). Prints one row per method
and seed plus the mean of the two; not a test.

    python bench/study.py [--seeds 0 1] [--layer fc1] [--device auto]

Deltas are edited - original on the same images (the test split's rest, where a hold-out applies: `n test`).
"""

from __future__ import annotations

import argparse
import copy

import torch

from editaudit.contracts import metrics as M
from editaudit.contracts.edits import parse_hyperparams
from editaudit.core.tables import render
from editaudit.worker.jobs.run import hold_out_for_edit
from editaudit.worker.ml.archs import build_inner, create_model
from editaudit.worker.ml.audit.runner import run_audit
from editaudit.worker.ml.data import TensorDataset, digits_arrays
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.scenarios import texture_scenario
from editaudit.worker.ml.train import train_classifier

SPEC = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8]}
AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 10, "step_size": 0.0125}],
         "corruptions": {"names": "all", "severities": [1, 3, 5]}}
COLUMNS = {"edit acc": "edit.accuracy", "gen. Δ": "generalization.accuracy", "clean Δ": "test.accuracy",
           "PGD Δ": "test.adv.pgd.accuracy", "corruption Δ": M.corruption_accuracy("test")}


def methods(layer: str) -> list[tuple[str, str, list[str], dict]]:
    return [("finetune", "finetune", [], {}), ("finetune_layer", "finetune_layer", [layer], {}),
            ("low_rank r1", "low_rank", [layer], {"rank": 1}), ("rewrite r1", "rewrite", [layer], {}),
            ("1-LI (finetune_layer)", "interpolate", [layer], {}), ("enn", "enn", [layer], {})]


def case(seed: int):
    tr, te = digits_arrays("train"), digits_arrays("test")
    torch.manual_seed(seed)
    net = build_inner(SPEC["arch"], 10, SPEC["input_shape"])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=4)
    model = create_model(SPEC)
    model.net.load_state_dict(net.state_dict())
    model.eval()

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = texture_scenario(tr, te, predict, k=8, seed=seed)
    return model, {k: TensorDataset.from_arrays(sc[k]) for k in ("edit", "generalization", "test")}


def run_one(model, splits: dict, method: str, layers: list[str], hp: dict, seed: int, device) -> dict:
    """As the job does: validate, hold out what the params want, edit, audit."""
    params = parse_hyperparams(method, {**hp, "seed": seed})
    splits = dict(splits)
    held = hold_out_for_edit(params, splits)
    reference = {k: v for k, v in splits.items() if k != "edit"}
    if held:
        reference.update(dict.fromkeys(params.held_out_roles(), held[0]))
    edited = run_edit(method, copy.deepcopy(model), splits["edit"], layers, params, device, reference=reference)
    audit = run_audit(model, edited.model, splits, {**AUDIT, "seed": seed}, device).result
    base = audit.metrics.baseline
    row = {"n test": audit.samples["test"].n, "edit acc": audit.metrics.candidate["edit.accuracy"],
           "top class": audit.metrics.candidate.get(M.top_class_share("test")),
           "before": f"{base['test.accuracy']:.2f}/{base['test.adv.pgd.accuracy']:.2f}/"
                     f"{base[M.corruption_accuracy('test')]:.2f}"}
    for col, name in COLUMNS.items():
        if col != "edit acc":
            row[col] = audit.deltas[name].value
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--layer", default="fc1")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    keys = ["edit acc", "gen. Δ", "clean Δ", "PGD Δ", "corruption Δ", "top class"]
    rows, by_method = [], {}
    for seed in args.seeds:
        model, splits = case(seed)
        for label, method, layers, hp in methods(args.layer):
            r = run_one(model, splits, method, layers, hp, seed, device)
            by_method.setdefault(label, []).append(r)
            rows.append([label, str(seed), str(r["n test"]), r["before"],
                         *(f"{r[k]:+.3f}" if "Δ" in k else f"{r[k]:.3f}" for k in keys)])
            print(" | ".join(rows[-1]), flush=True)
    for label, rs in by_method.items():
        mean = {k: sum(r[k] for r in rs) / len(rs) for k in keys}
        rows.append([label, "mean", "", "", *(f"{mean[k]:+.3f}" if "Δ" in k else f"{mean[k]:.3f}" for k in keys)])
    print(f"\nedit methods with default hyperparameters on the digits texture scenario (layer {args.layer}), "
          f"seeds {args.seeds}, device {device}, torch {torch.__version__}")
    print(render(["method", "seed", "n test", "before: clean/PGD/corr.", *keys], rows,
                 align_right=set(range(2, 4 + len(keys)))))


if __name__ == "__main__":
    main()
