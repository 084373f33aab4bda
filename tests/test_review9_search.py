"""Regressions found by the ninth review of the search as a user meets it: the leaderboard
and its --top, export (stale ranks, block-program targets), the printed commands, argument
ranges, seed files, stores of an older schema, the cache key on match tasks and the near-copy
filter. Match searches run in this process, so these tests need no Ray."""
from __future__ import annotations

from optdsl.cli import main
from optdsl.search import report
from optdsl.search.candidate import build
from optdsl.search.store import Store


def _match_store(tmp_path, budget=6, *extra):
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--strategy", "evolution", "--budget",
                 str(budget), "--store", path, "--quiet", *extra]) == 0
    return path


def test_report_top_counts_candidates_besides_the_baselines(tmp_path, capsys):
    # --top is "rows of the leaderboard besides the baselines", but the baselines were counted
    # among them: on match:powersign the baselines powersign and addsign are ranks 1 and 2, so
    # `optdsl report STORE --top 2` listed no candidate at all
    path = _match_store(tmp_path)
    store = Store(path, create=False)
    [(task, protocol)] = report.task_protocols(store)
    rows = report.board_rows(store, task, protocol, top=2)
    assert len([r for r in rows if not r.get("name")]) == 2
    assert len([r for r in rows if r.get("name")]) == 5  # every baseline, with its rank
    store.close()
    capsys.readouterr()
    assert main(["report", path, "--no-plots", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "top 2 of 6 evaluated rules (and 5 baselines)" in " ".join(out.split())


def test_the_cache_key_keeps_an_lr_default_that_does_not_scale_the_update(tmp_path, capsys):
    # The key ignored lr's default (training protocols set lr), but a match task runs every
    # rule at its own defaults: these two rules, one sign(g) and the other about 100 g on the
    # streams, got one key, so the second was a cache hit with the first one's score
    a, b = "a(lr=1e-6) = lr * g + 0.01 * sign(g)", "b(lr=100) = lr * g + 0.01 * sign(g)"
    assert build(a).key != build(b).key
    # where lr only scales the update its default still does not matter (one candidate)
    assert build("r(lr=0.1) = lr * sign(g)").key == build("s(lr=0.5) = lr * sign(g)").key
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"{a}\n\n{b}\n")
    _match_store(tmp_path, 2, "--seeds", str(seeds), "--no-baselines")
    assert "2 evaluated here, 0 cache hits" in capsys.readouterr().out


def test_an_export_into_a_folder_of_an_earlier_export_leaves_no_stale_rank(tmp_path, capsys):
    # Files are named by leaderboard rank; exporting again after the search went on rewrote
    # the ranks it exported now and left the earlier export's other rank files, whose rules
    # are no longer at those ranks (rank 8 of the folder was not rank 8 of the leaderboard)
    import os
    import re
    path = _match_store(tmp_path, 6)
    out = str(tmp_path / "top")
    assert main(["report", path, "--no-plots", "--export", out]) == 0
    before = set(os.listdir(out))
    assert main(["search", "--resume", "--store", path, "--budget", "60", "--quiet"]) == 0
    (tmp_path / "top" / "mine_rank9.opt").write_text("lr * g\n")  # not an export: kept
    assert main(["report", path, "--no-plots", "--export", out]) == 0
    store = Store(path, create=False)
    [(task, protocol)] = report.task_protocols(store)
    ranks = {r["rank"]: r for r in report.ranked_rows(store, task, protocol)}
    store.close()
    files = sorted(os.listdir(out))
    assert before - set(files) and "mine_rank9.opt" in files
    files.remove("mine_rank9.opt")
    assert len(files) == 5
    for name in files:
        text = (tmp_path / "top" / name).read_text()
        rank = int(re.search(r"_rank(\d+)\.opt$", name).group(1))
        assert f"rank {rank}," in text and f"Store key {ranks[rank]['rule_hash']};" in text


def test_the_commands_a_search_and_a_report_print_run_as_printed(tmp_path, capsys):
    # 'more: optdsl report PATH' printed a path with a space unquoted, and a report's
    # "unfinished (optdsl search --resume)" left out the store: run as printed, the first
    # reads two files and the second resumes runs/digits.sqlite, not this store
    import shlex
    folder = tmp_path / "my runs"
    folder.mkdir()
    path = str(folder / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--budget", "2", "--store", path,
                 "--quiet"]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert shlex.split(hint) == ["more:", "optdsl", "report", path]
    store = Store(path)
    with store.transaction():
        store.set_budget(1, 4)  # as a search killed before its budget leaves it
    store.close()
    assert main(["report", path, "--no-plots"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"unfinished (optdsl search --resume --store {shlex.quote(path)})" in out


def test_a_candidate_beyond_float32_does_not_switch_the_near_filter_off():
    # The near filter's directions were float32: probe updates finite in float64 but past
    # float32's range (exp(60 |g|): 3e105) gave a NaN direction, argmax picked that NaN row
    # for every later candidate, and no near-copy was found again for the rest of the search
    # (and after --resume: the row is in the saved state). 11 of the 20 stored match searches
    # of runs/g1-* (evolution and RL, 2,000 candidates each) hold such rows, the first after
    # 27 to 1,884 new candidates.
    from optdsl.search.filters import CandidateFilter, signature
    big = build("r(lr=1) = lr * exp(abs(g) * 60)")
    pattern, profile = signature(big.rule)
    assert bool(pattern.isfinite().all()) and bool(profile.isfinite().all())
    near_copy = build("r(lr=1) = lr * (sign(g) + clip(g, -1e-5, 1e-5))")
    f = CandidateFilter(near=0.99995)
    assert f.check(build("r(lr=1) = lr * sign(g)")).kind == "new"
    assert f.check(big).kind == "new"
    assert f.check(build("r(lr=1) = lr * 2 * exp(abs(g) * 60)")).reason == "near"
    verdict = f.check(near_copy)
    assert (verdict.kind, verdict.reason) == ("duplicate", "near")
    # a damaged row (NaN) is never the nearest: the filter keeps working
    g = CandidateFilter(near=0.99995)
    g.load_state_dict(f.state_dict())
    g.patterns[1] = float("nan")
    assert g.check(build("r(lr=1) = lr * (sign(g) + clip(g, -2e-5, 2e-5))")).reason == "near"


def test_search_top_and_seed_outside_their_range_are_argument_errors(tmp_path, capsys):
    # search's --top took 0 or -3 (a leaderboard of baselines only; report's --top is >= 1),
    # and --seed 2**64 reached the RL controller's torch.manual_seed: "strategy 'rl' with
    # options {}: Overflow when unpacking long long", naming neither --seed nor the range
    import pytest
    path = str(tmp_path / "m.sqlite")
    for bad in (["--top", "0"], ["--strategy", "rl", "--seed", str(2**64)]):
        with pytest.raises(SystemExit) as e:
            main(["search", "--task", "match:powersign", "--store", path, *bad])
        assert e.value.code == 2
        assert f"argument {bad[-2]}:" in capsys.readouterr().err
    assert not (tmp_path / "m.sqlite").exists()


def test_a_seed_file_is_read_as_program_files_are(tmp_path, capsys):
    # A seed file that is not UTF-8 was a UnicodeDecodeError traceback (status 1), and one
    # with a byte-order mark was "unexpected character '\ufeff'"; `optdsl check` reads both
    # kinds of file (one line, status 2 / accepted)
    from optdsl.search.engine import read_seeds
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbflr * sign(g)\n")
    assert read_seeds(str(bom)) == ["lr * sign(g)"]
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe lr * g\n")
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--seeds", str(binary), "--store",
                 path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8 text (byte 0xff at offset 0)" in err
    assert not (tmp_path / "m.sqlite").exists()


def test_the_curves_plot_shows_full_protocol_candidates_only(tmp_path, monkeypatch):
    # plot_curves drew a candidate the screening rung stopped (one seed, a short screen) among the
    # "top rules" beside the full-protocol curves (3 seeds, 1,500 steps), though export and
    # the progress plot leave partial rungs out: on a small MNIST-1D store three of its four
    # "top rules" were screened-out rules
    store = Store(str(tmp_path / "s.sqlite"))

    def add(rule, rung, score, name=None):
        store.add_evaluation(rule=rule, rule_hash=rule, task="mnist1d-mlp", protocol="p",
                             name=name, result={"status": "ok", "score": score, "best_lr": 0.1,
                                                "rung": rung, "curve": [[300, score]]})
    add("adam", "full", 0.64, name="adam")
    add("lr * g", "full", 0.65)
    add("lr * sign(g)", "screen", 0.11)
    add("lr * ema(g, 0.9)", "middle", 0.6)
    labels = []
    monkeypatch.setattr(report, "_save", lambda fig, ax, path, legend_size: labels.extend(
        ax.get_legend_handles_labels()[1]) or path)
    report.plot_curves(store, "mnist1d-mlp", "p", str(tmp_path / "c.png"))
    assert [label.split(" ")[0] for label in labels] == ["#1", "adam"]
    store.close()


def test_an_export_of_a_match_task_on_a_block_program_passes_check(tmp_path, capsys):
    # match:RULE takes program text, a block program too; the exported file's header wrote
    # the task name as it is, so the program's second and later lines were code after the
    # comment, and `optdsl check` refused every exported file ("unexpected 'return'")
    import os
    target = "r(lr=1, b=0.8):\n    m = ema(g, b)\n    return lr * sign(m)"
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", f"match:{target}", "--budget", "3", "--store", path,
                 "--quiet"]) == 0
    out = str(tmp_path / "top")
    assert main(["report", path, "--no-plots", "--export", out]) == 0
    files = os.listdir(out)
    assert files
    capsys.readouterr()
    for name in files:
        assert main(["check", os.path.join(out, name)]) == 0, capsys.readouterr().err
        assert "#     return lr * sign(m)" in (tmp_path / "top" / name).read_text()
    # a second export recognises these files as its own (the header's first line)
    assert main(["report", path, "--no-plots", "--export", out, "--export-top", "1"]) == 0
    assert len(os.listdir(out)) == 1


def test_a_report_reads_a_store_of_an_older_schema(tmp_path, capsys):
    # A store is upgraded only when a search opens it; a report reads it as it is, but the
    # leaderboard's order named the rung column (schema 3), so a store of schema 1 or 2 was
    # "damaged and cannot be read (no such column: rung)", status 2
    import sqlite3
    path = _match_store(tmp_path, 3)
    conn = sqlite3.connect(path)
    for column in ("rung", "score_se", "val_loss", "screen_score", "middle_score", "full_score"):
        conn.execute(f"ALTER TABLE evaluations DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert main(["report", path, "--no-plots", "--export", str(tmp_path / "x")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "top 3 of 3 evaluated rules (and 5 baselines)" in out and "exported 3 rule(s)" in out
    conn = sqlite3.connect(path)  # read as it is: not upgraded
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
    conn.close()


def test_a_time_limit_past_what_the_alarm_takes_is_no_limit():
    # --time-limit takes any positive finite number of seconds, but 1e300 reached
    # signal.setitimer, which raised OverflowError ("timestamp out of range for platform
    # time_t") in every evaluation: on Ray each one, baselines included, was retried and
    # stored as failed, and later searches took those failures from the store
    from optdsl.search.evaluate import Protocol, evaluate
    from optdsl.search.tasks import TASKS
    for limit in (1e300, 1e19):
        result = evaluate({"rule": "adam", "task": "quadratic", "time_limit": limit,
                           "protocol": Protocol(lr_grid=(1e-2,)).config(TASKS["quadratic"])})
        assert result["status"] == "ok", result["error"]


def test_brackets_in_a_rule_a_task_or_a_path_are_printed_as_they_are(tmp_path, capsys):
    # The leaderboard and report's lines went through rich markup: a seed rule's comment or a
    # match target's with "[/x]" ended the search, its work done, and every report of the
    # store, in a MarkupError traceback; a store in "[a]/" was reported as "plots: /m-report/..."
    folder = tmp_path / "[a]"
    folder.mkdir()
    path = str(folder / "m.sqlite")
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("lr * sign(g)  # see [bold]Bello[/bold] [1] [/x]\n")
    assert main(["search", "--task", "match:lr * g  # [/oops]", "--seeds", str(seeds),
                 "--budget", "1", "--no-baselines", "--store", path, "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[bold]Bello[/bold] [1] [/x]" in out and "# [/oops]" in out
    assert main(["report", path, "--export", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert "[bold]Bello[/bold] [1] [/x]" in out and "# [/oops]" in out
    assert f"{folder}/m-report/best.png" in out.replace("\n", "")


def test_dollars_in_a_rule_or_a_task_do_not_break_the_plots(tmp_path, capsys):
    # matplotlib reads $...$ in a label or a title as mathtext: a seed rule whose comment held
    # "$\foo$" (TeX in a comment) made every optdsl report of the store a ParseFatalException
    # traceback ("Unknown symbol: \foo"); the legend and the title show the text as it is
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("lr * sign(g)  # $\\foo$\n")
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:lr * g  # $\\bar$", "--seeds", str(seeds),
                 "--budget", "1", "--no-baselines", "--store", path, "--quiet"]) == 0
    assert main(["report", path, "--plots", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "curves.png").exists() and (tmp_path / "p" / "best.png").exists()
