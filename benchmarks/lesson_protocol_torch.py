"""The lessons' rungs in PyTorch, written as lesson6-rnn.ipynb and lesson5-movielens.ipynb write them, trained
under the same protocol as ``--protocol lesson``: the reference for a rung whose jaxlearn loss misses the lesson's.

    pip install -e '.[bench]'
    python benchmarks/lesson_protocol_torch.py                           # every rung below, ~15 min on 2 cores
    python benchmarks/lesson_protocol_torch.py --rungs loop_add rnn      # some

Each rung reads the very arrays jaxlearn trains on (``jaxlearn.text.nietzsche_loaders(split=...)``,
``jaxlearn.collab.collab_loaders``: the same split, vocabulary and windows), then trains as the notebook does:
PyTorch's default inits, ``torch.optim.Adam`` / ``SGD(momentum=0.9, weight_decay=...)``, fastai 0.7's ``fit``
(a shuffled training set for the window models; the stateful ones in order, their hidden state carried through
every batch, epoch and validation pass as the notebook's ``self.h``), ``set_lrs`` between fits, fastai 0.7's
``CosAnneal`` for the fastai EmbeddingDotBias. Validation loss = the batch-size-weighted mean, as fastai's.
Writes ``benchmarks/results/lesson_protocol_torch.json`` (one row per rung, merged with earlier runs').
The LSTM rungs (``lstm``: all 80 epochs, ``lstm_2_15``: the first 17) are not in the default list: the notebook's
LSTM takes ~50 s an epoch on a 2-core CPU (~70 min for the 80).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jaxlearn import text
from jaxlearn.collab import collab_loaders

RESULTS = Path(__file__).parent / "results" / "lesson_protocol_torch.json"
N_FAC, N_HIDDEN = 42, 256


# ------------------------------------------------------------------------------------------ the notebooks' models

class Char3Model(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.e = nn.Embedding(vocab_size, N_FAC)
        self.l_in = nn.Linear(N_FAC, N_HIDDEN)
        self.l_hidden = nn.Linear(N_HIDDEN, N_HIDDEN)
        self.l_out = nn.Linear(N_HIDDEN, vocab_size)

    def forward(self, cs: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(cs.size(0), N_HIDDEN)
        for t in range(cs.size(1)):
            h = torch.tanh(self.l_hidden(h + F.relu(self.l_in(self.e(cs[:, t])))))
        return F.log_softmax(self.l_out(h), dim=-1)


class CharLoopModel(Char3Model):  # the same loop over 8 characters
    pass


class CharLoopConcatModel(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.e = nn.Embedding(vocab_size, N_FAC)
        self.l_in = nn.Linear(N_FAC + N_HIDDEN, N_HIDDEN)
        self.l_hidden = nn.Linear(N_HIDDEN, N_HIDDEN)
        self.l_out = nn.Linear(N_HIDDEN, vocab_size)

    def forward(self, cs: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(cs.size(0), N_HIDDEN)
        for t in range(cs.size(1)):
            h = torch.tanh(self.l_hidden(F.relu(self.l_in(torch.cat((h, self.e(cs[:, t])), 1)))))
        return F.log_softmax(self.l_out(h), dim=-1)


class CharRnn(nn.Module):
    """``CharRnn`` (last output) or, with ``seq=True``, ``CharSeqRnn`` (an output at every step)."""

    def __init__(self, vocab_size: int, seq: bool = False, identity: bool = False):
        super().__init__()
        self.seq = seq
        self.e = nn.Embedding(vocab_size, N_FAC)
        self.rnn = nn.RNN(N_FAC, N_HIDDEN)
        self.l_out = nn.Linear(N_HIDDEN, vocab_size)
        if identity:
            self.rnn.weight_hh_l0.data.copy_(torch.eye(N_HIDDEN))

    def forward(self, cs: torch.Tensor) -> torch.Tensor:
        outp, _ = self.rnn(self.e(cs.t()), torch.zeros(1, cs.size(0), N_HIDDEN))
        return F.log_softmax(self.l_out(outp if self.seq else outp[-1]), dim=-1)


class CharSeqStatefulRnn(nn.Module):
    """The stateful RNN or GRU: ``self.h`` carried from call to call, cut from the graph (``repackage_var``)."""

    def __init__(self, vocab_size: int, cell: str):
        super().__init__()
        self.e = nn.Embedding(vocab_size, N_FAC)
        self.rnn = {"rnn": nn.RNN, "gru": nn.GRU}[cell](N_FAC, N_HIDDEN)
        self.l_out = nn.Linear(N_HIDDEN, vocab_size)
        self.h = None

    def forward(self, cs: torch.Tensor) -> torch.Tensor:
        if self.h is None or self.h.size(1) != cs.size(0):
            self.h = torch.zeros(1, cs.size(0), N_HIDDEN)
        outp, h = self.rnn(self.e(cs.t()), self.h)
        self.h = h.detach()
        return F.log_softmax(self.l_out(outp), dim=-1)


class CharSeqStatefulLSTM(nn.Module):
    """The lesson's LSTM: 2 layers of 512, dropout 0.5 between them, ``(h, c)`` carried and cut like ``self.h``."""

    def __init__(self, vocab_size: int, n_hidden: int = 512, nl: int = 2):
        super().__init__()
        self.nl, self.n_hidden = nl, n_hidden
        self.e = nn.Embedding(vocab_size, N_FAC)
        self.rnn = nn.LSTM(N_FAC, n_hidden, nl, dropout=0.5)
        self.l_out = nn.Linear(n_hidden, vocab_size)
        self.h = None

    def forward(self, cs: torch.Tensor) -> torch.Tensor:
        if self.h is None or self.h[0].size(1) != cs.size(0):
            self.h = tuple(torch.zeros(self.nl, cs.size(0), self.n_hidden) for _ in range(2))
        outp, h = self.rnn(self.e(cs.t()), self.h)
        self.h = tuple(t.detach() for t in h)
        return F.log_softmax(self.l_out(outp), dim=-1)


