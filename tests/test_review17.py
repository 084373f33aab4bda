"""Regression tests for the defects fixed in the eleventh session (2026-12-05)."""
import os
import warnings

import pytest
import torch

import optdsl

BACKENDS = ["eager", "torchscript", "inductor"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parameter_replaced_by_another_object_on_its_memory_is_the_one_stepped(backend):
    # Inductor's plan ran its kernel on the tensor objects it was made for: after model surgery
    # (q takes p's place and state, p then points at one element) it stepped p, writing 63
    # elements past the end of its memory, and left q alone
    p0 = torch.nn.Parameter(torch.randn(64, dtype=torch.float64))
    p = torch.nn.Parameter(torch.randn(64, dtype=torch.float64))
    opt = optdsl.Optimizer([p0, p], "momentum", lr=1.0, backend=backend)
    p0.grad, p.grad = torch.ones_like(p0), torch.ones_like(p)
    opt.step()
    q = torch.nn.Parameter(p.data)
    opt.param_groups[0]["params"][1] = q
    opt.state[q] = opt.state.pop(p)
    canary = torch.zeros(128, dtype=torch.float64)
    p.data = canary[:1]
    before = q.detach().clone()
    p0.grad, q.grad = torch.ones_like(p0), torch.full_like(q, 2.0)
    opt.step()
    assert canary.count_nonzero() == 0
    # momentum 0.9: the buffer 1 becomes 0.9 + 2, and q moves by it
    torch.testing.assert_close(q.detach(), before - 2.9, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_replaced_by_another_tensor_on_its_memory_is_the_one_written(backend):
    p = torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))
    opt = optdsl.Optimizer([p], "momentum", lr=1.0, backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()
    st = opt.state[p]
    name = next(k for k in st if k != "step")
    old = st[name]
    st[name] = old.view(2, 4).view(8)  # another object on the same memory
    old_alias = old
    p.grad = torch.ones_like(p)
    opt.step()
    torch.testing.assert_close(st[name], torch.full_like(p, 1.9))
    assert st[name].data_ptr() == old_alias.data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["grad", "param"])
