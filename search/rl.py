"""The reinforcement-learning strategy: an LSTM controller that emits a grammar's decisions.

As in Neural Optimizer Search (Bello et al. 2017) and NAS (Zoph & Le 2017): an LSTM runs over
the sequence of decisions of a program (``search.space``); at each step its input is the
embedding of the previous choice plus the embedding of the decision being made, and a softmax
head for that decision's rule (masked to the choices the grammar allows there) gives the
policy. Rewards are the candidate's score (best validation accuracy; 0 for a degenerate,
diverged or failed one). Every ``batch`` rewards the controller takes a policy-gradient step:

* ``reinforce``: ``-(r - b) * log pi(a)``, ``b`` a moving average of rewards (decay 0.9);
* ``ppo``: the clipped surrogate of Schulman et al. 2017 (``epochs`` passes over the batch,
  ratio clipped to ``1 +- clip``) with the same baseline;

both with an entropy bonus (0.05 by default: with 0.01 the policy narrowed onto a few programs,
96% and 98% of the draws of rediscovery seeds 1 and 4 were duplicates and seed 4 ran out of new
candidates at 933 of 1,000 evaluations; with 0.05, 62% and 80%, both reached the budget;
BENCHMARKS.md). Degenerate and dead-code draws are rewarded at once (0) without an
evaluation (``SpaceStrategy``), so the controller also learns to avoid them for free; duplicates
of evaluated programs are skipped, not rewarded again (that made the policy collapse).

The whole controller (weights, Adam moments, baseline, the batch being gathered, the random
state) is in ``state_dict`` as exact float32 bytes, so ``--resume`` continues the same run.
"""
from __future__ import annotations

import base64

import numpy as np
import torch
from torch import nn

from .space import SpaceStrategy, Tree


def _pack(t: torch.Tensor) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def _unpack(d: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(d["b64"]), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(a.copy())


class Controller(nn.Module):
    """LSTM policy over the decisions of a space."""

    def __init__(self, n_choices: dict, hidden: int = 32):
        super().__init__()
        self.rules = sorted(n_choices)
        self.offset, total = {}, 1  # token 0: start
        for r in self.rules:
            self.offset[r] = total
            total += n_choices[r]
        self.token = nn.Embedding(total, hidden)
        self.kind = nn.Embedding(len(self.rules), hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleDict({r: nn.Linear(hidden, n_choices[r]) for r in self.rules})
        for h in self.heads.values():  # start uniform: the grammar's own prior
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)
        self.hidden = hidden

    def start(self):
        z = torch.zeros(1, self.hidden)
        return (z, z.clone()), 0

    def logits(self, state, prev_token: int, rule: str, allowed: list):
        x = self.token(torch.tensor([prev_token])) + \
            self.kind(torch.tensor([self.rules.index(rule)]))
        h, c = self.cell(x, state)
        logits = self.heads[rule](h)[0]
        mask = torch.full_like(logits, float("-inf"))
        mask[allowed] = 0.0
        return (h, c), logits + mask

    def replay(self, decisions: list):
        """(sum of log-probs, sum of entropies) of a recorded decision sequence."""
        state, prev = self.start()
        logp, ent = torch.zeros(()), torch.zeros(())
        for rule, choice, allowed in decisions:
            state, logits = self.logits(state, prev, rule, allowed)
            lp = torch.log_softmax(logits, 0)
            p = lp.exp()
            logp = logp + lp[choice]
            ent = ent - (p[allowed] * lp[allowed]).sum()
            prev = self.offset[rule] + choice
        return logp, ent


class RLStrategy(SpaceStrategy):
    """LSTM controller trained by REINFORCE (default) or PPO (see the module docstring)."""
    name = "rl"
    # A duplicate is not fed back to the controller: rewarding the same program again each time
    # the policy repeats it made the policy collapse onto a few known rules (96% of its draws
    # were duplicates in the first rediscovery runs); degenerate and dead-code draws still are.
    learn_duplicates = False

    def __init__(self, seed: int = 0, space: str = "bello", use_filter: bool = True,
                 space_obj=None, live_only: bool = True, algo: str = "reinforce",
                 batch: int = 16, lr: float = 0.01,
                 entropy: float = 0.05, hidden: int = 32, baseline_decay: float = 0.9,
                 epochs: int = 4, clip: float = 0.2, temperature: float = 1.0):
        super().__init__(seed=seed, space=space, use_filter=use_filter, space_obj=space_obj,
                         live_only=live_only)
        torch.manual_seed(seed)
        self.controller = Controller(self.space.n_choices, hidden)
        self.opt = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.algo, self.batch_size, self.entropy = algo, batch, entropy
        self.baseline_decay, self.epochs, self.clip = baseline_decay, epochs, clip
        self.temperature = temperature
        self.baseline = None
        self.buffer: list = []  # [decisions, reward, old logp]
        self.updates = 0
        self.curve: list = []  # [update, mean reward of its batch, baseline]

    # --- drawing ------------------------------------------------------------------------------
    def _draw(self):
        ctl = self.controller
        memo = {"state": None, "prev": 0, "decisions": [], "logp": 0.0}
        memo["state"], memo["prev"] = ctl.start()

        def choose(rule, allowed):
            with torch.no_grad():
                memo["state"], logits = ctl.logits(memo["state"], memo["prev"], rule, allowed)
                probs = torch.softmax(logits / self.temperature, 0).double().numpy()
            u, acc, pick = self.rng.random(), 0.0, allowed[-1]
            for i in allowed:
                acc += probs[i]
                if u < acc:
                    pick = i
                    break
            memo["decisions"].append((rule, pick, list(allowed)))
            memo["logp"] += float(np.log(max(probs[pick], 1e-30)))
            memo["prev"] = ctl.offset[rule] + pick
            return pick
        tree = self.space.decode(choose)
        return tree, [memo["decisions"], memo["logp"]]

    # --- learning --------------------------------------------------------------------------------
    def _learn(self, tree: Tree, reward: float, meta, free: bool) -> None:
        decisions, logp = meta
        self.buffer.append([decisions, float(reward), float(logp)])
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        batch, self.buffer = self.buffer, []
        rewards = torch.tensor([r for _, r, _ in batch])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        adv = rewards - self.baseline
        old = torch.tensor([lp for _, _, lp in batch])
        epochs = self.epochs if self.algo == "ppo" else 1
        for _ in range(epochs):
            logps, ents = zip(*(self.controller.replay(d) for d, _, _ in batch))
            logp, ent = torch.stack(logps), torch.stack(ents)
            if self.algo == "ppo":
                ratio = torch.exp(logp - old)
                surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * adv)
                loss = -surr.mean() - self.entropy * ent.mean()
            else:
                loss = -(adv * logp).mean() - self.entropy * ent.mean()
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.controller.parameters(), 1.0)
            self.opt.step()
        for r in rewards.tolist():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.updates += 1
        self.curve.append([self.updates, float(rewards.mean()), self.baseline])

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        opt = self.opt.state_dict()
        opt_state = {str(k): {n: (_pack(v) if torch.is_tensor(v) else v) for n, v in s.items()}
                     for k, s in opt["state"].items()}
        return {**self._base_state(),
                "controller": {k: _pack(v) for k, v in self.controller.state_dict().items()},
                "opt_state": opt_state, "opt_groups": opt["param_groups"],
                "baseline": self.baseline, "buffer": self.buffer, "updates": self.updates,
                "curve": self.curve}

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
        self.buffer = [[[tuple(d) for d in dec], r, lp] for dec, r, lp in state["buffer"]]
        self.updates = state["updates"]
        self.curve = [list(c) for c in state["curve"]]
