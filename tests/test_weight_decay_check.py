"""benchmarks/mnist1d_weight_decay_check.py: momentum with a tuned weight decay against found
rules, the weight decay chosen on the proxy's seeds and scored on fresh ones."""
import importlib.util
import json
import os

import pytest
import torch

import optdsl
from optdsl.probes import updates

REPO = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location(
        "mnist1d_weight_decay_check",
        os.path.join(REPO, "benchmarks", "mnist1d_weight_decay_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_baseline_is_sgdw_with_that_weight_decay_times_the_cosine_decay(check):
    label, text = check.sgdw_cos(0.03)
    assert label == "sgdw+cos, weight_decay=0.03"
    written = ("w(lr=1e-3) = cosine_decay(t, 1500) * lr * (heavyball(g, 0.9, 0) + 0.03 * p)")
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(30)]
    p0 = torch.randn(5, generator=gen, dtype=torch.float64)  # nonzero: the decay acts on it
    ours, theirs = updates(optdsl.parse(text), grads, p0), updates(optdsl.parse(written), grads, p0)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0)


def test_the_weight_decay_is_chosen_on_the_proxy_seeds_and_compared_on_fresh_ones(
        check, tmp_path, monkeypatch):
    """The grid is scored on seeds 0-2 only; the best there (not on the fresh seeds) is the
    reference each fresh table's gaps are measured against."""
    found = tmp_path / "a.opt"
    found.write_text("a(lr=1) = lr * sign(g)\n")
    proxy = {0.001: 0.70, 0.01: 0.74, 0.1: 0.60}
    calls = []

    def fake_score_all(entries, task, seeds, workers):
        calls.append((task, list(seeds), [label for label, _ in entries]))
        rows = []
        for label, text in entries:
            if seeds == [0, 1, 2]:
                score = proxy[float(label.split("=")[1])]
            else:  # fresh seeds: only the chosen weight decay is scored, beside the found rule
                score = 0.75 if label.startswith("found") else 0.73
            rows.append({"label": label, "rule": text, "status": "ok", "score": score,
                         "score_se": 0.002, "val_loss": 1.0, "best_lr": 0.1, "seconds": 1.0})
        return sorted(rows, key=lambda r: -r["score"])

    monkeypatch.setattr(check.funnel, "score_all", fake_score_all)
    check.main(["--decays", "0.001", "0.01", "0.1", "--found", str(found),
                "--seed-sets", "400-402", "500-501", "--out", str(tmp_path / "out")])
    assert calls[0] == ("mnist1d-mlp", [0, 1, 2], [f"sgdw+cos, weight_decay={wd:g}"
                                                   for wd in (0.001, 0.01, 0.1)])
    assert calls[1:] == [("mnist1d-mlp", seeds, ["sgdw+cos, weight_decay=0.01", "found a.opt"])
                         for seeds in ([400, 401, 402], [500, 501])]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "the weight decay is chosen here: sgdw+cos, weight_decay=0.01" in summary
    row = "| found a.opt | 0.7500 ± 0.0020 | 1.000 | 0.1 | +0.0200 (+7.1 s.e.) |"
    assert summary.count(row) == 2  # each fresh table, against the weight decay chosen on 0-2


@pytest.mark.parametrize("args, message", [
    (["--seed-sets", "400"], "a seed set is FIRST-LAST"),
    (["--seed-sets", "409-400"], "last seed is below its first"),
    (["--found", "no-such.opt"], "no such file: no-such.opt"),
    (["--leaderboard", "no-such.json"], "no such file: no-such.json"),
])
def test_bad_arguments_fail_before_any_training(check, tmp_path, monkeypatch, capsys, args,
                                                message):
    monkeypatch.setattr(check.funnel, "score_all", lambda *a: pytest.fail("trained"))
    found = tmp_path / "a.opt"
    found.write_text("a(lr=1) = lr * sign(g)\n")
    argv = ["--found", str(found), "--out", str(tmp_path / "out")] + args
    with pytest.raises(SystemExit):
        check.main(argv)
    assert message in capsys.readouterr().err


def test_with_a_leaderboard_its_best_rows_are_the_references_on_each_fresh_seed_set(
        check, tmp_path, monkeypatch):
    """No grid is trained: the leaderboard's K best rows (their programs rebuilt from their
    labels, weight decay included) are re-scored beside the found rules, and each fresh table's
    gaps are to the best of them there."""
    found = tmp_path / "a.opt"
    found.write_text("a(lr=1) = lr * sign(g)\n")
    board = tmp_path / "leaderboard.json"
    rows = [{"task": "mnist1d-mlp", "rule": rule, "status": "ok", "score": score,
             "score_se": 0.003} for rule, score in [("sgd+cos+wd=0.01", 0.745),
                                                    ("adam", 0.64), ("momentum+cos", 0.72),
                                                    ("addsign_linear+cos", 0.741)]]
    rows.append({"task": "mnist1d-cnn", "rule": "ranger+cos", "status": "ok", "score": 0.9,
                 "score_se": 0.01})
    board.write_text(json.dumps({"rows": rows}))
    calls = []

    def fake_score_all(entries, task, seeds, workers):
        calls.append((list(seeds), entries))
        fresh = {"sgd+cos+wd=0.01": 0.742, "addsign_linear+cos": 0.746, "found a.opt": 0.752}
        return sorted(({"label": label, "rule": text, "status": "ok", "score": fresh[label],
                        "score_se": 0.002, "val_loss": 1.0, "best_lr": 0.1, "seconds": 1.0}
                       for label, text in entries), key=lambda r: -r["score"])

    monkeypatch.setattr(check.funnel, "score_all", fake_score_all)
    check.main(["--leaderboard", str(board), "--library", "2", "--found", str(found),
                "--seed-sets", "400-401", "--out", str(tmp_path / "out")])
    (seeds, entries), = calls
    assert seeds == [400, 401]
    assert [label for label, _ in entries] == ["sgd+cos+wd=0.01", "addsign_linear+cos",
                                               "found a.opt"]
    assert entries[0][1] == "sgd_cos_wd = cosine_decay(t, 1500) * (sgd + lr * 0.01 * p)"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "the 2 best rows of" in summary and "sgd+cos+wd=0.01 0.7450 ± 0.0030" in summary
    # the gap is to the best reference on the fresh seeds (addsign_linear+cos there)
    assert "| found a.opt | 0.7520 ± 0.0020 | 1.000 | 0.1 | +0.0060 (+2.1 s.e.) |" in summary


def test_the_default_seed_sets_are_seeds_not_text(check, tmp_path, monkeypatch):
    """argparse does not convert a list default with ``type``: the default once reached
    ``manual_seed`` as the string '400-409'."""
    found = tmp_path / "a.opt"
    found.write_text("a(lr=1) = lr * sign(g)\n")
    seen = []

    def fake_score_all(entries, task, seeds, workers):
        seen.append(list(seeds))
        return [{"label": label, "rule": text, "status": "ok", "score": 0.7, "score_se": 0.01,
                 "val_loss": 1.0, "best_lr": 0.1, "seconds": 1.0} for label, text in entries]

    monkeypatch.setattr(check.funnel, "score_all", fake_score_all)
    check.main(["--decays", "0.01", "--found", str(found), "--out", str(tmp_path / "out")])
    assert seen == [[0, 1, 2], list(range(400, 410)), list(range(500, 510))]