class EmbeddingDot(nn.Module):
    def __init__(self, n_users: int, n_movies: int):
        super().__init__()
        self.u, self.m = nn.Embedding(n_users, 50), nn.Embedding(n_movies, 50)
        self.u.weight.data.uniform_(0, 0.05)
        self.m.weight.data.uniform_(0, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.u(x[:, 0]) * self.m(x[:, 1])).sum(1)


class EmbeddingDotBias(nn.Module):
    """The notebook's (``init`` 0.01) or fastai 0.7's own (0.05), ``σ(u·m + b_u + b_m)·(max − min) + min``."""

    def __init__(self, n_users: int, n_movies: int, init: float, lo: float = 0.5, hi: float = 5.0):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.u, self.m, self.ub, self.mb = (nn.Embedding(n, k) for n, k in
                                            ((n_users, 50), (n_movies, 50), (n_users, 1), (n_movies, 1)))
        for e in (self.u, self.m, self.ub, self.mb):
            e.weight.data.uniform_(-init, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users, movies = x[:, 0], x[:, 1]
        res = (self.u(users) * self.m(movies)).sum(1) + self.ub(users).squeeze(1) + self.mb(movies).squeeze(1)
        return torch.sigmoid(res) * (self.hi - self.lo) + self.lo


def flush_denormals(threads: int) -> None:
    """Values below 1.2e-38 read and written as 0 on the calling thread and on each of torch's OpenMP threads.

    The LSTM at the notebook's lr 1e-2 with L2 spends its backward pass on denormal numbers otherwise: measured
    here, 2 threads, 319 ms a step without, 52 ms with (XLA's CPU code, jaxlearn's, runs at 50). Nothing the
    models compute is that small on purpose. ``torch.set_flush_denormal`` sets only its own thread's flags, so it
    is called once in every thread of an OpenMP team of torch's size (libgomp keeps that team for torch's loops).
    """
    torch.set_flush_denormal(True)
    gomp = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libgomp.so.1"))
    on_thread = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(True))
    gomp.GOMP_parallel.argtypes = [type(on_thread), ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    gomp.GOMP_parallel(on_thread, None, threads, 0)


# ---------------------------------------------------------------------------------------- fastai 0.7's fit

def batches(x: np.ndarray, y: np.ndarray, bs: int, shuffle: bool, rng: np.random.Generator
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    for i in range(0, len(x), bs):
        idx = order[i:i + bs]
        yield torch.from_numpy(x[idx]).long(), torch.from_numpy(y[idx])


def nll(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The notebooks' ``F.nll_loss`` (``nll_loss_seq`` for (T, B, V) outputs against (B, T) targets)."""
    if pred.dim() == 3:
        return F.nll_loss(pred.reshape(-1, pred.size(-1)), y.long().t().reshape(-1))
    return F.nll_loss(pred, y.long())


def fit(model: nn.Module, data: dict, epochs: int, opt: torch.optim.Optimizer, crit: Callable, bs: int,
        shuffle: bool, rng: np.random.Generator, lr_of_step: Callable[[int], float] | None = None) -> float:
    """fastai 0.7's ``fit``: epochs over the training set, then the validation loss (weighted by batch size)."""
    step, valid = 0, float("nan")
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(data["x_train"], data["y_train"], bs, shuffle, rng):
            if lr_of_step is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_of_step(step)
            loss = crit(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            losses, counts = [], []
            for xb, yb in batches(data["x_valid"], data["y_valid"], data.get("valid_bs", bs), False, rng):
                losses.append(float(crit(model(xb), yb)))
                counts.append(len(xb))
        valid = float(np.average(losses, weights=counts))
        print(f"  epoch valid {valid:.5f}", flush=True)
    return valid


def set_lrs(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def cos_anneal(lr: float, nb: int, cycle_mult: int = 2) -> Callable[[int], float]:
    """fastai 0.7's ``CosAnneal``: lr/100 while iteration < nb/20, then cosine cycles of nb, nb·mult, … batches."""
    def lr_of_step(step: int) -> float:
        if step < nb / 20:
            return lr / 100
        length, t = nb, step
        while t >= length:
            t, length = t - length, length * cycle_mult
        return lr / 2 * (math.cos(math.pi * t / length) + 1)
    return lr_of_step


# ------------------------------------------------------------------------------------------------ the rungs

def text_data(kind: str, bs: int, vocab: str, split: str) -> tuple[dict, int]:
    dls = text.nietzsche_loaders(kind, bs, 3 if kind == "windows" else 8, vocab=vocab, split=split)
    data = {"x_train": np.asarray(dls.train.x), "y_train": np.asarray(dls.train.y),
            "x_valid": np.asarray(dls.valid.x), "y_valid": np.asarray(dls.valid.y),
            "valid_bs": bs if kind == "stateful" else 2 * bs}
    return data, len(dls.info["vocab"])


def lesson6(model_of: Callable[[int], nn.Module], kind: str, lrs: tuple[tuple[int, float], ...],
            vocab: str = "lesson6") -> Callable[[np.random.Generator], float]:
    """A lesson-6/7 rung: Adam at the first lr, then ``set_lrs`` and ``fit`` for each later (epochs, lr)."""
    def run(rng: np.random.Generator) -> float:
        stateful = kind == "stateful"
        bs = 64 if stateful else 512
        data, vocab_size = text_data(kind, bs, vocab, "end" if stateful else "random")
        model = model_of(vocab_size)
        opt = torch.optim.Adam(model.parameters(), lrs[0][1])
        for epochs, lr in lrs:
            set_lrs(opt, lr)
            valid = fit(model, data, epochs, opt, nll, bs, shuffle=not stateful, rng=rng)
        return valid
    return run


def lstm(fits: int) -> Callable[[np.random.Generator], float]:
    """The lesson's LSTM: ``LayerOptimizer(Adam, m, 1e-2, 1e-5)``, fit 2, then CosAnneal fits of 15 and 63 epochs
    (each with its lr/100 warm start); ``fits`` of those three (the whole run is ~80 min on a 2-core CPU)."""
    def run(rng: np.random.Generator) -> float:
        data, vocab_size = text_data("stateful", 64, "lesson7", "end")
        model = CharSeqStatefulLSTM(vocab_size)
        opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-5)
        nb = len(data["x_train"]) // 64
        for epochs, cos in ((2, False), (15, True), (63, True))[:fits]:
            valid = fit(model, data, epochs, opt, nll, 64, shuffle=False, rng=rng,
                        lr_of_step=cos_anneal(1e-2, nb) if cos else None)
            print(f"  after the fit of {epochs} epochs: valid {valid:.4f}", flush=True)
        return valid
    return run


def collab(model_of: Callable[[int, int], nn.Module], optimizer: str, wd: float, lrs: tuple[tuple[int, float], ...],
           cos: bool = False) -> Callable[[np.random.Generator], float]:
    def run(rng: np.random.Generator) -> float:
        dls = collab_loaders("ml-latest-small", 64)
        data = {"x_train": np.asarray(dls.train.x), "y_train": np.asarray(dls.train.y),
                "x_valid": np.asarray(dls.valid.x), "y_valid": np.asarray(dls.valid.y), "valid_bs": 128}
        model = model_of(dls.info["n_users"], dls.info["n_items"])
        lr0 = lrs[0][1]
        opt = (torch.optim.SGD(model.parameters(), lr0, momentum=0.9, weight_decay=wd) if optimizer == "sgd"
               else torch.optim.Adam(model.parameters(), lr0, weight_decay=wd))
        schedule = cos_anneal(lr0, dls.train.n_batches) if cos else None
        for epochs, lr in lrs:
            set_lrs(opt, lr)
            valid = fit(model, data, epochs, opt, F.mse_loss, 64, shuffle=True, rng=rng, lr_of_step=schedule)
        return valid
    return run


RUNGS: dict[str, Callable[[np.random.Generator], float]] = {
    "char3": lesson6(Char3Model, "windows", ((1, 1e-2), (1, 1e-3))),
    "loop_add": lesson6(CharLoopModel, "overlapping", ((1, 1e-2), (1, 1e-3))),
    "loop_concat": lesson6(CharLoopConcatModel, "overlapping", ((1, 1e-3), (1, 1e-4))),
    "rnn": lesson6(CharRnn, "overlapping", ((4, 1e-3), (2, 1e-4))),
    "seq_rnn": lesson6(lambda v: CharRnn(v, seq=True), "sequences", ((4, 1e-3), (1, 1e-4))),
    "seq_rnn_identity": lesson6(lambda v: CharRnn(v, seq=True, identity=True), "sequences", ((4, 1e-2), (4, 1e-3))),
    "stateful_rnn": lesson6(lambda v: CharSeqStatefulRnn(v, "rnn"), "stateful", ((4, 1e-3), (1, 1e-4)), "lesson7"),
    "gru": lesson6(lambda v: CharSeqStatefulRnn(v, "gru"), "stateful", ((6, 1e-3), (3, 1e-4)), "lesson7"),
    "lstm": lstm(3),
    "lstm_2_15": lstm(2),  # the first two fits, 17 epochs: the lecture's "1.31" before the long fit
    "collab_dot": collab(EmbeddingDot, "sgd", 1e-5, ((3, 0.1), (3, 0.01))),
    "collab_dot_bias_hand": collab(lambda u, m: EmbeddingDotBias(u, m, 0.01), "sgd", 2e-4, ((3, 0.1),)),
    "collab_dot_bias_fastai": collab(lambda u, m: EmbeddingDotBias(u, m, 0.05), "adam", 2e-4, ((3, 1e-2),),
                                     cos=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS),
                        default=[r for r in RUNGS if not r.startswith("lstm")])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: its own)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flush_denormals(torch.get_num_threads())
    rows = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for name in args.rungs:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        valid = RUNGS[name](np.random.default_rng(args.seed))
        rows[name] = {"valid_loss": valid, "seconds": round(time.perf_counter() - t0, 1), "seed": args.seed,
                      "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                      "date": datetime.date.today().isoformat()}
        print(f"{name:24s} PyTorch, the notebook's code: valid {valid:.4f} in {rows[name]['seconds']:.0f} s",
              flush=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
