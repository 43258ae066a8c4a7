"""Lesson 7's stateful LSTM training step: jaxlearn's Learner against the same model in PyTorch, in one run.

    python benchmarks/char_rnn_speed.py                    # 5 blocks of 100 steps each, alternating
    python benchmarks/char_rnn_speed.py --blocks 7 --block 200

The model is the lesson-7 notebook's LSTM: embedding of its 56-token vocabulary → n_fac 42, 2 LSTM layers of
512 hidden with dropout 0.5 between them, a linear output per step; batch 64 streams of bptt 8 characters of
Nietzsche (the training set's first batches, in order), Adam lr 1e-3, the hidden state carried from batch to
batch with the gradient cut at the boundary.
* JAX: ``jaxlearn.learner.Learner`` on ``StatefulCharRnn('lstm', n_hidden=512, n_layers=2, dropout=0.5,
  unroll=8)``,
  ``steps_per_call`` = a whole block (one compiled ``lax.scan`` over ``--block`` steps: each step's batch
  gathered on the device, the carry threaded through the scan). A block is ``learn.fit(1, valid=False)`` on
  a ``--block``-batch training set, so each block also starts from a fresh carry, as torch's does.
* PyTorch: ``nn.Embedding`` → ``nn.LSTM(42, 512, 2, dropout=0.5, batch_first=True)`` → ``nn.Linear``,
  ``torch.optim.Adam``, ``h = tuple(t.detach() for t in h)`` between batches (the lesson's ``repackage_var``),
  eager (no compilation); its intra-op thread count is the faster of its default and 1 in a probe block each
  (on a shared machine the default can lose badly), or ``--torch-threads``.

The two alternate block by block so that both see the same load on a shared machine. The first block of each
(JAX: compilation + one block; torch: warm-up) is reported apart; steps/s are medians over the other blocks.
Writes ``benchmarks/results/char_rnn_speed.md`` and prints, last, exactly ``ratio X`` (JAX steps/s ÷ torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax
import torch
from torch import nn

from jaxlearn import optim, text
from jaxlearn.losses import cross_entropy
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner

N_FAC, N_HIDDEN, N_LAYERS, DROPOUT = 42, 512, 2, 0.5  # lesson 7's CharSeqStatefulLSTM(md.nt, 42, 512, 2)
BATCH, BPTT, LR = 64, 8, 1e-3
UNROLL = 8  # as experiments/char_rnn.py --full trains this model: the whole window per loop iteration
RESULTS = Path(__file__).parent / "results" / "char_rnn_speed.md"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def torch_like_adam(learning_rate: float) -> optax.GradientTransformation:
    """PyTorch's Adam defaults (betas 0.9 / 0.999, eps 1e-8 outside the square root), no weight decay."""
    return optim.adam(learning_rate, b2=0.999, eps=1e-8, eps_in_sqrt=False)


def jax_runner(dls: DataLoaders, block: int) -> Callable[[], float]:
    """A function that trains one block of ``block`` steps and returns its wall seconds."""
    train = dataclasses.replace(dls.train, x=dls.train.x[:block * BATCH], y=dls.train.y[:block * BATCH])
    model = text.StatefulCharRnn(len(dls.info["vocab"]), "lstm", N_FAC, N_HIDDEN, N_LAYERS, DROPOUT, unroll=UNROLL)
    learn = Learner(model, DataLoaders(train, train, dls.info), loss_fn=cross_entropy,
                    optimizer=torch_like_adam, lr=LR, metrics=[], steps_per_call=block)

    def run_block() -> float:
        t0 = time.perf_counter()
        learn.fit(1, valid=False)  # ends by reading the epoch's loss: the block has finished on the device
        return time.perf_counter() - t0
    return run_block


