"""Funnel selection and naming what a search found.

* :func:`family` tells whether a rule is a member of the PowerSign/AddSign family of Bello et
  al. 2017 (any base, alpha or sign decay): on two sets of probe gradients (lr = 1; magnitudes
  from 1e-7 to 10 and from 1e-9 to 1e3, so that ``clip(g, -1e-4, 1e-4)`` is not taken for
  ``1e-4 sign(g)``, nor a rule for a member where its clipped terms saturate) its update is
  ``g * h(t, s)`` with ``s = sign(g) sign(m)``, ``m = ema(g, 0.9)``, i.e. ``u / g`` takes one
  value where the signs agree and another where they disagree, the first larger and positive
  (and the second not negative, alpha >= f(t)); ``c+ c- = 1``: PowerSign-like,
  ``base^(+-f(t))``; otherwise AddSign-like, ``alpha +- f(t)``); and where ``m`` is exactly 0
  (g = c, -0.9 c, which random gradients never give), u / g is the mean of the two (AddSign)
  or their geometric mean (PowerSign), as :func:`family_proof` asks. The two values must be
  apart by at least ``SEPARATION`` of the larger and by far more than either one's spread
  over the elements: ``1e8 g + clip(m, -1e-4, 1e-4)`` is sgd with a rounding-size term, not
  a member (its ratios are 1e8 +- 2: one value within 1e-6 relative, but not two). Every test
  is relative to the values and to what the probes resolve (an update is a difference of
  parameters), so a constant factor never changes whether a rule is a member; the kind it
  names assumes the factor 1 (``c+ c- = 1``: ``c * powersign`` is named addsign).
* :func:`known_as` names a rule after a library rule it equals: ``≡ name`` when their search
  cache keys agree (``search.candidate``: the canonical hash, with lr's default ignored
  where lr scales the update, and the probe updates),
  ``≈ name`` when their updates agree numerically on probe inputs (fingerprint-equivalent),
  ``∝ c × name`` when they agree up to a constant factor c > 0 (the library rule at c times
  the learning rate: off the protocol's lr grid when c is not a power of 10),
  ``∈ powersign family`` / ``∈ addsign family`` when :func:`family` says so; for a rule with
  ``drop`` that is none of these, ``drop-free form ...`` names its form with every
  ``drop(x, rate)`` replaced by ``x`` (its expectation where the dropout enters linearly).
* :func:`funnel` re-runs the top candidates of a search on a larger task or a longer schedule
  (through any runner), optionally under several protocol seeds (the mean is the score: rules
  with ``drop``/``noise`` are otherwise ranked by one draw's luck), and returns the final
  leaderboard with those names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_FAMILY_PROBES = None
SEPARATION = 1e-3  # family: c+ - c- at least this fraction of c+
ULPS = 4  # family: an update p_before - p_after is known to this many ulps of |p|
# family_proof's time limit in the benchmarks' re-reads of stores (offline): a member with a
# decay takes sympy 10-30 s, where the library's default of 10 s left some unknown
OFFLINE_PROOF_TIMEOUT = 60.0


# family: probe sets as (seed, elements, steps, log10 of the smallest and largest |g|): the first
# from 1e-7 to 10; the second wider, so that a rule whose u/g is two-valued only where a clipped
# term saturates (e.g. x - clip(x, 1e-4) with x = 1e-5 g + clip(m, 1e-4): AddSign while |g| < 20)
# is found out
PROBE_SETS = ((11, 64, 6, -7, 1), (12, 128, 8, -9, 3))


def _family_probes() -> list:
    """[(p0, grads)] for each of ``PROBE_SETS`` (float64, built once)."""
    global _FAMILY_PROBES
    if _FAMILY_PROBES is None:
        _FAMILY_PROBES = []
        for seed, size, steps, lo, hi in PROBE_SETS:
            gen = torch.Generator().manual_seed(seed)
            p0 = torch.randn(size, generator=gen, dtype=torch.float64)
            scale = 10 ** ((hi - lo) * torch.rand(size, generator=gen, dtype=torch.float64) + lo)
            grads = [torch.randn(size, generator=gen, dtype=torch.float64) * scale
                     for _ in range(steps)]
            _FAMILY_PROBES.append((p0, grads))
    return _FAMILY_PROBES


def family(rule, beta: float = 0.9, tol: float = 1e-6) -> str | None:
    """'powersign' or 'addsign' when ``rule`` is in the family (see the module docstring).

    Every test is relative, so that membership does not depend on a constant factor, and
    allows for the probes' own precision: an update is a difference of parameters (``p_before
    - p_after``), known to a few ulps of ``|p|``, so ``u / g`` is known to
    ``ULPS * eps * |p| / |g|``, far worse than ``tol`` where ``|g|`` is 1e-7. Each of the two
    values is read where it is known best (the element with the largest ``|g|``) and every
    element must agree with it to ``tol`` of it plus its own precision. A member is one on
    every probe set (``PROBE_SETS``)."""
    import optdsl
    rule = optdsl.parse(rule) if isinstance(rule, str) else rule
    kind = None
    for p0, grads in _family_probes():  # a member on every probe set, of one kind
        found = _family_on(rule, p0, grads, beta, tol)
        if found is None or kind not in (None, found):
            return None
        kind = found
    return kind if _at_zero_ema_numeric(rule, beta, tol) else None


def _at_zero_ema_numeric(rule, beta: float, tol: float) -> bool:
    """Whether ``u / g`` at step 2 where the ema is exactly 0 (after g = c, -beta c, c = 2^k:
    float64 rounds every element as c = 1) is the mean (AddSign) or the geometric mean
    (PowerSign) of its values at step 2 where the signs agree (c, c) and disagree (c, -c / 10),
    as ``family_proof`` asks: random probes never put the ema at 0."""
    from optdsl.probes import updates
    c = 2.0 ** torch.arange(-20, 4, 4, dtype=torch.float64)
    first = torch.cat([c, c, c])
    second = torch.cat([c, -0.1 * c, -beta * c])
    try:
        u = updates(rule, [first, second], torch.zeros_like(first))[1] / second
    except Exception:  # noqa: BLE001 - a rule that raises is no member
        return False
    cp, cm, c0 = u.reshape(3, -1)
    if not bool(torch.isfinite(u).all()):
        return False
    mean, geometric = (cp + cm) / 2, (cp * cm).clamp_min(0).sqrt()
    return bool(((c0 - mean).abs() <= tol * mean.abs()).all()
                or ((c0 - geometric).abs() <= tol * geometric.abs()).all())


def _family_on(rule, p0, grads, beta: float, tol: float) -> str | None:
    """``family`` on one probe set."""
    from optdsl.probes import updates
    try:
        u = updates(rule, grads, p0)
    except Exception:
        return None
    if not bool(torch.isfinite(u).all()):
        return None
    p_after = p0 - torch.cumsum(u, 0)
    p_before = torch.cat([p0[None], p_after[:-1]])
    eps = torch.finfo(u.dtype).eps
    m = torch.zeros_like(grads[0])
    both, power = False, True
    for t, g in enumerate(grads):
        m = beta * m + (1 - beta) * g
        s = torch.sign(g) * torch.sign(m)
        ratio = u[t] / g
        known = ULPS * eps * torch.maximum(p_before[t].abs(), p_after[t].abs()) / g.abs()
        vals, bounds, spread = {}, {}, 0.0
        for sv in (1.0, -1.0):
            at = s == sv
            if not bool(at.any()):
                continue
            r, k = ratio[at], known[at]
            best = int(torch.argmin(k))
            value = float(r[best])
            off = (r - value).abs() - k - k[best]  # what the probes' precision leaves
            if bool((off > tol * abs(value)).any()):
                return None  # u / g takes more than one value where the signs agree (disagree)
            vals[sv], bounds[sv] = value, float(k[best])
            spread = max(spread, float(off.max()))
        if len(vals) == 2:
            both = True
            cp, cm = vals[1.0], vals[-1.0]
            gap = cp - cm
            if not (cp > 0 and cm >= -(tol * cp + bounds[-1.0]) and gap > SEPARATION * cp
                    and gap > 1e3 * spread):
                return None
            power &= abs(cp * cm - 1) < 1e-6
    if not both:
        return None
    return "powersign" if power else "addsign"


@dataclass(frozen=True)
class Proof:
    """An exact check (``family_proof``, ``match_proof``): ``status`` proved | refuted |
    unknown (as ``optdsl.equivalent``), ``text`` what was proved or why not."""
    status: str
    text: str

    @property
    def proved(self) -> bool:
        return self.status == "proved"


def family_proof(rule, beta: float = 0.9, timeout: float = 10.0) -> Proof:
    """Prove with ``optdsl.equivalent`` that ``rule`` is AddSign up to a factor of lr.

    With ``c+(t)``, ``c-(t)`` and ``c0(t)`` the values of ``u / g`` (lr = 1) at step ``t``
    where the signs of ``g`` and ``m = ema(g, beta)`` agree, where they do not, and where
    ``m`` is exactly 0 (``s = sign(g) sign(m) = 0``, after g = 1, -beta: an input that occurs),
    a member is ``u = lr g (c+ (1 + s) + c- (1 - s)) / 2`` with ``c+ > c- >= 0`` and ``c0``
    the mean of the two: ``addsign`` at ``lr x (c+ - c-) / 2`` with ``alpha = (c+ + c-) / (c+
    - c-)``; or ``c0`` their geometric mean: PowerSign (``base^s``, base e when ``c+ / c- =
    e^2``). Any other ``c0`` is no member: such a rule equals one only where the ema is not 0
    (``g / (log|sign(g) + sign(m)| + 1e-8)`` steps 1e8 g there). When the values depend on
    ``t``, a member with a decay (Bello et al.'s decayed PowerSign and AddSign, or a learning
    rate schedule). The values are computed exactly (sympy, ``_exact_ratios``),
    written into that form as program text (checked to give them back: exactly for
    constants, to 25 digits at every step of ``ORDER_STEPS`` for values in t), and the rule is
    proved equal to it for every input, or refuted, or left unknown (random numbers, sympy's
    limits). The order ``c+ > c- >= 0`` is checked exactly for constants and, for values that
    depend on t, at every step of ``ORDER_STEPS`` at 30 and 60 digits (``_at_steps``; ``c+ >=
    c-`` there, as a decay may end at sgd, and ``c+ > c-`` at step 1): a check, not a proof,
    of steps up to 10,000. "refuted" is said of the member those values make:
    a rule whose decay lives in a state (a step counter of its own) is refuted though it is a
    member, because its first steps cannot show the decay."""
    import optdsl
    from optdsl.equivalence import run_with_budget
    rule = optdsl.parse(rule) if isinstance(rule, str) else rule
    # the exact values and the members they make: sympy, so in a child under the deadline
    # (one rule, exp(sign(g) / (clip(adam, 1e-3) + 1e-8)) under a clip, ran for 20 minutes)
    late = [Proof("unknown", f"the exact values of u / g took more than {timeout:g} s")]
    first = None
    for item in run_with_budget(_members_child, (rule, beta), timeout, late):
        if isinstance(item, Proof):
            proof = item
        else:  # (member program, what it is)
            member, named = item
            proof = _for_every_step(optdsl.equivalent(optdsl.parse(member), rule,
                                                      timeout=timeout), named)
        if proof.proved:
            return proof
        first = first or proof
    return first


def _members_child(conn, rule, beta: float) -> None:
    """``family_proof``'s exact part, in a child process: sends a list with, per guess of
    ``c+`` and ``c-``, a final Proof or (member program text, what it is) to prove."""
    from optdsl import symbolic
    try:
        out = [_member(rule, values, beta) for values in _guesses(rule, beta)]
    except symbolic.Opaque:
        out = [Proof("unknown", "it draws random numbers: no exact proof")]
    except BaseException as e:  # noqa: BLE001 - a rule sympy cannot take is only 'not proven'
        out = [Proof("unknown", f"no exact values of u / g ({type(e).__name__}: {e})")]
    conn.send(out)
    conn.close()


def _guesses(rule, beta: float) -> list:
    """[(c+, c-, c0)] to try (``family_proof``): the constants of step 1 when the values at a
    symbolic step t are those at every step of ``SAME_STEPS`` (e.g. ``sign(1 - 0.9^t) = 1``),
    else the values in t and then the constants."""
    first, general = _exact_ratios(rule, beta, at=1), _exact_ratios(rule, beta)
    if not _depends_on_t(*general) or _agree(general, first, SAME_STEPS):
        return [first]
    return [general, first]


SAME_STEPS = (1, 2, 3, 10, 100, 300, 1000, 10_000)  # where values in t are compared (_agree)


def _agree(values, others, steps) -> bool:
    """Whether two lists of values (expressions in t, or numbers) agree to 25 digits at every
    one of ``steps``; False where one cannot be computed (``_at_steps``)."""
    import mpmath
    try:
        rows = zip(_at_steps(values, steps), _at_steps(others, steps))
        return all(abs(a - b) <= mpmath.mpf(10) ** -25 * max(abs(a), abs(b))
                   for (_, xs), (_, ys) in rows for a, b in zip(xs, ys))
    except Exception:  # noqa: BLE001 - not computable: not known to agree
        return False


def _at_steps(values, steps) -> list:
    """[(t, [each value at step t])] for ``t`` in ``steps``, as mpmath numbers (t one too, so
    that ``t^(t^2)`` is not an integer of 10^8 digits), the schedules by their own functions
    (``optdsl.schedules``). Each value is computed at 30 and at 60 digits; where the two differ
    by more than 1e-20 of it (a cancellation), or a value is not a finite real number, this
    raises."""
    import mpmath
    import sympy as sp
    from optdsl.schedules import SCHEDULES
    from optdsl.symbolic import T_SYMBOL
    functions = {name: s.fn for name, s in SCHEDULES.items()}
    at = [sp.lambdify(T_SYMBOL, v, modules=[functions, "mpmath"]) for v in values]
    rows = []
    for t in steps:
        computed = []
        for digits in (30, 60):
            with mpmath.workdps(digits):
                computed.append([mpmath.mpf(f(mpmath.mpf(t))) for f in at])
        for rough, fine in zip(*computed):
            if not (mpmath.isfinite(rough) and mpmath.isfinite(fine)):
                raise ValueError(f"u / g is not finite at step {t}")
            if abs(rough - fine) > mpmath.mpf(10) ** -20 * abs(fine):
                raise ValueError(f"u / g cannot be computed to 20 digits at step {t}")
        rows.append((t, computed[1]))
    return rows


def _member(rule, values, beta: float):
    """``family_proof`` for one guess of ``(c+, c-, c0)``: their order, the value where the ema
    is exactly 0 (``_at_zero_ema``) and the member as a program, (its text, what it is) for the
    proof, or a Proof that says why there is none."""
    import optdsl
    from optdsl import symbolic
    cp, cm, c0 = values
    try:
        disorder = _disorder(cp, cm)
        kind = _at_zero_ema(cp, cm, c0)
    except Exception as e:  # noqa: BLE001 - values that cannot be computed: not proven
        return Proof("unknown", f"u / g is {cp}, {cm} and {c0}, not computable ({e})")
    if disorder:
        return Proof("refuted", f"u / g is {cp} where the signs agree and {cm} where not: "
                                f"{disorder} (a member's is larger where they agree, and not "
                                "negative)")
    if kind is None:
        means = ((cp + cm) / 2, (cp * cm) ** 0.5)
        return Proof("refuted", f"u / g is {_short(c0, 6)} where ema(g, {beta!r}) is exactly 0 "
                                f"(after g = 1, -{beta!r}), where AddSign's is (c+ + c-) / 2 = "
                                f"{_short(means[0], 6)} and PowerSign's sqrt(c+ c-) = "
                                f"{_short(means[1], 6)} (c+ = {_short(cp, 6)}, c- = "
                                f"{_short(cm, 6)}{_gap(c0, means)}): the family's wherever the ema "
                                f"is not 0 only")
    try:  # the member as a program: exact when its constants print exactly
        plus, minus, zero = (symbolic.to_text(_without_hyperbolic(v)) for v in values)
        s, z = f"sign(g) * sign(ema(g, {beta!r}))", f"(1 - abs(sign(ema(g, {beta!r}))))"
        # at the rule's own lr default: equivalent compares rules at their defaults (the
        # library's powersign, lr=0.1, was refuted against a member at lr=1)
        lr = float(rule.defaults.get("lr", 1.0))
        form = f"(({plus}) * (1 + {s}) + ({minus}) * (1 - {s})) / 2"
        if kind == "powersign":  # s = 0: the geometric mean, not the (1 +- s) form's mean
            form = f"({form} * (1 - {z}) + ({zero}) * {z})"
        member = optdsl.parse(f"member(lr={lr!r}) = lr * g * {form}")
        if _depends_on_t(*values):  # its values in t: to 25 digits wherever the order was checked
            back = _agree(_exact_ratios(member, beta), values, ORDER_STEPS)
        else:
            back = all(symbolic.equal(x, y)
                       for x, y in zip(_exact_ratios(member, beta, at=1), values))
        if not back:
            raise optdsl.DSLError(f"{plus}, {minus}, {zero} do not read back exactly")
    except (optdsl.DSLError, symbolic.Opaque) as e:
        return Proof("unknown", f"u / g cannot be written in the language: {e}")
    shape = (f"u = lr g (({plus}) (1 + s) + ({minus}) (1 - s)) / 2" if kind == "addsign" else
             f"u = lr g ({plus}, {minus}, {zero}) where s = 1, -1, 0")
    return member.source, f"{shape}: " + _member_name(cp, cm, kind)


def _at_zero_ema(cp, cm, c0) -> str | None:
    """Which member ``c0`` (``u / g`` where the ema is exactly 0, s = 0) makes of ``c+, c-``:
    'addsign' where it is their mean ((alpha + 0) lr g), 'powersign' where it is their
    geometric mean (base^0 lr g, any base, the exponent decayed or not), else None (no
    member: the two differ there, an input that occurs). Constants exactly; values in t at
    ``SAME_STEPS`` to 25 digits."""
    if _same(c0, (cp + cm) / 2):
        return "addsign"
    if cm != 0 and _same(c0 ** 2, cp * cm):
        return "powersign"
    return None


def _same(a, b) -> bool:
    """Whether two values of u / g are equal: values in t at ``SAME_STEPS`` to 25 digits;
    numbers told apart at 50 digits before sympy is asked (its simplify ran for minutes on
    c+ / c- = (1 + e^(10^8 / (10^8 + 1))) / (1 + e^(-10^8 / (10^8 + 1))) against e^2), then
    equal exactly."""
    import sympy as sp
    from optdsl import symbolic
    if _depends_on_t(a, b):
        return _agree((a,), (b,), SAME_STEPS)
    return abs((a - b).evalf(50)) <= sp.Float(10, 50) ** -40 * (abs(b.evalf(50)) + 1) \
        and symbolic.equal(a, b)


def _without_hyperbolic(v):
    """``v`` with sympy's sinh, cosh, tanh, coth (which the language lacks) written with exp."""
    import sympy as sp
    from sympy.functions.elementary.hyperbolic import HyperbolicFunction
    return v.replace(lambda e: isinstance(e, HyperbolicFunction), lambda e: e.rewrite(sp.exp))


