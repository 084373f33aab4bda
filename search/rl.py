"""The reinforcement-learning strategy: an LSTM controller that emits a grammar's decisions.

As in Neural Optimizer Search (Bello et al. 2017) and NAS (Zoph & Le 2017): an LSTM runs over
the sequence of decisions of a program (``search.space``); at each step its input is the
embedding of the previous choice plus the embedding of the decision being made, and a softmax
head for that decision's rule (masked to the choices the grammar allows there) gives the
policy. Rewards are the candidate's score (0 for a degenerate, diverged or failed one). The
batch of programs is drawn in lockstep (one controller step per decision position for all of
them) and replayed in one padded pass, so the controller costs about 1 ms per draw. Every
``batch`` rewards the controller takes a step:

* ``reinforce``: ``-A * log pi(a)``, the advantage ``A = r - b``, ``b`` a moving average of
  rewards (decay 0.9); with ``normalize`` ``A = (r - mean) / std`` over the batch. Measured on
  ``match:powersign``/``addsign`` (seeds 0, 1, 3,000 evaluations): raw, nearly every reward is
  within 0.05 of 0 and the entropy bonus of 0.05 keeps the policy near uniform (the mean
  reward of a batch stays ~0.003, as random sampling's); normalized, the policy collapses onto
  its first fair programs (99.7% of its draws duplicates, 923-1,409 new candidates before it
  gave up, best no better than random's). Neither reached the family; raw stays the default;
* ``ppo``: the clipped surrogate of Schulman et al. 2017 (``epochs`` passes over the batch,
  ratio clipped to ``1 +- clip``) with the same baseline;
* ``pqt``: priority-queue training (Abolafia et al. 2018, "Neural Program Synthesis with
  Priority Queue Training"): the log-likelihood of the ``queue`` best programs evaluated so far
  (the policy becomes a generative model around the best programs);

``risk`` < 1 (REINFORCE/PPO) learns only from the best ``risk`` fraction of each batch, with
their quantile as the baseline (risk-seeking policy gradient, Petersen et al. 2021, "Deep
symbolic regression"). ``edit`` > 0: that fraction of the draws start from one of the
``queue`` best programs with one decision left open, which the policy makes (with the
subtree it opens): policy-guided mutation of the best programs, a hybrid in the spirit of
neural-guided genetic programming (Mundhenk et al. 2021). The controller reads the parent's
kept decisions in rendering order as it would its own (teacher-forced: its input, not its
choice), so it makes the open ones knowing the decisions before them (it reads left to right:
not those after, nor, with ``reopen=choice``, the open node's kept children), and it learns
the choices it made in that context, not the parent's. (Until the twenty-second session an
edit's open decision was drawn from the controller's first step, blind to the program, and
learned as if the policy had written the whole child, the parent's kept choices included: the
policy that acted was not the one that learned; BENCHMARKS.md.) ``reopen``: what an edit
opens: ``subtree`` (the default) the decision and everything under it, ``choice`` the
decision only, keeping the children that line up with the new choice's (``add`` -> ``mul``
keeps both operands), as evolution's ``Space.mutate`` does (which, unlike this, never picks
the old choice again: here the policy may, and the child is then its parent, a repeat). With
``neutral`` a draw that duplicates an evaluated program joins that queue at the program's
reward (neutral drift, as evolution's; it did not reach the family on match:powersign either,
BENCHMARKS.md);
``structural``: that fraction of the edits changes the parent's structure with one of
evolution's operators (insert, delete, combine), whose new part the policy makes (an inserted
group's function and its other operand, the fed one read as it is; the function that joins
two parents, where ``keep_left`` leaves the second's groups dead code, a failure learned at
no evaluation), and opens nothing else; a delete makes nothing (it is evaluated and moves the
baseline, and teaches the policy nothing); where the operator does not apply (a program with
the most groups, a one-group delete) the edit is a plain one. (Until the twenty-third session
the new parts came from the prior and one more decision was then left open for the policy:
two changes in one edit, where evolution's operators make one; BENCHMARKS.md.)
``parents``: where edits start. ``queue`` (the default) picks one of the ``queue`` best
programs at random; ``population`` is regularized evolution's parent (``search.evolution``):
the best program so far with probability ``elite``, else the best of ``sample`` members of
an ageing population of the last ``population`` evaluated programs (and, with ``neutral``,
of the duplicates drawn, which join it at their program's score). With drift a queue of the
best fills with variants of one program (match:powersign seed 0, 2,000 evaluations: 16
re-encodings of one rule scoring 0.399, never sgd's 0.539); the ageing population keeps
turning over, as evolution's does. On match tasks RL runs as policy-guided evolution by
default (``search.cli.MATCH_DEFAULTS``: ``edit=0.9 structural=0.5 neutral=1 prior=0.85
prior_programs=curriculum band=0.5 parents=population anchor=prior``), the RL setting that has
reached the PowerSign/AddSign family most often (BENCHMARKS.md, "RL's policy held near its
prior").
``prior`` > 0 starts the policy from the library prior of
``Space.prior`` (the operands the warm-start library rules use) instead of uniform;
``prior_programs=FILE`` adds the programs of a file to what that prior counts (as evolution's,
see ``search.evolution``). ``anchor``: what the bonus below pulls the policy towards:
``uniform`` (the default: the entropy) or ``prior`` (minus the KL divergence from the prior, as
KL-regularised policy gradient keeps a policy near a reference; the default on match tasks). In
a banded match search most draws are learned as failures (far, degenerate, dead code), batches
then carry no advantage, and with the entropy the policy drifted 5.5-5.7 nats per program from
its prior by 2,000 evaluations (``match:addsign``, twenty-third session's defaults), towards
uniform, the share of its draws using ``sign`` falling from 0.56 to 0.29, ``sqrt`` from 0.66 to
0.30 and a state from 0.97 to 0.69: the parts AddSign is made of. It reached a member in 4 of
10 ``match:addsign`` and 3 of 10 ``match:powersign`` searches; held at its prior (``lr=1e-9``)
in 8 and 10 of 10, anchored at it (0.06-0.09 nats per program by the end) in 9 and 9 of 10
(seeds 0-9): what the learning adds beside the prior is not measurable in these runs, what the
entropy took away was (BENCHMARKS.md, "RL's policy held near its prior", with seeds 10-19;
``benchmarks/rl_policy_drift.py``). (Under earlier code, the twelfth session, the anchor
measured no gain: 4 of 10 and 2 of 5.) ``far``: how an edit outside the band is learned from:
``fail`` (the default: as a degenerate draw) or ``baseline`` (without an advantage, as a
repeat): a banded search rejects about 8 draws per evaluation as far, and learned as failures
they teach the policy to make only the choices that keep a child near its parent. ``warm``
(Bello's spaces only): the first candidates are the library's warm-start programs, evolution's
(``search.evolution.BELLO_WARM``: sgd, momentum, signSGD, signum, Adam, RMSprop), so edits
start from them as evolution's mutations do, instead of from the policy's first draws; each is
learned from with its log-probability under the policy. ``advantage``: what an evaluated
edit's reward is measured against: ``baseline`` (the default: the moving average of rewards,
as a fresh draw's) or ``parent`` (its parent's score: the improvement the edit made; draws
learned without an evaluation, far, degenerate or dead code, keep the baseline: measured
against their parent too, their failures outweighed everything and the policy collapsed onto
one program within 1,100 evaluations of ``match:powersign``). With the baseline an edit of a
good parent is learned as a good draw whatever the edit did, as the child of a band stays near
its parent: the policy learns to make the programs of good parents again, and any edit that
leaves one nearly as it was (a small term in p: ``+ 0.1 p``). Measured with ``warm``
(BENCHMARKS.md): a proved member in 3 of 5 ``match:powersign`` searches on seeds 0-4 against 0
of 5 with the baseline, but 0 of 3 on seeds 5-7; 1 of 5 ``match:addsign`` ones against 3 of 5:
not a default. All three
take an entropy bonus (0.05 by default: with 0.01 the policy narrowed onto a few programs,
96% and 98% of the draws of rediscovery seeds 1 and 4 were duplicates and seed 4 ran out of new
candidates at 933 of 1,000 evaluations; with 0.05, 62% and 80%, both reached the budget;
BENCHMARKS.md). Degenerate and dead-code draws are rewarded at once (the fail reward) without an
evaluation (``SpaceStrategy``), so the controller also learns to avoid them for free.

A draw that repeats an evaluated program (``repeats``) is learned from, by default
(``baseline``), as a draw without an advantage: it enters the loss through the entropy bonus
only (no reward statistic counts it), so a policy that narrows onto known programs still takes
steps, and they widen it. The other choices, measured on the MNIST-1D MLP (2,000 evaluations,
BENCHMARKS.md): ``skip`` (the default until 2026-12-01) learns nothing from a repeat, so a
policy that had collapsed took no step at all (seed 1: 97% of 38,197 draws were duplicates,
80 controller steps, the search ran dry at 1,059); ``fail`` rewards it as a failure, which kept
the searches going (seeds 0, 2) but pushed the policy out of the good region: the median
screening accuracy of its proposals rose to 0.52 by 400 evaluations, then fell to chance
(0.10) by 800-1,300 and climbed back only once; ``baseline`` (seed 1) held 0.49-0.55 from
300 to 2,000 evaluations. ``score`` (its earlier score) made the policy collapse onto a few
known rules in the first rediscovery runs (96% of the draws duplicates).

The whole controller (weights, Adam moments, baseline, the batch being gathered, the random
state) is in ``state_dict`` as exact float32 bytes, so ``--resume`` continues the same run.
"""
from __future__ import annotations

