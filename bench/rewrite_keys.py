"""rewrite's key convention by measurement: `keys: patch` against `keys: pixel` at rank 1 and 4, on the synthetic
3x32x32 texture scenario (strength 0.5, bench/edits.py's resnet case) with two ResNets trained here per seed: a
torchvision resnet18 (about 25 s on one CPU thread) and a tiny one of torchvision's BasicBlocks (16 and 32 channels,
about 5 s). Layers: the convs that end a residual block, inner convs (conv1 of a basic block: its output reaches the
block's add through bn1 -> ReLU -> conv2 -> bn2, while the skip carries the block's input past it) and the final
Linear. Prints tables; not a test.

    python bench/rewrite_keys.py [--archs resnet18 tiny] [--seeds 0 1 2] [--ranks 1 4] [--threads 1]

Table 1, per layer, keys and rank: the edit exemplars fixed (k of 8, per seed), and the mean change of accuracy on
the textured test images (generalisation) and on the clean test images; "(auto)" marks what the default picks.
Table 2 says why inner convs are weak: the exemplars fixed when the value rewrite matches were reached exactly (an
oracle that replaces the matched node's value on x by its value on x_orig: the layer's output for an inner conv, the
block's output for a block-ending conv), and the share of the block output's change (x against x_orig, on the mask)
that the skip path carries past the layer.
A seed draws the model's initialisation and training order, the texture and the 8 exemplars.
"""

from __future__ import annotations

import argparse
import copy
import time
from statistics import mean

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from editaudit.core.tables import render
from editaudit.worker.ml.archs import build_inner, create_model
from editaudit.worker.ml.archs.registry import Normalized
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.scenarios import synthetic_arrays, synthetic_texture_scenario
from editaudit.worker.ml.train import train_classifier