# family_proof: where the order of c+, c- that depend on t is checked: every step to 2,000,
# then every 10th to 10,000
ORDER_STEPS = tuple(range(1, 2001)) + tuple(range(2010, 10_001, 10))


def _disorder(cp, cm) -> str:
    """'' when ``c+ > c- >= 0`` (``family_proof``), else where that fails. Constants are
    compared exactly (to 30 digits); values that depend on t at every step of ``ORDER_STEPS``
    (``_at_steps``: a value it cannot compute raises): ``c+ >= c- >= 0`` there, with no
    tolerance, and ``c+ > c-`` at step 1."""
    if not _depends_on_t(cp, cm):
        if not bool((cp - cm).evalf(30) > 0):
            return "c+ <= c-"
        return "" if bool(cm.evalf(30) >= 0) else "c- < 0"
    for t, (a, b) in _at_steps((cp, cm), ORDER_STEPS):
        if b < 0:
            return f"c- < 0 at step {t}"
        if a < b or (t == 1 and not a > b):
            return f"c+ {'<' if a < b else '<='} c- at step {t}"
    return ""


def _member_name(cp, cm, kind: str) -> str:
    """What the member with these ``u / g`` values is called (``family_proof``; ``kind`` from
    ``_at_zero_ema``: where c+ / c- = e^2, the (1 +- s) form is AddSign with alpha = coth(1),
    PowerSign only where the ema is not 0); for values in t, told from their values at
    ``SAME_STEPS`` (a name, not a proof)."""
    import sympy as sp
    from optdsl import symbolic
    from optdsl.symbolic import T_SYMBOL
    if kind == "powersign" and _depends_on_t(cp, cm):
        if _same(cp * cm, sp.Integer(1)):
            return "powersign with a decay of its exponent (c+ c- = 1)"
        if _same(cp / cm, sp.exp(2)):
            lr = symbolic.to_text(_without_hyperbolic(cp * sp.exp(-1)))  # c+ = e x lr factor
            return f"powersign at lr x {lr} (a learning-rate decay)"
        return "powersign whose scale and base depend on t (a decay)"
    if kind == "powersign":
        base = "" if _same(cp / cm, sp.exp(2)) else f" with base {_short(sp.sqrt(cp / cm), 10)}"
        return f"powersign{base} at lr x {_short(sp.sqrt(cp * cm), 6)}"
    if _depends_on_t(cp, cm):
        alpha = (cp + cm) / (cp - cm)
        if _agree((alpha,), (alpha.subs(T_SYMBOL, 1),), SAME_STEPS):
            scale = symbolic.to_text(_without_hyperbolic((cp - cm) / 2))
            return (f"addsign with alpha = {_short(alpha.subs(T_SYMBOL, 1), 10)} at lr x {scale} "
                    "(a learning-rate decay)")
        return "addsign whose scale and alpha depend on t (a decay)"
    return f"addsign at lr x {_short((cp - cm) / 2, 6)} with alpha = {_short((cp + cm) / (cp - cm), 10)}"