import base64

import numpy as np
import torch
from torch import nn

from .errors import SearchError
from .filters import NEAR
from .space import Tree
from .strategies import STRATEGIES, SpaceStrategy, drift_join, join, tournament_member


def _pack(t: torch.Tensor) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def _unpack(d: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(d["b64"]), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(a.copy())


class Controller(nn.Module):
    """LSTM policy over the decisions of a space, run on a batch of programs at once.

    One head (hidden -> every choice of every rule, rule by rule) stands for the per-rule
    softmax heads: a decision's logits are its rule's slice, masked to the allowed choices.
    """

    def __init__(self, n_choices: dict, hidden: int = 32):
        super().__init__()
        self.rules = sorted(n_choices)
        self.kind_of = {r: i for i, r in enumerate(self.rules)}
        self.offset, total = {}, 1  # token 0: start
        for r in self.rules:
            self.offset[r] = total
            total += n_choices[r]
        self.total = total
        self.token = nn.Embedding(total, hidden)
        self.kind = nn.Embedding(len(self.rules), hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, total)
        nn.init.zeros_(self.head.weight)  # start uniform: the grammar's own prior
        nn.init.zeros_(self.head.bias)
        self.hidden = hidden
        self._masks: dict = {}
        self.anchor = None  # log-weights the bonus pulls the policy towards (None: uniform)

    def start_from(self, prior: dict, anchor: bool = False) -> None:
        """Make the initial policy ``prior`` ({rule: weights}, ``Space.prior``): log-weights
        as the head's bias; with ``anchor`` the bonus of :meth:`replay` pulls towards it."""
        with torch.no_grad():
            for rule, weights in prior.items():
                w = torch.tensor(weights, dtype=torch.float32)
                self.head.bias[self.offset[rule]:self.offset[rule] + len(w)] = torch.log(w / w.sum())
        if anchor:
            self.anchor = self.head.bias.detach().clone()

    def mask(self, rule: str, allowed) -> torch.Tensor:
        """0 on the allowed choices of ``rule`` (as token indexes), -1e9 elsewhere (finite: an
        infinite mask makes the entropy's gradient NaN)."""
        key = (rule, tuple(allowed))
        if key not in self._masks:
            m = torch.full((self.total,), -1e9)
            m[[self.offset[rule] + i for i in allowed]] = 0.0
            self._masks[key] = m
        return self._masks[key]

    def step(self, state, prev, rules):
        """One step for a batch: (new state, masked-free logits over all tokens)."""
        kinds = torch.tensor([self.kind_of[r] for r in rules])
        h, c = self.cell(self.token(prev) + self.kind(kinds), state)
        return (h, c), self.head(h)

    def zero_state(self, n: int):
        z = torch.zeros(n, self.hidden)
        return z, z.clone()

    def replay(self, sequences: list, temperature: float = 1.0, made: list | None = None):
        """(sum of log-probs, sum of bonuses) per recorded decision sequence, in one batched
        pass: sequences padded to the longest, padding masked out. ``made``: per sequence, the
        positions the policy chose (None: all); the others are read as context only (an
        edit's kept decisions), counted in neither sum. A step's bonus is the
        policy's entropy, or with an ``anchor`` minus its KL divergence from the anchor's
        policy, KL(pi || anchor) = sum pi (log pi - log anchor) over the allowed choices (the
        entropy is minus the KL from uniform, up to a constant)."""
        n, length = len(sequences), max(len(s) for s in sequences)
        made = [None if m is None else set(m) for m in (made or [None] * n)]
        state = self.zero_state(n)
        prev = torch.zeros(n, dtype=torch.long)
        logp, ent = torch.zeros(n), torch.zeros(n)
        for k in range(length):
            counted = [i for i, s in enumerate(sequences)
                       if k < len(s) and (made[i] is None or k in made[i])]
            rules = [sequences[i][k][0] if k < len(sequences[i]) else self.rules[0]
                     for i in range(n)]
            state, logits = self.step(state, prev, rules)
            masks = torch.stack([self.mask(sequences[i][k][0], sequences[i][k][2])
                                 if k < len(sequences[i]) else torch.zeros(self.total)
                                 for i in range(n)])
            lp = torch.log_softmax(logits / temperature + masks, 1)
            choice = torch.tensor([self.offset[sequences[i][k][0]] + sequences[i][k][1]
                                   if k < len(sequences[i]) else 0 for i in range(n)])
            on = torch.zeros(n)
            on[counted] = 1.0
            picked = lp.gather(1, choice[:, None])[:, 0]
            if self.anchor is None:
                plogp = lp.exp() * lp
            else:
                plogp = lp.exp() * (lp - torch.log_softmax(self.anchor + masks, 1))
            logp = logp + on * picked
            ent = ent - on * plogp.sum(1)
            prev = choice
        return logp, ent


class RLStrategy(SpaceStrategy):
    """LSTM controller trained by REINFORCE (default) or PPO (see the module docstring)."""
    name = "rl"
    makes_children = True  # its edits (``edit`` > 0)
    REPEATS = ("baseline", "fail", "skip", "score")  # what a repeat teaches (module docstring)

    def __init__(self, seed: int = 0, space: str = "bello", use_filter: bool = True,
                 space_obj=None, live_only: bool = True, near: float = NEAR, horizon: int = 0,
                 algo: str = "reinforce", batch: int = 16, lr: float = 0.01,
                 entropy: float = 0.05, hidden: int = 32, baseline_decay: float = 0.9,
                 epochs: int = 4, clip: float = 0.2, temperature: float = 1.0,
                 prior: float = 0.0, risk: float = 1.0, queue: int = 16, edit: float = 0.0,
                 normalize: bool = False, neutral: float = 0.0, structural: float = 0.0,
                 repeats: str = "baseline", parents: str = "queue", population: int = 32,
                 sample: int = 4, elite: float = 0.2, prior_programs: str = "",
                 band: float = 0.0, anchor: str = "uniform", far: str = "fail",
                 warm: bool = False, advantage: str = "baseline", reopen: str = "subtree",
                 without: str = ""):
        from .strategies import require, require_fraction
        require("batch", batch, at_least=1)
        require("lr", lr, above=0)
        require("entropy", entropy, at_least=0)
        # (the controller, with its Adam moments, is saved with the search after every round)
        require("hidden", hidden, at_least=1, at_most=512)
        require("epochs", epochs, at_least=1)
        require("clip", clip, above=0)
        require("temperature", temperature, above=0)  # the logits are divided by it
        require("prior", prior, at_least=0, below=1)  # 1: log(0) biases for unused choices
        require("risk", risk, above=0, at_most=1)
        require("queue", queue, at_least=1)
        require("population", population, at_least=1)
        require("sample", sample, at_least=1)
        require_fraction(baseline_decay=baseline_decay, edit=edit, neutral=neutral,
                         structural=structural, elite=elite)
        if band and not edit:
            raise ValueError("band judges an edit against the program it edits: it needs "
                             "edit > 0 (--strategy-option edit=0.9)")
        super().__init__(seed=seed, space=space, use_filter=use_filter, space_obj=space_obj,
                         live_only=live_only, near=near, horizon=horizon, band=band,
                         without=without)
        if algo not in ("reinforce", "ppo", "pqt"):
            raise ValueError(f"algo must be reinforce, ppo or pqt, not {algo!r}")
        if repeats not in self.REPEATS:
            raise ValueError(f"repeats must be one of {', '.join(self.REPEATS)}, not {repeats!r}")
        self.repeats = repeats
        if anchor not in ("uniform", "prior"):
            raise ValueError(f"anchor must be uniform or prior, not {anchor!r}")
        if far not in ("fail", "baseline"):
            raise ValueError(f"far must be fail or baseline, not {far!r}")
        self.far = far
        if advantage not in ("baseline", "parent"):
            raise ValueError(f"advantage must be baseline or parent, not {advantage!r}")
        if advantage == "parent" and (not edit or algo == "pqt" or risk < 1.0 or normalize):
            raise ValueError("advantage=parent measures an edit against the program it edits: it "
                             "needs edit > 0, and algo reinforce or ppo without risk or normalize")
        self.advantage = advantage
        if reopen not in ("subtree", "choice"):
            raise ValueError(f"reopen must be subtree or choice, not {reopen!r}")
        self.reopen = reopen
        if parents not in ("queue", "population"):
            raise ValueError(f"parents must be queue or population, not {parents!r}")
        self.parents, self.population_size, self.sample_size = parents, population, sample
        self.p_elite = elite
        self.population: list = []  # [tree json, reward], oldest first (parents=population)
        torch.manual_seed(seed)
        self.controller = Controller(self.space.n_choices, hidden)
        self.prior = None  # the library prior (Space.prior): the policy's start, the anchor's
        from .evolution import library_programs
        library = library_programs(space, space_obj)  # the warm starts: Bello's spaces only
        if warm and not library:
            raise ValueError("warm starts from the library rules written in the stock Bello "
                             "spaces (bello, bello4), which this search does not use")
        # program texts not yet drawn
        self.warm = [text for text in library if self.space.contains(text)] if warm else []
        learned = self.space.read_programs(prior_programs, prior) if prior_programs else []
        if prior and (library or learned):
            self.prior = self.space.prior(library + learned, prior)
        if anchor == "prior" and self.prior is None:
            raise ValueError("anchor=prior pulls the policy towards its prior: it needs one "
                             "(prior > 0, e.g. --strategy-option prior=0.85, and on a space "
                             "other than bello prior_programs=FILE)")
        if self.prior is not None:
            self.controller.start_from(self.prior, anchor=anchor == "prior")
        self.opt = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.algo, self.batch_size, self.entropy = algo, batch, entropy
        self.baseline_decay, self.epochs, self.clip = baseline_decay, epochs, clip
        self.temperature, self.risk, self.queue_size, self.edit = temperature, risk, queue, edit
        self.normalize, self.neutral, self.structural = normalize, neutral, structural
        self.neutral_joins = 0
        self.queue: list = []  # [reward, decisions, tree json] of the best evaluated programs
        self.baseline = None
        # [decisions, reward, old logp, parent's score or None, positions made or None (all)]
        self.buffer: list = []
        self.updates = 0
        self.curve: list = []  # [update, mean reward of its batch, baseline]

    # --- drawing ------------------------------------------------------------------------------
    def _draws(self, k: int) -> list:
        """``k`` draws: the warm-start programs not yet drawn first (``warm``; learned from as
        the policy's own draws, so with their log-probability under it), then the policy's."""
        out = []
        while self.warm and len(out) < k:
            tree = self.space.parse(self.warm.pop(0))
            decisions = self.space.decisions_of(tree)
            with torch.no_grad():
                logp, _ = self.controller.replay([decisions], self.temperature)
            out.append((tree, [decisions, float(logp[0]), None, None]))
        return out + self._policy_draws(k - len(out))

    def _policy_draws(self, k: int) -> list:
        """``k`` programs decoded in lockstep: one controller step per decision position for
        the whole batch (each program's grammar walk is a ``Space.steps`` generator)."""
        ctl, rng = self.controller, self.rng
        parents = self.population if self.parents == "population" else self.queue
        edits = [self._edited() if parents and rng.random() < self.edit else (None, None, None)
                 for _ in range(k)]
        starts = [start for start, _, _ in edits]
        # an edit's walk shows the parent's kept decisions too: the controller reads them as
        # context (its input, not its choice), so it makes the open ones knowing what precedes
        # them
        walks = [self.space.steps(start, show_kept=True) for start in starts]
        requests = [next(w) for w in walks]
        decisions = [[] for _ in range(k)]
        made = [[] for _ in range(k)]  # the positions the policy chose
        logps = [0.0] * k
        trees = [None] * k
        state = ctl.zero_state(k)
        prev = torch.zeros(k, dtype=torch.long)
        live = list(range(k))
        with torch.no_grad():
            while live:
                idx = torch.tensor(live)
                sub = (state[0][idx], state[1][idx])
                (h, c), logits = ctl.step(sub, prev[idx], [requests[i][0] for i in live])
                state[0][idx], state[1][idx] = h, c
                masks = torch.stack([ctl.mask(*requests[i][:2]) for i in live])
                probs = torch.softmax(logits / self.temperature + masks, 1).double().numpy()
                still = []
                for row, i in enumerate(live):
                    rule, allowed = requests[i][:2]
                    if len(requests[i]) == 3:  # a kept decision of an edit's parent
                        pick = requests[i][2]
                    else:
                        p = probs[row, [ctl.offset[rule] + a for a in allowed]]
                        if not p.sum() > 0:  # NaN, or logits beyond the mask's -1e9
                            raise SearchError(
                                "the RL controller's policy gives the grammar's choices no "
                                f"probability (its logits overflowed at lr="
                                f"{self.opt.param_groups[0]['lr']:g}): lower "
                                "--strategy-option lr")
                        pick = allowed[min(int(np.searchsorted(
                            np.cumsum(p), rng.random() * p.sum(), side="right")),
                            len(allowed) - 1)]
                        made[i].append(len(decisions[i]))
                        logps[i] += float(np.log(max(p[allowed.index(pick)] / p.sum(), 1e-30)))
                    decisions[i].append((rule, pick, list(allowed)))
                    prev[i] = ctl.offset[rule] + pick
                    try:
                        requests[i] = walks[i].send(pick)
                        still.append(i)
                    except StopIteration as done:
                        trees[i] = done.value
                live = still
        for t, (_, parent, _) in zip(trees, edits):
            if parent is not None:
                self.parent_of[id(t)] = parent
        # meta: [decisions, log-prob of the ones made, the parent's score (an edit) or None (a
        # fresh draw), the positions made (an edit) or None (a fresh draw: all)]
        return [(t, [d, lp, score, None if start is None else m])
                for t, d, lp, start, m, (_, _, score)
                in zip(trees, decisions, logps, starts, made, edits)]

    def _edited(self) -> tuple:
        """(a parent (``_parent``) with one decision left open, the parent, its score): the
        policy makes that decision and whatever it changes downstream (policy-guided mutation),
        reading the kept decisions as context (``_policy_draws``). The open node's subtree is
        opened with it (``reopen=subtree``), or its children that line up with the new choice's
        are kept, as evolution's ``Space.mutate`` keeps them (``reopen=choice``). A
        ``structural`` edit opens the new part of a structural operator's child instead."""
        parent, score = self._parent()
        tree = parent.copy()
        if self.structural and self.rng.random() < self.structural:
            changed = self._restructured(tree)
            if changed is not None:
                return changed, parent, score
        node = self.rng.choice(self.space.mutable_nodes(tree))
        node.alt, node.value = -1, None
        if self.reopen == "subtree":
            node.children = []
        return tree, parent, score

    def _parent(self) -> tuple:
        """(a program, its score): a queued program at random, or (``parents=population``)
        regularized evolution's parent: the best program so far with probability ``elite``,
        else the best of ``sample`` members of the ageing population."""
        if self.parents == "population":
            if self.queue and self.rng.random() < self.p_elite:
                reward, _, member = self.queue[0]
            else:
                member, reward = tournament_member(self.population, self.sample_size, self.rng)
        else:
            reward, _, member = self.rng.choice(self.queue)
        return Tree.from_json(member), reward

    def _restructured(self, tree: Tree) -> Tree | None:
        """``tree`` changed by one of evolution's structural operators (insert a group, delete
        one, or combine it with another parent), the new group's decisions left open for the
        policy (an inserted group's function and other operand, the function joining two
        parents; a delete has none; ``Space._finish``): one change, as evolution's operators
        make; None where the operator does not apply."""
        other, _ = self._parent()
        operators = (self.space.insert, self.space.delete,
                     lambda t, rng, **kw: self.space.combine(t, other, rng, **kw))
        made = self.rng.choice(operators)(tree, self.rng, prior=self.prior, leave_open=True)
        return made[0] if made is not None else None

    # --- learning --------------------------------------------------------------------------------
    def _learn_far(self, tree: Tree, meta) -> None:
        """``far=baseline``: an edit outside the band is a draw without an advantage, as a
        repeat is: the band is where the search looks, not what the program is worth."""
        self._learn(tree, None if self.far == "baseline" else self.fail_reward, meta, True)

    def _repeat(self, tree: Tree, earlier: float, meta) -> None:
        if self.repeats != "skip":  # None: a draw without an advantage (module docstring)
            reward = {"fail": self.fail_reward, "score": earlier, "baseline": None}[self.repeats]
            self._learn(tree, reward, meta, True)

    def _learn(self, tree: Tree, reward: float, meta, free: bool) -> None:
        decisions, logp = meta[:2]
        # ``advantage=parent``: an evaluated edit is measured against its parent's score
        # (meta[2]); a draw learned without an evaluation (``free``) against the baseline, and
        # so is a pending draw of a store saved before the option (its meta has two fields)
        base = meta[2] if self.advantage == "parent" and not free and len(meta) > 2 else None
        made = meta[3] if len(meta) > 3 else None  # (a draw pending from before: all made)
        self.buffer.append([decisions, None if reward is None else float(reward), float(logp),
                            base, made])
        if not free:
            self._keep(reward, decisions, tree)
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _foreign(self, result: dict, reward: float) -> None:
        """A seed rule's result (``--seeds``): with ``edit`` or ``pqt`` it joins the queue of
        best programs (and with ``parents=population`` the population) at its score, as an
        evaluated draw does, so that edits start from it (and ``pqt`` imitates it); the policy
        gradient does not learn from it, as the policy did not draw it."""
        if not self.breeds_from_seeds:
            return
        tree = self._seed_tree(result, reward)
        if tree is not None:
            self._keep(reward, self.space.decisions_of(tree), tree)

    @property
    def breeds_from_seeds(self) -> bool:
        return bool(self.edit or self.algo == "pqt")

    def _keep(self, reward: float, decisions: list, tree: Tree) -> None:
        """An evaluated program (drawn, or a seed) joins what edits and pqt start from: the
        queue of the best ones (at most ``queue``) and, with ``parents=population``, the
        population."""
        if self.breeds_from_seeds:
            self.queue.append([float(reward), decisions, tree.to_json()])
            self.queue.sort(key=lambda e: -e[0])  # stable: the earlier of equal rewards first
            del self.queue[self.queue_size:]
        if self.edit and self.parents == "population":
            join(self.population, tree.to_json(), reward, self.population_size)

    def _neutral(self, tree: Tree, reward: float, meta) -> None:
        """With probability ``neutral`` (with ``edit``, not ``pqt``), a draw that is a duplicate
        of an evaluated program joins the queue with that program's reward, ahead of the members
        with an equal one, so that it outlives them: edits then start from variants of the best
        programs that cost no evaluation (neutral drift, as evolution's ``neutral``). Not a
        reward for the policy; not with ``pqt``, whose loss is the likelihood of the queue
        (training on duplicates made the policy collapse)."""
        if not self.neutral or not self.edit or self.algo == "pqt" \
                or reward <= self.fail_reward or self.rng.random() >= self.neutral:
            return
        member = tree.to_json()
        if self.parents == "population":
            if drift_join(self.population, member, reward, self.population_size):
                self.neutral_joins += 1
            return
        if any(e[2] == member for e in self.queue):
            return
        at = next((k for k, e in enumerate(self.queue) if e[0] <= reward), len(self.queue))
        if at < self.queue_size:
            self.queue.insert(at, [float(reward), meta[0], member])
            del self.queue[self.queue_size:]
            self.neutral_joins += 1

    def _update(self) -> None:
        batch, self.buffer = self.buffer, []
        # a repeat learned with ``repeats=baseline`` (reward None) has no advantage: it enters
        # the loss through the entropy bonus only, and no reward statistic
        repeats = [e for e in batch if e[1] is None]
        batch = [e for e in batch if e[1] is not None]
        rewards = torch.tensor([e[1] for e in batch], dtype=torch.float32)
        if self.baseline is None and len(rewards):
            self.baseline = float(rewards.mean())
        everything = rewards
        if not len(rewards):
            adv = rewards
        elif self.risk < 1.0:  # risk-seeking: learn from the best fraction, above its quantile
            q = float(torch.quantile(rewards, 1.0 - self.risk))
            keep = [i for i, r in enumerate(rewards.tolist()) if r >= q]
            batch, rewards = [batch[i] for i in keep], rewards[keep]
            adv = rewards - q
            if self.normalize and len(everything) > 1:  # in units of the batch's spread
                adv = adv / (float(everything.std()) + 1e-8)
        elif self.normalize and len(rewards) > 1:  # the batch mean as baseline, its spread as unit
            adv = (rewards - rewards.mean()) / (float(rewards.std()) + 1e-8)
        else:  # (an edit with advantage=parent: against its parent's score, buffer's 4th)
            adv = rewards - torch.tensor([self.baseline if e[3] is None else e[3] for e in batch],
                                         dtype=torch.float32)
        batch, adv = batch + repeats, torch.cat([adv, torch.zeros(len(repeats))])
        old = torch.tensor([e[2] for e in batch])
        epochs = self.epochs if self.algo == "ppo" else 1
        for _ in range(epochs):
            logp, ent = self.controller.replay([e[0] for e in batch], self.temperature,
                                               made=[e[4] for e in batch])
            if self.algo == "pqt":
                if not self.queue:
                    break
                best, _ = self.controller.replay([e[1] for e in self.queue], self.temperature)
                loss = -best.mean() - self.entropy * ent.mean()
            elif self.algo == "ppo":
                ratio = torch.exp(logp - old)
                surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * adv)
                loss = -surr.mean() - self.entropy * ent.mean()
            else:
                loss = -(adv * logp).mean() - self.entropy * ent.mean()
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.controller.parameters(), 1.0)
            self.opt.step()
        for r in everything.tolist():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.updates += 1
        if len(everything):
            self.curve.append([self.updates, float(everything.mean()), self.baseline])

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        opt = self.opt.state_dict()
        opt_state = {str(k): {n: (_pack(v) if torch.is_tensor(v) else v) for n, v in s.items()}
                     for k, s in opt["state"].items()}
        return {**self._base_state(),
                "controller": {k: _pack(v) for k, v in self.controller.state_dict().items()},
                "opt_state": opt_state, "opt_groups": opt["param_groups"],
                "baseline": self.baseline, "buffer": self.buffer, "updates": self.updates,
                "curve": self.curve, "queue": self.queue, "neutral_joins": self.neutral_joins,
                "population": self.population, "warm": self.warm}

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state)
        self.controller.load_state_dict({k: _unpack(v) for k, v in state["controller"].items()})
        opt_state = {int(k): {n: (_unpack(v) if isinstance(v, dict) and "b64" in v else v)
                              for n, v in s.items()} for k, s in state["opt_state"].items()}
        for s in opt_state.values():
            if "step" in s and torch.is_tensor(s["step"]):
                s["step"] = s["step"].reshape(())
        self.opt.load_state_dict({"state": opt_state, "param_groups": state["opt_groups"]})
        self.baseline = state["baseline"]
        # (a buffer saved before ``advantage`` has no parent's score: None, the baseline; one
        # saved before edits read their parent as context, no positions made: all)
        self.buffer = [[[tuple(d) for d in e[0]], e[1], e[2], e[3] if len(e) > 3 else None,
                        e[4] if len(e) > 4 else None] for e in state["buffer"]]
        self.updates = state["updates"]
        self.curve = [list(c) for c in state["curve"]]
        self.queue = [[r, [tuple(d) for d in dec], t] for r, dec, t in state["queue"]]
        self.neutral_joins = state.get("neutral_joins", 0)
        self.population = [list(m) for m in state.get("population", [])]
        self.warm = [text for text in state.get("warm", []) if self.space.contains(text)]


STRATEGIES[RLStrategy.name] = RLStrategy