def test_a_tensor_with_the_lazy_negation_bit_is_read_with_its_sign(backend, where):
    # g = x.conj().imag stores +1..+4 with torch's negation bit: its values are -1..-4. The
    # Inductor kernel read the stored values, and stepped the wrong way
    z = torch.complex(torch.zeros(4, dtype=torch.float64),
                      torch.arange(1.0, 5.0, dtype=torch.float64)).conj()
    lazy = z.imag
    assert lazy.is_neg()
    grad = lazy if where == "grad" else torch.ones(4, dtype=torch.float64)
    ref = torch.nn.Parameter(lazy.clone() if where == "param" else torch.zeros(4, dtype=torch.float64))
    if where == "param":
        p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        p.data = lazy
    else:
        p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    ours = optdsl.Optimizer([p], "sgd", lr=1.0, backend=backend)
    theirs = torch.optim.SGD([ref], lr=1.0)
    for _ in range(2):  # the second step reuses the plan
        p.grad, ref.grad = grad, grad.clone()
        ours.step()
        theirs.step()
        torch.testing.assert_close(p.detach().resolve_neg(), ref.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("value, says", [
    (-1.0, "bind: invalid lr=-1.0: lr must be >= 0"),
    (float("nan"), "bind: hyperparameter lr is NaN"),
    (float("inf"), "bind: invalid lr=inf: lr must be finite"),
    ("x", "bind: hyperparameter lr='x' is a string"),
    (None, "bind: hyperparameter lr=None is not a number"),
])
def test_equivalent_checks_bound_values_as_the_cli_does(value, says):
    # the Python API proved lr*g equal to lr*g*1 at lr = -1, answered unknown at NaN, and
    # raised float()'s bare ValueError for 'x'
    with pytest.raises(optdsl.HyperparameterError) as info:
        optdsl.equivalent("lr * g", "lr * g * 1", bind={"lr": value})
    assert says in str(info.value)


def test_equivalent_of_one_program_checks_bound_values_too():
    with pytest.raises(optdsl.HyperparameterError, match="beta1 must be"):
        optdsl.equivalent("adam", "adam", bind={"beta1": 2.0})


@pytest.mark.parametrize("text, says", [
    ("lr * g * eq(g, 1)", "unknown function 'eq': the operator '==' is written as x == y"),
    ("lr * add(g, 1)", "unknown function 'add': the operator '+' is written as x + y"),
    ("lr * neg(g)", "unknown function 'neg': the operator '-' is written as -x"),
    ("lr * pow(g, 2)", "unknown function 'pow': the operator '^' is written as x ^ y"),
    ("lr * ln(g)", "unknown function 'ln'; did you mean 'log'?"),
    ("lr * clamp(g, -1, 1)", "unknown function 'clamp'; did you mean 'clip'?"),
    ("lr * g * eqa(g, 1)", "unknown function 'eqa'"),
])
def test_the_tables_operator_names_are_not_functions_and_not_suggested(text, says):
    # eq(g, 1), add, pow, ... parsed as undocumented functions; 'eqa' got "did you mean 'eq'?"
    # and 'ln' "did you mean 'lion'?"
    with pytest.raises(optdsl.DSLError) as info:
        optdsl.parse(text)
    first = str(info.value).splitlines()[0]
    assert says in first and "column" in first, first
    assert "did you mean 'eq'" not in first


@pytest.mark.parametrize("text, states", [
    ("lr * (ema(g, 0.9) - ema(g, 0.9) + g)", 0),  # was: two ema states, longer than the input
    ("lr * ema(g, 0.9) + lr * ema(g, 0.9)", 1),  # was: two identical states
    ("lr * cumsum(g) - lr * prev(cumsum(g))", 0),  # the sum and its last value are one state
    ("lr * cumsum(g) - lr * cumsum(g - g)", 1),  # acc := acc (a constant 0) was kept
])
def test_simplify_folds_twin_and_constant_states(text, states):
    out, verdict = optdsl.simplify(text, timeout=30)
    assert out.count("state ") == states, out
    assert not verdict.refuted
    _same_updates(text, out)


def test_simplify_keeps_a_state_held_at_p_and_states_that_differ():
    # a state updated to itself holds its initial value: p_0, not p (p moves on)
    text = "r(lr=1):\n    state s = p\n    s := s\n    return lr * (g + s)\n"
    out, _ = optdsl.simplify(text, timeout=30)
    assert "state s = p" in out
    out, _ = optdsl.simplify("lr * (ema(g, 0.9) - ema(g, 0.8) + g)", timeout=30)
    assert out.count("state ") == 2


def _same_updates(a, b, steps=6):
    torch.manual_seed(0)
    grads = [torch.randn(5, dtype=torch.float64) for _ in range(steps)]
    ps = []
    for text in (a, b):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
        opt = optdsl.Optimizer([p], text, lr=0.1, backend="eager")
        for gr in grads:
            p.grad = gr.clone()
            opt.step()
        ps.append(p.detach())
    torch.testing.assert_close(ps[0], ps[1], rtol=1e-12, atol=1e-14)


def _cli(args, capsys):
    from optdsl.cli import main
    status = main(args)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_search_of_another_spelling_of_a_stored_match_target_prints_its_leaderboard(
        tmp_path, capsys):
    # the leaderboard after the search read the typed spelling: "top 0 of 0 evaluated rules"
    store = str(tmp_path / "s.sqlite")
    assert _cli(["search", "--task", "match:lr * sign(g)", "--budget", "5", "--store", store,
                 "--no-baselines"], capsys)[0] == 0
    status, out, _ = _cli(["search", "--task", "match:lr*sign( g )", "--budget", "8",
                           "--strategy", "evolution", "--store", store, "--no-baselines"],
                          capsys)
    assert status == 0
    assert "top 0 of 0" not in out and "match:lr * sign(g): top" in out


def test_report_task_takes_any_spelling_and_export_names_do_not_depend_on_it(tmp_path, capsys):
    store, ex = str(tmp_path / "s.sqlite"), str(tmp_path / "ex")
    for task in ("match:lr * sign(g)", "match:powersign"):
        assert _cli(["search", "--task", task, "--budget", "5", "--store", store],
                    capsys)[0] == 0
    status, out, err = _cli(["report", store, "--no-plots", "--task", "match:lr*sign(g)"],
                            capsys)
    assert status == 0, err
    assert "match:lr * sign(g): top" in out
    # an export of every task, then of one: the same files, the same rules (the second export
    # wrote the powersign rules again under other names, beside the first's)
    for extra in ([], ["--task", "match:powersign"]):
        assert _cli(["report", store, "--no-plots", "--export", ex, "--export-top", "2",
                     *extra], capsys)[0] == 0
        names = sorted(os.listdir(ex))
        assert names and all("_rank" in n for n in names)
        if not extra:
            first = names
    assert names == first  # (the other task's files stay, as they were)


def test_a_match_target_that_is_a_file_says_to_give_its_text(tmp_path, capsys):
    path = tmp_path / "r.opt"
    path.write_text("r(lr=0.1) = lr * sign(g)\n")
    status, _, err = _cli(["search", "--task", f"match:{path}", "--budget", "5", "--store",
                           str(tmp_path / "s.sqlite")], capsys)
    assert status == 2 and "not a file" in err and "$(cat" in err


def test_simplify_prints_a_power_of_a_fraction_as_one_power():
    # nadam's 0.96^(momentum_decay t) came out as 24^(momentum_decay t) * 25^(-(momentum_decay t))
    out, verdict = optdsl.simplify("nadam", timeout=60)
    assert "0.96^" in out and "24^" not in out and "25^" not in out
    assert verdict.proved
    out, _ = optdsl.simplify("lr * g * 2^t * 3^t", timeout=30)
    assert "6^t" in out


def test_the_search_printer_keeps_a_states_storage_dtype():
    # the printer wrote v: bfloat16 = ema(...) back as an inline ema(...): the dtype was lost
    from optdsl.search.program import program_text
    rule = optdsl.parse("r(lr=0.1, beta2=0.99):\n    v: bfloat16 = ema(g^2, beta2)\n"
                        "    return lr * g / (sqrt(v) + 1e-8)\n")
    again = optdsl.parse(program_text(rule))
    assert again.state_dtypes == {"v": "bfloat16"}
    assert optdsl.fingerprint(again) == optdsl.fingerprint(rule)


def test_the_search_printer_is_stable_and_saves_only_what_is_read():
    # states were declared in slot order and updated in dependency order: printed again, the
    # declarations came in another order; an unread s_prev = s was written
    from optdsl.search.program import program_text
    text = ("r(lr=0.1):\n    state s = 1\n    state q = 0\n    q := s + g\n"
            "    s := q * 0.5 + s\n    return lr * (s + q + prev(g))\n")
    first = program_text(optdsl.parse(text))
    second = program_text(optdsl.parse(first))
    assert first == second
    assert "s_prev" not in first and "q := s + g" in first
    assert optdsl.fingerprint(optdsl.parse(first)) == optdsl.fingerprint(optdsl.parse(text))


def test_check_warns_about_hyperparameters_only_dead_states_read():
    rule = optdsl.parse("r(lr=0.1, beta=0.9, gamma=0.5, k=3):\n    m = ema(g, beta)\n"
                        "    state s = gamma\n    s := s\n    return lr * g\n")
    assert rule.unread_hypers() == ["beta", "gamma", "k"]
    assert rule.live_slots() == []
    assert optdsl.resolve("lamb").unread_hypers() == []


def test_export_to_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="it is a folder"):
        optdsl.export("adam", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no folder"):
        optdsl.export("adam", str(tmp_path / "nope" / "adam.pt"))


def test_an_exported_step_checks_its_lists_before_it_steps(tmp_path):
    path = str(tmp_path / "sgd.pt")
    plan = optdsl.export("sgd", path)
    step = torch.jit.load(path)
    ps = [torch.ones(3), torch.ones(2)]
    states = [[torch.zeros(3), torch.zeros(2)] for _ in plan.arg_names[2:-1]]
    scalars = torch.ones(len(step.scalar_names))
    with pytest.raises(Exception, match="one tensor per parameter"):
        step(ps, [torch.ones(3)], *states, scalars)  # one gradient short
    assert torch.equal(ps[0], torch.ones(3))  # nothing stepped


def test_latex_prints_function_names_whole_and_tells_a_hyperparameter_u_from_the_update():
    from optdsl.symbolic import to_latex
    text = to_latex(optdsl.resolve("powersign_cosine"))
    assert r"\operatorname{cosine\_decay}" in text and "_{decay}" not in text
    text = to_latex(optdsl.parse("r(lr=0.1, u=0.5) = lr * u * g"))
    assert r"\Delta_{t} &=" in text and r"p_{t-1} - \Delta_{t}" in text


def test_train_says_when_the_run_diverged(capsys):
    from optdsl.cli import main
    assert main(["train", "sgd", "--lr", "1e30", "--epochs", "1"]) == 0
    assert "diverged: the train loss is not finite from epoch 1" in capsys.readouterr().out


def test_adadelta_takes_rho_1_as_torch_does():
    p, q = (torch.nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2))
    theirs = torch.optim.Adadelta([p], rho=1.0)
    ours = optdsl.Optimizer([q], "adadelta", rho=1.0, backend="eager")
    for _ in range(3):
        p.grad = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        q.grad = p.grad.clone()
        theirs.step()
        ours.step()
    torch.testing.assert_close(q, p, rtol=0, atol=0)
    with pytest.raises(optdsl.HyperparameterError, match="rho must be in"):
        optdsl.Optimizer([q], "adadelta", rho=1.01)