def _gap(c0, means) -> str:
    """Where ``c0`` misses the nearer of the two means by less than its six digits show: by
    how much (``exp(1/(1+1e-8))``-like constants: 1 against sqrt(c+ c-) = exp(-1e-8))."""
    try:
        gaps = [abs(float((c0 - m) / m)) for m in means if m != 0]
    except (TypeError, OverflowError, ZeroDivisionError):
        return ""
    near = min(gaps, default=1.0)
    return f"; c0 is {near:.1e} from the nearer, relatively" if 0 < near < 1e-5 else ""


def _short(x, digits: int) -> str:
    """A sympy number in ``digits`` significant digits (past float's range too)."""
    import math
    import sympy as sp
    try:
        f = float(x)
    except (OverflowError, TypeError):
        f = math.inf
    if (math.isfinite(f) and f != 0) or x == 0:
        return f"{f:.{digits}g}"
    return str(sp.N(x, digits))  # past float's range, or a nonzero that underflows to 0


def _depends_on_t(*values) -> bool:
    from optdsl.symbolic import T_SYMBOL
    return any(T_SYMBOL in v.free_symbols for v in values)


def _for_every_step(verdict, named: str) -> Proof:
    """A proof for every step is a proof: ``optdsl.equivalent`` says proved only for one (the
    same step with states matched, or an induction with states matched up to factors); the
    first k steps unrolled are unknown there already (states may part later). An induction
    with factors was taken for unknown here, and a report said 'not proved ... proved
    equivalent'."""
    return Proof(verdict.status, f"{named}: {verdict}")


