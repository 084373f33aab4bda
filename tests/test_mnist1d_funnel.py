"""benchmarks/mnist1d_search.py --cosine: the found rules tuned as the library's rules are
(each also with the cosine decay of its step), the variant chosen on the proxy's seeds."""
import importlib.util
import os

import pytest
import torch

import optdsl
from optdsl.probes import updates

REPO = os.path.join(os.path.dirname(__file__), os.pardir)
FOUND = "bello(lr=1) = lr * (sign(ema(g, 0.9)) + drop(g, 0.1) * linear_decay(t, 1500))"


def load_funnel():
    spec = importlib.util.spec_from_file_location(
        "mnist1d_search", os.path.join(REPO, "benchmarks", "mnist1d_search.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def funnel():
    return load_funnel()


def test_the_cosine_variant_is_the_rule_with_its_whole_step_decayed(funnel):
    text = "bello(lr=0.3) = lr * (sign(g) + sign(ema(g, 0.9)) * abs(g))"
    cos = funnel.cosine_variant(text, 40)
    rule, decayed = optdsl.parse(text), optdsl.parse(cos)
    assert decayed.name == "bello_cos" and decayed.defaults["lr"] == 0.3
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(40)]
    p0 = torch.zeros(6, dtype=torch.float64)
    plain, scaled = updates(rule, grads, p0), updates(decayed, grads, p0)
    ratio = scaled / plain
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))  # one factor a step
    assert ratio[0, 0] == pytest.approx(1.0) and ratio[-1, 0] < 0.01  # it decays to 0
    assert not torch.allclose(scaled, plain)


def test_a_block_program_has_no_one_line_cosine_variant(funnel):
    with pytest.raises(ValueError, match="one-line formula"):
        funnel.cosine_variant("r(lr=1):\n    m = ema(g, 0.9)\n    return lr * m", 100)


def test_on_the_proxy_a_found_rule_is_its_stored_text_and_on_a_longer_run_its_decays_stretch(
        funnel):
    short = FOUND.replace("1500", "300")  # a search whose space decayed over 300 steps
    f = {"rule": short, "horizon": 300, "cosine": True}
    assert funnel.program({**f, "cosine": False}, 1500) == short  # as the search scored it
    body = short.split(" = ", 1)[1]
    assert funnel.program(f, 1500) == f"bello_cos(lr=1) = cosine_decay(t, 1500) * ({body})"
    text = funnel.program(f, 4500, longer=True)
    assert text == ("bello_cos(lr=1) = cosine_decay(t, 4500) * (lr * (sign(ema(g, 0.9)) + "
                    "drop(g, 0.1) * linear_decay(t, 4500)))")
    optdsl.parse(text)


def test_the_better_variant_of_each_rule_is_chosen_on_the_proxy_seeds(monkeypatch):
    module = load_funnel()  # its own copy: score_all is patched
    block = "b(lr=1):\n    m = ema(g, 0.9)\n    return lr * m"
    found = [{"rule": f"r{k}(lr=1) = lr * g", "key": f"k{k}", "proxy": 0.7 - k / 100,
              "strategy": "rl", "horizon": 1500, "cosine": False} for k in range(4)]
    found.append({**found[0], "rule": block, "key": "k4"})
    scores = {"pool 1": 0.70, "pool 1 +cos": 0.69, "pool 2": 0.68, "pool 2 +cos": 0.75,
              "pool 3": 0.60, "pool 3 +cos": None, "pool 4": None, "pool 4 +cos": None,
              "pool 5": 0.72}
    seen = {}

    def fake_score_all(entries, task, seeds, workers):
        seen["seeds"], seen["labels"] = seeds, [label for label, _ in entries]
        for label, text in entries:  # a +cos row is scored as the rule times the decay
            assert ("cosine_decay(t, 1500) * (" in text) == label.endswith("+cos"), label
        rows = [{"label": label, "rule": text, "score": scores[label], "score_se": 0.01,
                 "status": "ok" if scores[label] is not None else "diverged"}
                for label, text in entries]
        return sorted(rows, key=lambda r: -(r["score"] if r["score"] is not None else -1))

    monkeypatch.setattr(module, "score_all", fake_score_all)
    best, rows = module.tune_schedules(found, "mnist1d-mlp", [0, 1, 2], 5, 1)  # k3 diverged
    assert seen["seeds"] == [0, 1, 2] and len(rows) == 9
    assert "pool 5 +cos" not in seen["labels"]  # a block program has no one-line variant
    assert [(f["key"], f["cosine"], f["proxy"]) for f in best] == [
        ("k1", True, 0.75), ("k4", False, 0.72), ("k0", False, 0.70), ("k2", False, 0.60)]
    assert module.label(1, best[0]) == "found 1 (rl, +cos, proxy 0.7500)"
