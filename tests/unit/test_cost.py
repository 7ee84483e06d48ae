"""The cost estimate counts what the job will run, per image: attack iterations x restarts x radii, corruption
cells, the clean pass, for baseline and candidate, plus the edit's steps x batch and one audit per swept layer."""

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.cost import estimate
from editaudit.contracts.edits import parse_hyperparams


def test_the_estimate_counts_every_pass():
    cfg = AuditConfig.model_validate({
        "attacks": [{"name": "pgd", "eps": 0.03, "steps": 10, "restarts": 2, "eps_sweep": [0.01, 0.05]},
                    {"name": "fgsm", "eps": 0.03}, {"name": "square", "eps": 0.03, "queries": 100}],
        "corruptions": {"names": ["fog", "snow"], "severities": [1, 5]}, "max_samples": 100})
    per_image = 1 + 10 * 2 * 3 + 1 + 100 + 2 * 2
    sizes = {"edit": 8, "test": 450}
    params = parse_hyperparams("finetune_layer", {"steps": 30, "batch_size": 4})
    cost = estimate(params, cfg, sizes)
    assert cost == {"audit": 2 * per_image * (8 + 100), "edit": 30 * 4, "total": 2 * per_image * 108 + 120}
    assert estimate(params, cfg, sizes, layers=3)["total"] == 3 * cost["total"]


def test_nested_edits_count_too():
    one_li = parse_hyperparams("interpolate", {"base": {"method": "low_rank", "hyperparams": {"steps": 50}}})
    assert estimate(one_li, AuditConfig(), {"edit": 8})["edit"] == 50 * 8