def _exact_ratios(rule, beta: float = 0.9, at=None) -> tuple:
    """(c+(t), c-(t), c0(t)): ``u / g`` of ``rule`` (lr = 1, other hyperparameters at their
    defaults) at step t, exact sympy expressions in ``t`` (``symbolic.T_SYMBOL``; numbers when
    they do not depend on it), or at step ``at`` when given (numbers: the rule's own first
    steps): ``c+`` from a first step at t on ``g = 1`` (the signs agree), ``c-`` from the step
    after it on ``g = -1/10`` (where ``m = ema(g, beta)`` is ``(1 - beta)(beta - 1/10) > 0``:
    they disagree), ``c0`` from the step after ``g = 1`` on ``g = -beta``, where ``m`` is
    exactly 0 (``s = 0``: an input that occurs, e.g. 1, -0.9 in float64), each moved back to
    step t. The states start from their initial values at step t, as after steps of zero
    gradient: for a member, whose ``u / g`` depends only on t and the signs, these are its
    values at every step (and the proof, not this, decides). Not simplified (sympy would
    rationalise ``1 / (sqrt(2) + 1e-8)`` into integers of 17 digits, which a program cannot
    hold exactly)."""
    import sympy as sp
    from optdsl.symbolic import T_SYMBOL, exact_updates
    if not beta > 0.1:
        raise ValueError(f"beta {beta}: the second step's g must disagree with m (beta > 0.1)")
    seconds = (sp.Rational(-1, 10), -sp.Rational(str(beta)))  # s = -1, then s = 0
    runs = [exact_updates(rule, (sp.Integer(1), g), {"lr": 1}, t0=at or T_SYMBOL) for g in seconds]
    later = [u / g for (_, u), g in zip(runs, seconds)]
    if not at:
        later = [v.subs(T_SYMBOL, T_SYMBOL - 1) for v in later]
    return (runs[0][0], *later)