def test_adan_takes_its_own_codes_three_betas_and_torchs_two():
    # Adan(params, betas=(0.98, 0.92, 0.99)) as its authors' code takes it was refused
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optdsl.Optimizer([p], "adan", betas=(0.9, 0.8, 0.7))
    group = opt.param_groups[0]
    assert (group["beta1"], group["beta2"], group["beta3"]) == (0.9, 0.8, 0.7)
    assert group["betas"] == (0.9, 0.8, 0.7)
    same = optdsl.Optimizer([p], "adan", beta1=0.9, beta2=0.8, beta3=0.7)
    assert same.param_groups[0]["betas"] == (0.9, 0.8, 0.7)
    assert optdsl.Optimizer([p], "adan", betas=(0.9, 0.8)).param_groups[0]["betas"] == \
        (0.9, 0.8, 0.99)
    with pytest.raises(optdsl.HyperparameterError, match="betas takes 3 values"):
        optdsl.Optimizer([p], "adan", betas=(0.9,))
    with pytest.raises(optdsl.HyperparameterError, match="betas takes 2 values"):
        optdsl.Optimizer([p], "adam", betas=(0.9, 0.8, 0.7))
    group["betas"] = (0.5, 0.8, 0.6)  # a write to betas is what the next step uses
    p.grad = torch.ones_like(p)
    opt.step()
    assert (group["beta1"], group["beta3"]) == (0.5, 0.6)
    opt.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_ray_port_out_of_range_is_a_bad_address(port):
    # it was reported as "Connection refused"
    from optdsl.search.errors import SearchError
    from optdsl.search.runner import check_address
    with pytest.raises(SearchError, match="bad Ray address.*1-65535"):
        check_address(f"127.0.0.1:{port}")