def torch_runner(dls: DataLoaders, block: int) -> tuple[Callable[[], float], str, int]:
    """The same for the PyTorch model; also torch's version and its default intra-op thread count."""
    x, y, vocab_size = np.asarray(dls.train.x), np.asarray(dls.train.y), len(dls.info["vocab"])

    class CharSeqStatefulLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(vocab_size, N_FAC)
            self.rnn = nn.LSTM(N_FAC, N_HIDDEN, N_LAYERS, dropout=DROPOUT, batch_first=True)
            self.l_out = nn.Linear(N_HIDDEN, vocab_size)

        def forward(self, xb, h):
            out, h = self.rnn(self.e(xb), h)
            return self.l_out(out), h

    torch.manual_seed(0)
    model = CharSeqStatefulLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xs = torch.from_numpy(x[:block * BATCH].astype(np.int64)).view(block, BATCH, BPTT)
    ys = torch.from_numpy(y[:block * BATCH].astype(np.int64)).view(block, BATCH, BPTT)
    loss_fn = nn.CrossEntropyLoss()

    def run_block() -> float:
        t0 = time.perf_counter()
        h = tuple(torch.zeros(N_LAYERS, BATCH, N_HIDDEN) for _ in range(2))
        for xb, yb in zip(xs, ys):
            h = tuple(t.detach() for t in h)  # the lesson's repackage_var: backprop stops at the batch boundary
            logits, h = model(xb, h)
            loss = loss_fn(logits.reshape(-1, vocab_size), yb.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss.item()
        return time.perf_counter() - t0
    return run_block, torch.__version__, torch.get_num_threads()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=100, help="training steps per block (and per JAX call)")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks of each, after one warm-up block")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch's intra-op threads (default: the faster of its default and 1, probed)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dls = text.nietzsche_loaders("stateful", BATCH, BPTT, vocab="lesson7")
    jax_block = jax_runner(dls, args.block)
    torch_block, torch_version, torch_threads = torch_runner(dls, args.block)

    first_jax, first_torch = jax_block(), torch_block()  # compilation / warm-up, reported apart
    probes = {}
    for threads in (torch_threads, 1):  # on a shared machine torch's default thread count can lose to one
        torch.set_num_threads(threads)
        probes[threads] = torch_block()
    torch_threads = args.torch_threads or min(probes, key=probes.get)
    torch.set_num_threads(torch_threads)
    jax_times, torch_times = [], []
    for _ in range(args.blocks):
        jax_times.append(jax_block())
        torch_times.append(torch_block())
    jax_sps = args.block / statistics.median(jax_times)
    torch_sps = args.block / statistics.median(torch_times)
    compile_s = first_jax - statistics.median(jax_times)
    ratio = jax_sps / torch_sps

    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {machine}; jax device {jax.devices()[0].platform}; load avg {load}")
    print(f"jax   {jax_sps:7.2f} steps/s (blocks: {' '.join(f'{t:.2f}' for t in jax_times)} s), "
          f"compile ≈ {compile_s:.1f} s")
    print(f"torch {torch_sps:7.2f} steps/s (blocks: {' '.join(f'{t:.2f}' for t in torch_times)} s), "
          f"{torch_threads} threads (probe blocks: "
          f"{', '.join(f'{k} thr {v:.2f} s' for k, v in probes.items())}), first block {first_torch:.2f} s")

    header = [
        "# Lesson 7's stateful LSTM: jaxlearn's Learner vs PyTorch, training steps per second",
        "",
        f"`python benchmarks/char_rnn_speed.py --block {args.block} --blocks {args.blocks}` — the lesson-7 "
        f"notebook's LSTM (n_fac {N_FAC}, {N_LAYERS} layers of {N_HIDDEN} hidden, dropout {DROPOUT}), batch "
        f"{BATCH} streams × bptt {BPTT}, Adam lr {LR:g}, hidden state carried and detached between batches. "
        f"JAX: `Learner(steps_per_call={args.block})`, one compiled scan per block; torch: `nn.LSTM` eager. "
        f"Blocks of {args.block} steps alternate JAX / torch; steps/s = median over {args.blocks} blocks; the "
        f"first block of each (JAX compile, torch warm-up) is excluded and the compile time reported apart; "
        f"torch's threads: the faster of its default and 1 in a probe block each. load avg = the 1/5/15-minute "
        f"load at the end (the machine is shared).",
        "",
        "| date | machine | jax steps/s | jax compile s | torch steps/s (threads) | ratio | load avg | versions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    row = (f"| {datetime.date.today()} | {machine} ({jax.devices()[0].platform}) | {jax_sps:.2f} | "
           f"{compile_s:.1f} | {torch_sps:.2f} ({torch_threads}; probes "
           f"{', '.join(f'{k} thr {args.block / v:.2f}' for k, v in probes.items())}) | {ratio:.2f} | {load} | "
           f"jax {jax.__version__}, torch {torch_version}, python {platform.python_version()} |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(header + [row]) + "\n", encoding="utf-8")
    print(f"ratio {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