def match_proof(rule, target, timeout: float = 10.0) -> Proof:
    """Prove with ``optdsl.equivalent`` that ``rule`` is ``target`` (a rule, at its defaults)
    up to a constant factor of the learning rate: the factor is the ratio of their first
    updates on ``g = 1``, computed exactly (sympy, in a child under the deadline, as the
    proof), and ``target``'s ``lr`` is mapped to it times the rule's (what
    ``match:TARGET``'s top score means, proved)."""
    import optdsl
    from optdsl.equivalence import run_with_budget
    rule = optdsl.parse(rule) if isinstance(rule, str) else rule
    target = optdsl.resolve(target) if isinstance(target, str) else target
    if "lr" not in target.hypers or "lr" not in rule.hypers:
        return Proof("unknown", "the target or the rule has no lr to scale")
    late = Proof("unknown", f"the exact factor took more than {timeout:g} s")
    scale = run_with_budget(_factor_child, (rule, target), timeout, late)
    if isinstance(scale, Proof):
        return scale
    at_defaults = {h: repr(float(v)) for h, v in target.defaults.items() if h != "lr"}
    try:
        verdict = optdsl.equivalent(target, rule, timeout=timeout,
                                    hyper_map={**at_defaults, "lr": f"({scale}) * lr"})
    except optdsl.DSLError as e:
        return Proof("unknown", str(e))
    return _for_every_step(verdict, f"{target.name} at lr x {scale}")