SPEC = {"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32]}
# layer -> role; resnet18's layer2 maps are 4x4 at a 32x32 input, layer3 2x2, layer4 1x1
RESNET18 = {"layer2.1.conv2": "block end", "layer3.0.conv2": "block end", "layer3.1.conv2": "block end",
            "layer3.0.downsample.0": "block end", "layer4.1.conv2": "block end",
            "layer2.1.conv1": "inner", "layer3.0.conv1": "inner", "layer3.1.conv1": "inner",
            "layer4.1.conv1": "inner", "fc": "linear"}
# the tiny ResNet's layer1 maps are 16x16, layer2 8x8
TINY = {"layer1.0.conv2": "block end", "layer2.0.conv2": "block end", "layer2.1.conv2": "block end",
        "layer2.0.downsample.0": "block end", "layer1.0.conv1": "inner", "layer2.0.conv1": "inner",
        "layer2.1.conv1": "inner", "fc": "linear"}


class TinyResNet(nn.Module):
    """torchvision's BasicBlock at 16 and 32 channels: a stride-2 stem, one block, then two at stride 2, pool, fc."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        w = width
        self.conv1, self.bn1 = nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(w, 2 * w, 1, 2, bias=False), nn.BatchNorm2d(2 * w))
        self.layer1 = nn.Sequential(BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2, down), BasicBlock(2 * w, 2 * w))
        self.fc = nn.Linear(2 * w, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def case(arch: str, seed: int):
    """The network trained on synthetic images (init and order from `seed`) and its texture scenario (texture and
    exemplars from `seed`): resnet18 on 1500 images, 3 + 1 epochs (bench/edits.py's case); the tiny ResNet on 1000."""
    n = 1500 if arch == "resnet18" else 1000
    tr = synthetic_arrays("train", n)
    torch.manual_seed(seed)
    net = build_inner(SPEC["arch"], 10, SPEC["input_shape"]) if arch == "resnet18" else TinyResNet()
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=3, batch_size=32, settle_epochs=1,
                     seed=seed)
    if arch == "resnet18":
        model = create_model(SPEC)
        model.net.load_state_dict(net.state_dict())
    else:
        model = Normalized(net, None, None, 3)
    model.eval()

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = synthetic_texture_scenario(predict, n_train=n, strength=0.5, seed=seed)
    return model, {k: TensorDataset.from_arrays(sc[k]) for k in ("edit", "generalization", "test")}


@torch.no_grad()
def hits(model, ds) -> int:
    return sum(int((model(ds.x[i : i + 256]).argmax(1) == ds.y[i : i + 256]).sum()) for i in range(0, len(ds), 256))


@torch.no_grad()
def oracle_fixed(model, es, module_name: str) -> int:
    """Exemplars classified right when `module_name`'s output on x is replaced by its output on x_orig."""
    module = model.net.get_submodule(module_name)
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    try:
        model(es.x_orig)
    finally:
        handle.remove()
    handle = module.register_forward_hook(lambda _m, _i, _out: seen[0])
    try:
        return int((model(es.x).argmax(1) == es.y).sum())
    finally:
        handle.remove()


@torch.no_grad()
def skip_share(model, es, block_name: str) -> float:
    """|skip(x) - skip(x_orig)| / (|skip diff| + |branch diff|) at the block's add, on the mask (L2 per location)."""
    block = model.net.get_submodule(block_name)
    got = {}

    def hook(_m, inp, out):
        got.setdefault("in", []).append(inp[0].detach().clone())

    def branch_hook(_m, _i, out):
        got.setdefault("branch", []).append(out.detach().clone())

    handles = [block.register_forward_hook(hook), block.bn2.register_forward_hook(branch_hook)]
    try:
        model(es.x)
        model(es.x_orig)
    finally:
        for h in handles:
            h.remove()
    skip_of = block.downsample if block.downsample is not None else (lambda t: t)
    skip = [skip_of(t) for t in got["in"]]
    m = torch.nn.functional.interpolate(es.mask, size=skip[0].shape[2:], mode="area")
    d_skip = ((skip[0] - skip[1]).pow(2).sum(1, keepdim=True).sqrt() * m).sum()
    d_branch = ((got["branch"][0] - got["branch"][1]).pow(2).sum(1, keepdim=True).sqrt() * m).sum()
    return float(d_skip / (d_skip + d_branch))


class Memo(dict):
    """The job's memo, in memory: each (layer, keys) second moment is computed once per model."""

    def __call__(self, name, compute):
        if name not in self:
            self[name] = compute()
        return self[name]


def auto_keys(model, layer: str) -> str:
    """What the default `keys: auto` picks for this layer."""
    from editaudit.contracts.edits import RewriteParams

    return RewriteParams().keys_for(tuple(model.net.get_submodule(layer).weight.shape))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet18", "tiny"], choices=["resnet18", "tiny"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--layers", nargs="+", help="only these layers (default: every layer of RESNET18 / TINY)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for arch in args.archs:
        measure(arch, args, t0)


def measure(arch: str, args, t0: float) -> None:
    roles = RESNET18 if arch == "resnet18" else TINY
    layers = [name for name in roles if not args.layers or name in args.layers]
    results: dict[tuple, list] = {}
    diag: dict[str, list] = {}
    defaults: dict[str, str] = {}
    for seed in args.seeds:
        model, sets = case(arch, seed)
        es, gen, test = sets["edit"], sets["generalization"], sets["test"]
        base = (hits(model, es), hits(model, gen) / len(gen), hits(model, test) / len(test))
        results.setdefault(("(before)", "", "", 0), []).append((base[0], 0.0, 0.0, base[2], False))
        memo = Memo()
        for layer in layers:
            role = roles[layer]
            defaults[layer] = auto_keys(model, layer)
            block = layer.split(".downsample")[0] if ".downsample" in layer else layer.rsplit(".", 1)[0]
            if role == "inner":
                diag.setdefault(layer, []).append((oracle_fixed(model, es, layer), oracle_fixed(model, es, block),
                                                   skip_share(model, es, block)))
            elif role == "block end":
                diag.setdefault(layer, []).append((None, oracle_fixed(model, es, block), skip_share(model, es, block)))
            for rank in args.ranks:
                for keys in (("patch",) if role == "linear" else ("patch", "pixel")):
                    r = run_edit("rewrite", copy.deepcopy(model), es, [layer], {"rank": rank, "keys": keys},
                                 reference={"test": test}, memo=memo)
                    results.setdefault((layer, role, keys, rank), []).append(
                        (hits(r.model, es), hits(r.model, gen) / len(gen) - base[1],
                         hits(r.model, test) / len(test) - base[2], r.info["l1_error_after"]
                         / max(r.info["l1_error_before"], 1e-12), "warning" in r.info))
        print(f"{arch} seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []
    for (layer, role, keys, rank), vals in results.items():
        if layer == "(before)":
            rows.append(["(before the edit)", "", "", "", " ".join(str(v[0]) for v in vals), "", "",
                         f"{mean(v[3] for v in vals):.3f}", "", ""])
            continue
        shown = "patch = pixel" if role == "linear" else keys + (" (auto)" if defaults[layer] == keys else "")
        rows.append([layer, role, shown, str(rank),
                     " ".join(str(v[0]) for v in vals), f"{mean(v[0] for v in vals):.1f}",
                     f"{mean(v[1] for v in vals):+.3f}", f"{mean(v[2] for v in vals):+.3f}",
                     f"{mean(v[3] for v in vals):.2f}", "yes" if any(v[4] for v in vals) else ""])
    print(f"\nrewrite keys on {arch}@32, synthetic texture (strength 0.5), seeds {args.seeds}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), {time.perf_counter() - t0:.0f} s so far")
    print(render(["layer", "where", "keys", "rank", "fixed /8 per seed", "mean", "textured acc Δ", "clean acc Δ",
                  "L1 after/before", "info warns"], rows, align_right={3, 5, 6, 7, 8}))
    drows = []
    for layer, vals in diag.items():
        layer_oracle = "" if vals[0][0] is None else " ".join(str(v[0]) for v in vals)
        share = "" if ".downsample" in layer else f"{mean(v[2] for v in vals):.2f}"  # it is the skip itself
        drows.append([layer, roles[layer], layer_oracle, " ".join(str(v[1]) for v in vals), share])
    print(f"\n{arch}: exemplars fixed (/8 per seed) if the matched value were reached exactly")
    print(render(["layer", "where", "layer output := on x_orig", "block output := on x_orig",
                  "skip share of the block's change"], drows, align_right={4}))


if __name__ == "__main__":
    main()