def test_a_refused_auth_token_is_said_in_one_line(tmp_path):
    # Ray words a refused token as "Failed to connect to Ray cluster" (its core's warnings on
    # fd 2 say InvalidAuthToken) or, through Ray Client, as a connection timeout
    from optdsl.search.runner import _init_failure
    log = tmp_path / "ray.log"
    log.write_text("earlier\n")
    start = log.stat().st_size
    with open(log, "a") as f:
        f.write("W gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: "
                "RPC error: InvalidAuthToken: Authentication token is missing or incorrect\n")
    said = _init_failure(ConnectionError("Failed to connect to Ray cluster at 1.2.3.4:6379"),
                         "1.2.3.4:6379", str(log), start)
    assert said.startswith("the cluster refused this client's auth token") and "\n" not in said
    said = _init_failure(ConnectionError("ray client connection timeout"), "ray://h:10001",
                         str(log), log.stat().st_size)
    assert "auth token?" in said
    said = _init_failure(RuntimeError("something else\nmore"), "h:6379", str(log),
                         log.stat().st_size)
    assert said == "something else"


def test_stderr_goes_to_the_log_while_ray_starts_and_comes_back(tmp_path, capfd):
    from optdsl.search.runner import _stderr_to
    log = tmp_path / "ray.log"
    with _stderr_to(str(log)):
        os.write(2, b"from the core\n")
    os.write(2, b"after\n")
    assert log.read_text() == "from the core\n"
    assert "after" in capfd.readouterr().err