def _factor_child(conn, rule, target) -> None:
    """``match_proof``'s exact part, in a child process: sends the factor of lr as text (the
    ratio of the first updates on ``g = 1``), or the final Proof when there is none."""
    import sympy as sp
    from optdsl import symbolic
    try:
        ours, theirs = (symbolic.exact_updates(r, (sp.Integer(1),), {"lr": 1})[0]
                        for r in (rule, target))
        factor = ours / theirs  # not simplified: see _exact_ratios
        if not (factor.is_number and bool(factor.evalf(30) > 0)):
            out = Proof("refuted", f"the first updates on g = 1 are {ours} and {theirs}")
        else:
            out = symbolic.to_text(factor.rewrite(sp.exp))
    except symbolic.Opaque:
        out = Proof("unknown", "it draws random numbers: no exact proof")
    except BaseException as e:  # noqa: BLE001 - only 'not proven'
        out = Proof("unknown", f"no exact factor ({type(e).__name__}: {e})")
    conn.send(out)
    conn.close()


def _scale(mine, theirs, rtol: float = 1e-6):
    """c > 0 with mine == c * theirs on the probes (both finite, not all zero), else None."""
    if mine is None or theirs is None or mine.shape != theirs.shape:
        return None
    if not (bool(torch.isfinite(mine).all()) and bool(torch.isfinite(theirs).all())):
        return None
    den = float((theirs * theirs).sum())
    if den == 0.0:
        return None
    c = float((mine * theirs).sum()) / den
    if c <= 0 or not torch.allclose(mine, c * theirs, rtol=rtol, atol=1e-12 * abs(c)):
        return None
    return c


def without_drop(text: str) -> str:
    """``text`` with every ``drop(x, rate)`` replaced by ``(x)``: its expectation where the
    dropout enters linearly (``drop`` is inverted dropout, E drop(x) = x)."""
    while True:
        m = re.search(r"\bdrop\s*\(", text)
        if not m:
            return text
        depth, comma, i = 1, None, m.end()
        while depth:
            ch = text[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 1:
                comma = i
            i += 1
        text = text[:m.start()] + "(" + text[m.end():comma] + ")" + text[i:]


_LIBRARY: dict = {}


def _library_candidate(name: str):
    """A library rule as a search candidate (key and probe updates), cached; None if it fails."""
    from optdsl.library import library
    from .candidate import build
    if name not in _LIBRARY:
        try:
            _LIBRARY[name] = build(library[name])
        except Exception:
            _LIBRARY[name] = None
    return _LIBRARY[name]


def known_as(text: str, names=None, _drop_free: bool = True) -> str:
    """'≡ adam', '≈ powersign', '∝ 0.2 × momentum', '∈ addsign family', 'drop-free: ...' or ''
    (see the module docstring)."""
    import optdsl
    from optdsl.library import library
    from optdsl.probes import is_random
    from .candidate import build
    rule = optdsl.parse(text)
    me = build(rule, text=text)
    mine = me.updates[0] if me.updates else None
    numeric = scaled = None
    for name in names or sorted(library):
        lib = _library_candidate(name)
        if lib is None:
            continue
        if lib.key == me.key:
            return f"≡ {name}"
        theirs = lib.updates[0] if lib.updates else None
        if mine is None or theirs is None:
            continue
        if numeric is None and torch.allclose(mine, theirs, rtol=1e-6, atol=1e-12):
            numeric = f"≈ {name}"
        if scaled is None:
            c = _scale(mine, theirs)
            if c is not None:
                scaled = f"∝ {c:.4g} × {name} (= {name} at {c:.4g} × lr)"
    if numeric or scaled:
        return numeric or scaled
    fam = family(rule)
    if fam:
        return f"∈ {fam} family"
    if _drop_free and is_random(rule) and "drop" in text:
        free = without_drop(text)
        if free != text:
            try:
                if not is_random(optdsl.parse(free)):
                    inner = known_as(free, names, _drop_free=False)
                    if inner:
                        return f"drop-free form {inner}"
            except Exception:
                pass
    return ""


def funnel(candidates: list, runner, task: str, protocol: dict, top: int = 5,
           time_limit: float | None = None, seeds=None, name: bool = True) -> list:
    """Re-run the ``top`` best of ``candidates`` ([{'rule', 'score'}]) on ``task`` under
    ``protocol`` through ``runner``; rows sorted by the new score, each with ``known_as``.

    ``seeds``: protocol seeds to re-run each candidate under (default: the protocol's own).
    Under the single-seed protocol each seed is one job and a row's ``score`` is the mean over
    the seeds (``scores``: one per seed, None where the candidate diverged or failed; a
    candidate that is not ok under every seed has no score). Under the multi-seed protocol
    (``search/fidelity.py``) it is one job of the full rung with ``seeds`` as its seed set:
    ``score`` is that rung's score, with its standard error ``score_se``.
    ``name=False`` leaves ``known_as`` empty (naming costs a pass over the library per rule).
    """
    best = sorted((c for c in candidates if c.get("score") is not None),
                  key=lambda c: -c["score"])[:top]
    if protocol.get("protocol", 1) == 2:
        configs = [{**protocol, "seeds": list(seeds or protocol["seeds"]), "screen": None}]
    else:
        configs = [{**protocol, "seed": seed} for seed in (seeds or [protocol["seed"]])]
    tickets = {}
    for i, c in enumerate(best):
        for k, config in enumerate(configs):
            job = {"rule": c["rule"], "task": task, "protocol": config, "time_limit": time_limit}
            tickets[runner.submit(job)] = (i, k)
    results = [[None] * len(configs) for _ in best]
    while tickets:
        for ticket, result in runner.wait(timeout=0.5):
            i, k = tickets.pop(ticket)
            results[i][k] = result
    rows = []
    for c, res in zip(best, results):
        scores = [r.get("score") if r["status"] == "ok" else None for r in res]
        ok = all(x is not None for x in scores)
        statuses = sorted({r["status"] for r in res})
        rows.append({"rule": c["rule"], "proxy_score": c["score"],
                     "score": sum(scores) / len(scores) if ok else None, "scores": scores,
                     "score_se": res[0].get("score_se") if ok and len(res) == 1 else None,
                     "status": "ok" if ok else "/".join(statuses),
                     "best_lr": res[0].get("best_lr"), "best_lrs": [r.get("best_lr") for r in res],
                     "name": c.get("name") or "",
                     "known_as": known_as(c["rule"]) if name else ""})
    return ranked(rows)


def ranked(rows: list) -> list:
    """Rows by score, best first; those without a score (diverged, failed) last."""
    return sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
