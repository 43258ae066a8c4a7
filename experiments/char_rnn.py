"""fast.ai 2018 lessons 6–7: character models of Nietzsche, from three characters to a stateful LSTM.

Every rung of the lessons' ladder trains on the one core, ``jaxlearn.learner.Learner``: the window and
sequence models of lesson 6 like any classifier, lesson 7's stateful RNN / GRU / LSTM with their hidden state
in the ``"carry"`` collection, which the Learner threads from batch to batch (backprop stops at the batch
boundary) and resets at every epoch start. Validation = the last 20% of the text. Lesson 6's rungs read
every character of the text (85 tokens with padding); lesson 7's read its torchtext vocabulary (lowercased,
characters seen at least 3 times in training, 56 tokens), so each loss compares with its lesson's.

    python experiments/char_rnn.py                       # the default ladder (~14 min on a 2-core CPU)
    python experiments/char_rnn.py --docs                # the same, published to docs/char_rnn/
    python experiments/char_rnn.py --quick               # < 1 min: 1 epoch of 3 rungs (one per kind of data)
    python experiments/char_rnn.py --protocol lesson     # each rung as its notebook trains it -> <out>/lesson
    python experiments/char_rnn.py --models lstm --full  # the lesson's LSTM (512 x 2, 2+15+63 epochs): ~90 min

Writes under ``--out`` (default runs/char_rnn; docs/char_rnn with ``--docs``):
  results.json      one row per model: {model, valid_loss, lesson_loss, epochs, seconds, ...}
  samples.json      text sampled from every model (temperature 0.8; the LSTM also at 0.5 and 1.0)
  diagnostics.json  per stateful cell (RNN, GRU, LSTM): ‖∂L/∂h_t‖ over the bptt window and gate saturation,
                    at init and trained
  grad_norms.png, gate_saturation.png, README.md
  side_by_side.md   (in the held-out folder) the lesson's figure, the lesson protocol's loss, PyTorch's under the
                    same protocol (benchmarks/results/lesson_protocol_torch.json) and the held-out one, rung by rung
The text comes from $JAXLEARN_NIETZSCHE_PATH (or is downloaded once). A loss that turns NaN stops the run with
exit status 2 and no results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxlearn import metrics, optim, text
from jaxlearn.callbacks import MetricsCB, ParamSchedulerCB, ProgressCB
from jaxlearn.data import ArrayDataset, DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.losses import cross_entropy
from jaxlearn.nn.torch_init import torch_reinit
from jaxlearn.optim import schedules

import runs

PREFIX = "For thos"  # lesson 7 samples after 'for thos' (its vocabulary is lowercase); lesson 6's keeps capitals
SAMPLE_CHARS = 300
TEMPERATURE = 0.8
LSTM_TEMPERATURES = (0.5, 1.0)  # the LSTM's samples at these too: how conservative vs how wild
DIAG_WARMUP, DIAG_BATCHES = 8, 32  # validation batches to settle the carried state, then to measure on
WEIGHT_DECAY = 1e-5  # the lesson's LayerOptimizer(Adam, m, 1e-2, 1e-5)

# PyTorch's Adam (betas 0.9 / 0.999, eps 1e-8 outside the square root), which the lessons use throughout.
# The weight decay (each rung's) is decoupled here (AdamW); at the lesson's 1e-5 × lr it makes no measurable
# difference from torch's L2.
torch_adam = partial(optim.adam, b2=0.999, eps=1e-8, eps_in_sqrt=False)


@dataclass(frozen=True)
class Phase:
    """One ``learn.fit``: ``epochs`` under a learning-rate schedule, at the rung's lr or the phase's own
    (``lr``: the notebooks' ``set_lrs(opt, 1e-4)`` between two fits; the optimizer's state carries on).

    ``'constant'``: the lr throughout. ``'drop'``: a manual drop within one phase, lr for all but the last
    epoch, lr/10 for the last. ``'sgdr'``: cosine annealing per batch with restarts, cycles of 1, 2, 4, …
    epochs (``CosAnneal(cycle_mult=2)``, so 1+2+4 = 7 and 1+2+4+8 = 15 epochs end on a cycle).
    ``'cos_anneal'``: the same as fastai 0.7's ``CosAnneal`` runs it, lr/100 for the first 1/20 of an epoch.
    """
    epochs: int
    schedule: str
    lr: float | None = None


@dataclass(frozen=True)
class Rung:
    """A model of the lessons with its data, learning rate, schedule and the lesson's validation loss."""
    name: str        # for --models
    title: str
    kind: str        # text.nietzsche_loaders(kind=...)
    bptt: int        # characters per example
    batch_size: int
    model: Callable[[int], nn.Module]  # vocabulary size -> model
    lr: float
    phases: tuple[Phase, ...]
    lesson_loss: float | None
    lesson_note: str
    weight_decay: float = WEIGHT_DECAY  # decoupled, AdamW's
    vocab: str = "lesson6"  # text.nietzsche_loaders(vocab=...): lesson 6's 85 characters or lesson 7's 56
    split: str = "end"  # text.nietzsche_loaders(split=...): the last 20% of the text, or lesson 6's random 20%
    l2: float = 0.0  # coupled L2 in the gradient: torch Adam's weight_decay, the notebooks' LayerOptimizer's
    notebook_loss: float | None = None  # what the notebook printed for this recipe, where it differs
    torch_init: bool = False  # parameters drawn as PyTorch's defaults draw them (nn.torch_init), as the notebook's


def stateful(cell: str, n_hidden: int = 256, n_layers: int = 1, dropout: float = 0.0, unroll: int = 1
             ) -> Callable[[int], nn.Module]:
    """A StatefulCharRnn; ``unroll`` is speed only: the whole window, as measured faster on a 2-core CPU (the RNN
    and GRU rungs 26 → 19 s and 61 → 41 s; the LSTMs 13–16% per step)."""
    return lambda vocab: text.StatefulCharRnn(vocab, cell, n_hidden=n_hidden, n_layers=n_layers, dropout=dropout,
                                             unroll=unroll)


# The default LSTM fits a 2-core CPU: two layers of 384 with dropout 0.5 between them, windows of 16 characters,
# Adam lr 3e-3 with decoupled weight decay 0.1, SGDR 1+2+4+8 = 15 epochs (~10 min). Tried here, valid loss after
# 15 epochs unless said, all but the last on lesson 6's 85-character vocabulary: bptt 8, dropout 0.25, wd 1e-5
# (the previous default) 1.341; dropout 0.5 1.325; bptt 16 1.319; + wd 0.1 1.306 (this default); wd 0.3 1.325
# (underfits); 2 × 512 with wd 0.1 1.308 (twice the time); extra dropout 0.3 on the last layer's output 1.332; one
# cosine over 20 epochs instead of restarts 1.336 (best 1.331 at epoch 13: it overfits). Every run's training loss
# kept falling while the validation loss flattened near 1.31: on 480k training characters the limit here is
# overfitting, not steps. On lesson 7's own vocabulary (lowercase, 56 tokens), which its 1.25 was measured on,
# this default reaches **1.294** (560–600 s). The whole 16-step window unrolled, a step takes 71 ms against 84
# (text.fusion_fence made unrolling pay: before it, unrolled was 13% slower).
LSTM_DEFAULT = Rung("lstm", "LSTM (stateful, 2 × 384, dropout 0.5, bptt 16, wd 0.1, SGDR)", "stateful", 16, 64,
                    stateful("lstm", 384, 2, 0.5, unroll=16), 3e-3, (Phase(15, "sgdr"),), 1.25,
                    "1.31 → 1.25 (2 × 512, dropout 0.5, 2+15+63 epochs)", weight_decay=0.1, vocab="lesson7")
# The lesson's LSTM, as every lesson rung, with PyTorch's init; the run recorded in docs/char_rnn/lesson (1.2790,
# its row says init "flax") was made before the lesson protocol drew PyTorch's inits, with flax's.
LSTM_FULL = Rung("lstm", "LSTM (stateful, 2 × 512, dropout 0.5, SGDR)", "stateful", 8, 64,
                 stateful("lstm", 512, 2, 0.5, unroll=8), 1e-2,
                 (Phase(2, "constant"), Phase(15, "cos_anneal"), Phase(63, "cos_anneal")), 1.25,
                 "1.31 → 1.25 (fit 2, then CosAnneal 15 and 63 epochs)", weight_decay=0.0, vocab="lesson7",
                 l2=1e-5, notebook_loss=1.2524, torch_init=True)

LADDER: tuple[Rung, ...] = (
    Rung("char3", "Char3Model (3 chars → 4th)", "windows", 3, 512,
         lambda v: text.Char3Model(v), 1e-3, (Phase(4, "drop"),), None, "no number given"),
    Rung("loop_add", "CharLoopModel, input added to h", "overlapping", 8, 512,
         lambda v: text.CharLoopModel(v), 1e-3, (Phase(2, "drop"),), 1.72, "1.72"),
    Rung("loop_concat", "CharLoopModel, input concatenated", "overlapping", 8, 512,
         lambda v: text.CharLoopModel(v, concat=True), 1e-3, (Phase(2, "drop"),), 1.66, "1.66"),
    Rung("rnn", "CharRnn (flax nn.RNN, last output)", "overlapping", 8, 512,
         lambda v: text.CharRnn(v), 1e-3, (Phase(2, "drop"),), 1.5, "≈1.5 (4 epochs @1e-3 + 2 @1e-4)"),
    Rung("seq_rnn", "CharSeqRnn (output at every step)", "sequences", 8, 512,
         lambda v: text.CharSeqRnn(v), 1e-3, (Phase(8, "drop"),), None, "no number given"),
    Rung("seq_rnn_identity", "CharSeqRnn, identity init, lr 1e-2", "sequences", 8, 512,
         lambda v: text.CharSeqRnn(v, identity_init=True), 1e-2, (Phase(8, "drop"),), 1.50,
         "1.61 → 1.51 → 1.50 (ASR'd '0.61 → 0.51 → 0.50')"),
    Rung("stateful_rnn", "stateful RNN (BPTT 8, 64 streams, SGDR)", "stateful", 8, 64, stateful("rnn", unroll=8),
         1e-3, (Phase(7, "sgdr"),), 1.54, "1.54", vocab="lesson7"),
    Rung("gru", "GRU (stateful, SGDR)", "stateful", 8, 64, stateful("gru", unroll=8), 1e-2, (Phase(7, "sgdr"),), 1.36,
         "1.40 → 1.36", vocab="lesson7"),
    LSTM_DEFAULT,
)
NAMES = tuple(r.name for r in LADDER)

# --protocol lesson: each rung as its notebook trains it (fast.ai 2018 lesson6-rnn.ipynb): the same model, torch
# Adam at the notebook's lr, `fit` then `set_lrs` then `fit` again (Phase.lr), no weight decay but the LSTM's L2;
# lesson 6's rungs validated on a random 20% of their examples drawn from the whole text (get_cv_idxs), lesson
# 7's on the last 20%. The lesson's figure is the lecture's; notebook_loss what the notebook printed, where
# the two differ (its CharRnn and stateful RNN printed only their first fit).
LESSON_LADDER: tuple[Rung, ...] = (
    Rung("char3", "Char3Model (3 chars → 4th)", "windows", 3, 512, lambda v: text.Char3Model(v), 1e-2,
         (Phase(1, "constant"), Phase(1, "constant", 1e-3)), None,
         "no number (the notebook validated on one example)", weight_decay=0.0, split="random", torch_init=True),
    Rung("loop_add", "CharLoopModel, input added to h", "overlapping", 8, 512, lambda v: text.CharLoopModel(v), 1e-2,
         (Phase(1, "constant"), Phase(1, "constant", 1e-3)), 1.72, "1.72", weight_decay=0.0, split="random",
         torch_init=True,
         notebook_loss=1.75103),
    Rung("loop_concat", "CharLoopModel, input concatenated", "overlapping", 8, 512,
         lambda v: text.CharLoopModel(v, concat=True), 1e-3, (Phase(1, "constant"), Phase(1, "constant", 1e-4)),
         1.66, "1.66", weight_decay=0.0, split="random", torch_init=True, notebook_loss=1.69936),
    Rung("rnn", "CharRnn (flax nn.RNN, last output)", "overlapping", 8, 512, lambda v: text.CharRnn(v), 1e-3,
         (Phase(4, "constant"), Phase(2, "constant", 1e-4)), 1.5, "≈1.5", weight_decay=0.0, split="random",
         torch_init=True,
         notebook_loss=1.54942),
    Rung("seq_rnn", "CharSeqRnn (output at every step)", "sequences", 8, 512, lambda v: text.CharSeqRnn(v), 1e-3,
         (Phase(4, "constant"), Phase(1, "constant", 1e-4)), None, "no number", weight_decay=0.0, split="random",
         torch_init=True,
         notebook_loss=2.01564),
    Rung("seq_rnn_identity", "CharSeqRnn, identity init, lr 1e-2", "sequences", 8, 512,
         lambda v: text.CharSeqRnn(v, identity_init=True), 1e-2, (Phase(4, "constant"), Phase(4, "constant", 1e-3)),
         1.50, "1.61 → 1.51 → 1.50 (ASR'd '0.61 → 0.51 → 0.50')", weight_decay=0.0, split="random",
         torch_init=True,
         notebook_loss=1.83801),
    Rung("stateful_rnn", "stateful RNN (BPTT 8, 64 streams)", "stateful", 8, 64, stateful("rnn", unroll=8), 1e-3,
         (Phase(4, "constant"), Phase(1, "constant", 1e-4)), 1.54, "1.54", weight_decay=0.0, vocab="lesson7",
         notebook_loss=1.54505, torch_init=True),
    Rung("gru", "GRU (stateful)", "stateful", 8, 64, stateful("gru", unroll=8), 1e-3,
         (Phase(6, "constant"), Phase(3, "constant", 1e-4)), 1.36, "1.40 → 1.36", weight_decay=0.0,
         vocab="lesson7", notebook_loss=1.36969, torch_init=True),
    LSTM_FULL,
)
PROTOCOLS = ("held-out", "lesson")
TORCH_REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "lesson_protocol_torch.json"
# --quick: one rung per kind of data (windows, sequences, stateful with its diagnostics); a rung costs ~10 s of
# compiling on a 2-core CPU, so all nine took over two minutes
QUICK_MODELS = ["char3", "seq_rnn", "stateful_rnn"]
DIAGNOSED = {"stateful_rnn": "rnn", "gru": "gru", "lstm": "lstm"}  # rung -> cell, for the figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = runs.experiment_parser(
        "char_rnn", __doc__.splitlines()[0], epochs=None, lr=None, seed=0,
        not_applicable={"bs": "each model uses the lesson's batch size (512; 64 streams for the stateful ones)"},
        helps={"epochs": "epochs of every model, one schedule phase (default: each model's own, see LADDER)",
               "lr": "learning rate of every model (default: each model's lesson lr, 1e-3 or 1e-2)"},
        quick={"epochs": 1, "train_batches": 24, "valid_batches": 8, "models": QUICK_MODELS})
    parser.add_argument("--models", nargs="+", choices=NAMES, default=list(NAMES), help="the rungs to train")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="held-out",
                        help="'held-out': every rung validated on the last 20%% of the text, with this ladder's "
                             "schedules; 'lesson': each rung as its notebook trains it (LESSON_LADDER: lesson 6's "
                             "random 20%% of the examples, the notebook's epochs and set_lrs, the full LSTM), written "
                             "to <out>/lesson, whose results.json gathers the rungs of every such run")
    parser.add_argument("--full", action="store_true",
                        help="the lesson's LSTM (as --protocol lesson trains it): 2 layers of 512, dropout 0.5, "
                             "Adam 1e-2 with L2 1e-5, fit 2 + CosAnneal 15 + CosAnneal 63 epochs (~80 min on a "
                             "2-core CPU)")
    parser.add_argument("--train-batches", type=runs.positive_int, default=None,
                        help="train on the first N batches (quick)")
    parser.add_argument("--valid-batches", type=runs.positive_int, default=None,
                        help="validate on the first N batches (quick)")
    args = parser.parse_args(argv)
    if args.full:  # the lesson's LSTM is the lesson protocol's LSTM rung
        args.protocol = "lesson"
    if args.protocol == "lesson":
        args.out = args.out / "lesson"
        args.keep_results = True
    return args


# ------------------------------------------------------------------------------------------------- data

def first_batches(ds: ArrayDataset, n_batches: int | None) -> ArrayDataset:
    """The first ``n_batches`` batches' examples. Stateful data stays continuous: its first k·batch_size rows
    are the first k slices of every stream."""
    if n_batches is None or n_batches >= ds.n_batches:
        return ds
    n = n_batches * ds.batch_size
    return dataclasses.replace(ds, x=ds.x[:n], y=ds.y[:n])


def loaders(rung: Rung, args: argparse.Namespace) -> DataLoaders:
    dls = text.nietzsche_loaders(rung.kind, rung.batch_size, rung.bptt, seed=args.seed, vocab=rung.vocab,
                                 split=rung.split)
    return DataLoaders(first_batches(dls.train, args.train_batches), first_batches(dls.valid, args.valid_batches),
                       dls.info)


# --------------------------------------------------------------------------------------------- training

def lr_schedule(phase: Phase, lr: float, steps_per_epoch: int) -> Callable[[int], optax.Schedule]:
    """``total_steps -> schedule(step)`` for ``ParamSchedulerCB``."""
    if phase.schedule in ("sgdr", "cos_anneal"):
        warmup = math.ceil(steps_per_epoch / 20) if phase.schedule == "cos_anneal" else 0  # iteration < nb/20
        return lambda total: schedules.sgdr(lr, steps_per_epoch, cycle_len=1, cycle_mult=2, warmup_steps=warmup)
    if phase.schedule == "drop":
        return lambda total: optax.piecewise_constant_schedule(
            lr, {total - steps_per_epoch: 0.1} if total > steps_per_epoch else {})
    return lambda total: optax.constant_schedule(lr)


def adam_l2(learning_rate: optax.ScalarOrSchedule, l2: float, weight_decay: float) -> optax.GradientTransformation:
    """PyTorch's Adam with its ``weight_decay`` (L2 added to the gradient) and a decoupled one."""
    return optax.chain(optim.add_l2(l2), torch_adam(learning_rate, weight_decay=weight_decay))


def train(rung: Rung, dls: DataLoaders, args: argparse.Namespace) -> tuple[Learner, dict]:
    """Fit ``rung`` through its phases; the row of results.json."""
    lr = args.lr or rung.lr
    phases = (Phase(args.epochs, rung.phases[-1].schedule),) if args.epochs else rung.phases
    model = rung.model(len(dls.info["vocab"]))
    optimizer = (partial(adam_l2, l2=rung.l2, weight_decay=rung.weight_decay) if rung.l2
                 else partial(torch_adam, weight_decay=rung.weight_decay))
    # Every step of an epoch in one compiled call: an RNN step is tiny, so the per-call overhead dominates.
    learn = Learner(model, dls, loss_fn=cross_entropy, optimizer=optimizer, lr=lr,
                    metrics=[metrics.accuracy], seed=args.seed, steps_per_call=dls.train.n_batches)
    if rung.torch_init:  # the cells live under the models' "rnn" scope
        learn.state = learn.state.replace(params=torch_reinit(learn.state.params, jax.random.key(args.seed),
                                                              recurrent=lambda path: path[:1] == ("rnn",)))
    health = runs.diagnose(learn, args, rung.name)
    init_loss = learn.evaluate()["loss"]
    history: list[dict] = []
    t0 = time.perf_counter()
    for phase in phases:
        metrics_cb = MetricsCB(show=False)
        learn.fit(phase.epochs, callbacks=[
            metrics_cb, ProgressCB(),
            ParamSchedulerCB("learning_rate", lr_schedule(phase, phase.lr or lr, dls.train.n_batches))])
        runs.check_history(metrics_cb.history, at=f"model {rung.name}", hint=runs.lower_lr_hint(lr))
        history += [{**row, "epoch": len(history) + i} for i, row in enumerate(metrics_cb.history)]
    seconds = time.perf_counter() - t0
    valid = learn.evaluate()
    epochs = sum(p.epochs for p in phases)
    print(f"{rung.title:48s} valid loss {valid['loss']:.4f} (lesson {rung.lesson_note}), accuracy "
          f"{valid['accuracy']:.3f}, {epochs} epochs, {seconds:.0f} s", flush=True)
    row = {"model": rung.title, "name": rung.name, "protocol": args.protocol, "split": rung.split,
           "valid_loss": valid["loss"], "lesson_loss": rung.lesson_loss, "notebook_loss": rung.notebook_loss,
           "epochs": epochs, "seconds": round(seconds, 1), "lesson_note": rung.lesson_note,
           "valid_accuracy": valid["accuracy"], "init_valid_loss": init_loss, "lr": lr,
           "weight_decay": rung.weight_decay, "l2": rung.l2, "bptt": rung.bptt, "vocab": rung.vocab,
           "init": "torch" if rung.torch_init else "flax", "seed": args.seed,
           "vocab_size": len(dls.info["vocab"]),
           "schedule": " + ".join(f"{p.epochs} {p.schedule}" + (f" @{p.lr:g}" if p.lr else "") for p in phases),
           "batch_size": rung.batch_size,
           "n_train": len(dls.train), "params": sum(a.size for a in jax.tree.leaves(learn.state.params)),
           "history": history,
           **({"health": health} if health else {})}
    return learn, row


def samples_of(rung: Rung, learn: Learner, vocab: text.CharVocab, seed: int) -> dict[str, str]:
    temperatures = (TEMPERATURE, *LSTM_TEMPERATURES) if rung.name == "lstm" else (TEMPERATURE,)
    variables = {"params": learn.state.params}
    return {f"{t:g}": text.sample_text(learn.model, variables, vocab, PREFIX, SAMPLE_CHARS, temperature=t,
                                      seed=seed) for t in temperatures}


# ------------------------------------------------------------------------------------------ diagnostics

def plot_diagnostics(diagnostics: dict[str, dict], out: Path) -> None:
    import matplotlib.pyplot as plt
    from jaxlearn.callbacks.plots import integer_ticks
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (cell, d), color in zip(diagnostics.items(), ("C0", "C1", "C2")):
        for when, style in (("trained", "-"), ("init", "--")):
            for layer, norms in enumerate(d[when]["grad_norms"]):
                ax.plot(np.arange(len(norms)), norms, style, color=color, marker="o" if style == "-" else None,
                        alpha=1.0 if layer == len(d[when]["grad_norms"]) - 1 else 0.5,
                        label=f"{cell} layer {layer}, {when}")
    ax.set_yscale("log")
    integer_ticks(ax.xaxis)
    ax.set_xlabel("time step t in the bptt window (loss at every step; the gradient flows right to left)")
    ax.set_ylabel("‖∂L/∂h_t‖ (validation batches)")
    ax.set_title("How far back the gradient reaches through the window")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "grad_norms.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{cell}\n{gate}" for cell, d in diagnostics.items() for gate in d["trained"]["gate_saturation"]]
    for offset, when in ((-0.2, "init"), (0.2, "trained")):
        values = [100 * d[when]["gate_saturation"][g] for d in diagnostics.values()
                  for g in d["trained"]["gate_saturation"]]
        ax.bar(np.arange(len(values)) + offset, values, width=0.4, label=when)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=7)
    ax.set_xlabel("cell and gate (or the RNN's tanh output)")
    ax.set_ylabel("% saturated")
    ax.set_title("Gates outside (0.05, 0.95); the RNN: |tanh| > 0.97")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gate_saturation.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- report

def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_readme(out: Path, rows: list[dict], samples: dict[str, dict[str, str]], diagnostics: dict[str, dict],
                 args: argparse.Namespace, total_seconds: float) -> None:
    command = "python experiments/char_rnn.py" + (" --docs" if args.docs else f" --out {args.out}") + \
        (" --quick" if args.quick else f" --epochs {args.epochs}" if args.epochs else "") + \
        (" --full" if args.full else " --protocol lesson" if args.protocol == "lesson" else "") + \
        (f" --models {' '.join(args.models)}" if list(args.models) != list(NAMES) else "") + \
        (f" --seed {args.seed}" if args.seed else "")
    if args.protocol == "lesson":
        return write_lesson_readme(out, rows, samples, command, total_seconds)
    lines = [
        "# Character models of Nietzsche — fast.ai 2018 lessons 6–7 in jaxlearn",
        "",
        "The lesson's figure, its protocol and this held-out ladder side by side: [side_by_side.md](side_by_side.md).",
        "",
        f"Written by `{command}` in {total_seconds / 60:.1f} min on {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}). Every model trains on `jaxlearn.learner.Learner` with PyTorch's Adam, "
        f"one compiled call per epoch; the stateful ones carry their hidden state (the `carry` collection) from "
        f"batch to batch, cut from the gradient at each batch boundary and reset at every epoch start. "
        f"Validation = the last 20% of the text (120,179 characters); loss = mean per-character "
        f"cross-entropy (nats) from `learn.evaluate()`. Vocabulary (`text.nietzsche_loaders(vocab=...)`), as "
        f"in each lesson: lesson 6's rungs read every character of the text + padding (85 tokens); lesson 7's "
        f"(the stateful RNN, GRU and LSTM) its torchtext vocabulary, lowercased, the characters seen at least 3 "
        f"times in training + unknown + padding (56 tokens).",
        "",
        "| model | valid loss | lesson | accuracy | epochs (schedule) | vocab | bptt | lr | wd | params | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {fmt(r['valid_loss'])} | {r['lesson_note']} | {r['valid_accuracy']:.3f} "
                     f"| {r['epochs']} ({r['schedule']}) | {r['vocab_size']} | {r['bptt']} | {r['lr']:g} "
                     f"| {r['weight_decay']:g} "
                     f"| {r['params']:,} | {r['seconds']:.0f} |")
    lines += [
        "",
        "Epochs are fewer than the lessons' so that the whole ladder fits a 2-core CPU (the time above); "
        "the default LSTM is two layers of 384 (dropout 0.5 between them) on windows of 16 characters, with "
        "decoupled weight decay 0.1, for 15 SGDR epochs (the configurations tried are listed above "
        "`LSTM_DEFAULT` in `experiments/char_rnn.py`). The lesson's LSTM (2 × 512, "
        "dropout 0.5, Adam lr 1e-2 with L2 1e-5, fit 2 + CosAnneal 15 + CosAnneal 63 epochs) is "
        "`python experiments/char_rnn.py --models lstm --full` ([lesson/](lesson/README.md)). The lesson-6 rungs "
        "are validated on the last 20% of the text like lesson 7's; lesson 6's notebook drew its validation "
        "windows at random from the whole text (`get_cv_idxs`), next to overlapping training windows, an easier "
        "test: `--protocol lesson` trains every rung that way.",
        "",
        "## Samples",
        "",
        f"{SAMPLE_CHARS} characters after `{PREFIX}` (`{PREFIX.lower()}` in lesson 7's lowercase vocabulary), "
        f"temperature {TEMPERATURE} unless said "
        f"(`jaxlearn.text.sample_text`; the window models slide over their last 3 or 8 characters).",
        "",
    ]
    for r in rows:
        for t, s in samples[r["name"]].items():
            prefix = PREFIX.lower() if r["vocab"] == "lesson7" else PREFIX
            lines += [f"**{r['model']}**, temperature {t}:", "", "```", prefix + s, "```", ""]
    if diagnostics:
        lines += [
            "## Beyond the lesson: gradients through the window, gate saturation",
            "",
            f"Averaged over {DIAG_BATCHES} consecutive validation batches after {DIAG_WARMUP} warm-up ones "
            "(hidden state carried), for each stateful model trained (solid) and at init (dashed). "
            "‖∂L/∂h_t‖ (`text.hidden_grad_norms`) includes every path through the later steps: h_t serves the "
            "outputs of steps t … T−1 (T = the model's bptt window), so a gradient that survives the recurrence "
            "grows towards t = 0.",
            "",
            "![grad norms](grad_norms.png)",
            "",
            "| cell | ‖∂L/∂h_t‖, t = 0 … T−1 (last layer, trained) | ratio t=0 / t=T−1 | saturated (trained) |",
            "|---|---|---|---|",
        ]
        for cell, d in diagnostics.items():
            norms = d["trained"]["grad_norms"][-1]
            sat = ", ".join(f"{k} {100 * v:.1f}%" for k, v in d["trained"]["gate_saturation"].items())
            lines.append(f"| {cell} | {' '.join(f'{n:.3g}' for n in norms)} | {norms[0] / norms[-1]:.2f} | {sat} |")
        lines += ["", "![gate saturation](gate_saturation.png)", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def gathered(out: Path, args: argparse.Namespace) -> tuple[list[dict], dict, dict]:
    """The rows, samples and diagnostics of earlier runs in ``out`` that this run adds to (``--protocol
    lesson``, whose rungs may be run one at a time: the full LSTM alone takes over an hour); nothing otherwise."""
    if not args.keep_results or not (out / "results.json").is_file():
        return [], {}, {}
    rows = [r for r in json.loads((out / "results.json").read_text()) if r.get("protocol") == args.protocol]
    extra = [json.loads((out / f).read_text()) if (out / f).is_file() else {}
             for f in ("samples.json", "diagnostics.json")]
    return rows, *extra


def seed_of(row: dict) -> int:
    """The seed a row was trained with (rows recorded before the rows named it: the default, 0)."""
    return row.get("seed", 0)


def merged(earlier: list[dict], rows: list[dict]) -> list[dict]:
    """``earlier`` with the rungs of ``rows`` replaced or added (one row per rung and seed), in the ladder's order,
    each rung's seeds in ascending order."""
    by_key = {(r["name"], seed_of(r)): r for r in earlier} | {(r["name"], seed_of(r)): r for r in rows}
    return [by_key[k] for k in sorted(by_key, key=lambda k: (NAMES.index(k[0]), k[1]))]


def by_seed(rows: list[dict]) -> dict[str, list[dict]]:
    """Each rung's rows, its lowest seed first (a rung run with several seeds, ``--seed``)."""
    grouped: dict[str, list[dict]] = {}
    for r in sorted(rows, key=seed_of):
        grouped.setdefault(r["name"], []).append(r)
    return grouped


def torch_reference() -> dict[str, dict]:
    """benchmarks/lesson_protocol_torch.py's rows: the notebooks' PyTorch code under the lesson protocol."""
    path = TORCH_REFERENCE
    return json.loads(path.read_text()) if path.is_file() else {}


def tolerance(lesson_note: str) -> float:
    """The issue's test of a rung: ±0.02 of a figure the lesson gives to two decimals, ±0.03 otherwise (≈1.5)."""
    return 0.03 if lesson_note.startswith("≈") else 0.02


def after_each_fit(row: dict) -> list[float]:
    """The validation loss at the end of each of a row's fits (its schedule: "4 constant + 1 constant @0.0001")."""
    ends = np.cumsum([int(part.split()[0]) for part in row["schedule"].split(" + ")])
    history = row.get("history", [])
    return [history[e - 1]["valid_loss"] for e in ends if e <= len(history)]


def side_by_side(held_out_dir: Path) -> str | None:
    """The table of docs/char_rnn/side_by_side.md: every rung's lesson figure, its loss under the lesson's protocol
    (jaxlearn's and, where measured, the notebook's PyTorch code's) and held out, once both protocols have results
    in ``held_out_dir`` (and its ``lesson`` folder)."""
    paths = held_out_dir / "results.json", held_out_dir / "lesson" / "results.json"
    if not all(p.is_file() for p in paths):
        return None
    held_out = {r["name"]: r for r in json.loads(paths[0].read_text())}
    lesson = by_seed(json.loads(paths[1].read_text()))
    torch = torch_reference()
    lines = ["| rung | lesson | the notebook printed | jaxlearn, lesson protocol | PyTorch, the notebook's code, "
             "same protocol | within the lesson's ± | held out (this ladder) |", "|---|---|---|---|---|---|---|"]
    for name in NAMES:
        h, seeds = held_out.get(name), lesson.get(name, [])
        l_ = seeds[0] if seeds else None
        if h is None and l_ is None:
            continue
        first = l_ or h
        losses = [r["valid_loss"] for r in seeds]
        printed = fmt(first.get("notebook_loss")) if l_ else ""
        fits = after_each_fit(l_) if l_ else []
        protocol = (f"**{l_['valid_loss']:.4f}** ({l_['schedule']}, {l_['split']} split"
                    + (f"; after each fit {' → '.join(f'{v:.4f}' for v in fits)}" if len(fits) > 1 else "") + ")"
                    if l_ else "not run")
        if len(seeds) > 1:  # the verdict then takes the seeds' mean: one run of a rung varies by seed
            protocol += (f"; seeds {', '.join(str(seed_of(r)) for r in seeds)}: "
                         f"{', '.join(f'{v:.4f}' for v in losses)}, mean {np.mean(losses):.4f}")
        reference = fmt(torch[name]["valid_loss"]) if name in torch else "–"
        partial = torch.get(f"{name}_2_15")  # only the LSTM's first two fits: its 80 epochs take hours
        if name not in torch and partial and len(fits) > 1:
            reference = f"{partial['valid_loss']:.4f} after the first two fits (jaxlearn: {fits[1]:.4f})"
        verdict = "–"
        if l_ and first["lesson_loss"] is not None:
            tol = tolerance(first["lesson_note"])
            met = abs(np.mean(losses) - first["lesson_loss"]) <= tol
            verdict = f"{'yes' if met else 'no'} (±{tol:g}" + (f", mean of {len(seeds)} seeds)" if len(seeds) > 1
                                                                else ")")
            early = [k for k, v in enumerate(fits[:-1]) if abs(v - first["lesson_loss"]) <= tol]
            if verdict.startswith("no") and early:  # the lesson printed its figure after an earlier fit
                verdict += f"; after fit {early[0] + 1} ({fits[early[0]]:.4f}): yes"
        held = f"{h['valid_loss']:.4f} ({h['schedule']})" if h else "not run"
        lines.append(f"| {first['model']} | {first['lesson_note']} | {printed} | {protocol} | {reference} | {verdict} "
                     f"| {held} |")
    return "\n".join(lines)


def write_side_by_side(out: Path, args: argparse.Namespace) -> None:
    held_out_dir = out.parent if args.protocol == "lesson" else out
    table = side_by_side(held_out_dir)
    if table is not None:
        (held_out_dir / "side_by_side.md").write_text("\n".join([
            "# Every rung: the lesson's figure, the lesson's protocol, held out", "",
            "Validation loss (mean per-character cross-entropy, nats). *Lesson protocol*: `--protocol lesson`, "
            "each rung trained as its notebook trains it (`LESSON_LADDER` in `experiments/char_rnn.py`; results "
            "in [lesson/](lesson/README.md)); lesson 6's rungs validated on a random 20% of their examples drawn "
            "from the whole text (`get_cv_idxs`), lesson 7's on the last 20%. *Held out*: the default ladder "
            "([README](README.md)), every rung validated on the last 20% of the text. *The notebook printed*: "
            "the loss lesson6-rnn.ipynb shows for the recipe, where the lecture's figure differs. *PyTorch, the "
            "notebook's code*: `python benchmarks/lesson_protocol_torch.py`, the notebook's models and training "
            "written as it writes them, on the very same data and split: where jaxlearn misses the lesson's figure, "
            "this column is the measured reason (the notebook's own code, run today, lands where jaxlearn does, "
            "or the notebook printed something else than the lecture said).", "",
            table, ""]), encoding="utf-8")


def write_lesson_readme(out: Path, rows: list[dict], samples: dict[str, dict[str, str]], command: str,
                        total_seconds: float) -> None:
    flax_rows = [r["model"] for r in rows if r.get("init", "flax") == "flax"]  # runs made before the protocol drew them
    flax_note = f"; the recorded runs of {', '.join(flax_rows)} had flax's" if flax_rows else ""
    lines = [
        "# Character models of Nietzsche under the lessons' own protocol",
        "",
        f"Each rung as lesson6-rnn.ipynb trains it (`LESSON_LADDER` in `experiments/char_rnn.py`), gathered from "
        f"runs of `python experiments/char_rnn.py --protocol lesson [--models ...]` (the last: `{command}`, "
        f"{total_seconds / 60:.1f} min on {jax.devices()[0].device_kind}). Torch's Adam at the notebook's lr, "
        f"`fit`, `set_lrs`, `fit` again (the schedule column: epochs, schedule @ the phase's lr), no weight decay "
        f"but the LSTM's L2 1e-5 (`LayerOptimizer(Adam, m, 1e-2, 1e-5)`); the LSTM's CosAnneal holds lr/100 for "
        f"the first 1/20 of each fit's first cycle, as fastai 0.7's. Init *torch*: the parameters drawn as "
        f"PyTorch's defaults draw them (`jaxlearn.nn.torch_init.torch_reinit`: flax's LeCun-normal kernels are √3 "
        f"times wider and cost the CharLoopModels 0.08–0.2 nats here){flax_note}. Split: "
        f"*random* = lesson "
        f"6's `get_cv_idxs`, 20% of the examples at random (seed 42) drawn from the whole text, so the "
        f"CharLoopModel's overlapping validation windows share 7 of their 8 characters with training windows; "
        f"*end* = lesson 7's last 20% of the text. Left as they are: torchtext's random bptt (the notebook's "
        f"windows vary around 8; here every window is 8) and the hidden state the notebook carried from training "
        f"into validation (here it restarts at zero every epoch). The same ladder held out: "
        f"[../README.md](../README.md); side by side: [../side_by_side.md](../side_by_side.md).",
        "",
        "| model | valid loss | seed | lesson | the notebook printed | split | init | accuracy | epochs (schedule) "
        "| vocab | lr | L2 | params | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {fmt(r['valid_loss'])} | {seed_of(r)} | {r['lesson_note']} "
                     f"| {fmt(r.get('notebook_loss'))} "
                     f"| {r['split']} | {r.get('init', 'flax')} | {r['valid_accuracy']:.3f} "
                     f"| {r['epochs']} ({r['schedule']}) "
                     f"| {r['vocab_size']} | {r['lr']:g} | {r['l2']:g} | {r['params']:,} | {r['seconds']:.0f} |")
    lines += ["", "## Samples", "",
              f"{SAMPLE_CHARS} characters after `{PREFIX}`, temperature {TEMPERATURE} unless said.", ""]
    for r in (seeds[0] for seeds in by_seed(rows).values()):  # the samples are the lowest seed's
        for t, s in samples.get(r["name"], {}).items():
            prefix = PREFIX.lower() if r["vocab"] == "lesson7" else PREFIX
            lines += [f"**{r['model']}**, temperature {t}:", "", "```", prefix + s, "```", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    out = runs.prepare_run(args)
    source = LESSON_LADDER if args.protocol == "lesson" else LADDER
    ladder = [r for r in source if r.name in args.models]
    earlier_rows, samples, diagnostics = gathered(out, args)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for rung in ladder:
        dls = loaders(rung, args)
        learn, row = train(rung, dls, args)
        rows.append(row)
        if args.seed == 0 or rung.name not in samples:  # another seed's run adds its row beside seed 0's only
            samples[rung.name] = samples_of(rung, learn, dls.info["vocab"], args.seed)
        if rung.name in DIAGNOSED and (args.seed == 0 or DIAGNOSED[rung.name] not in diagnostics):
            init_params = learn.model.init(jax.random.key(args.seed), dls.train.x[:2])["params"]  # a fresh init
            diagnostics[DIAGNOSED[rung.name]] = {
                when: text.carried_diagnostics(learn.model, params, dls.valid, DIAG_BATCHES, DIAG_WARMUP)
                for when, params in (("trained", learn.state.params), ("init", init_params))}
        # after every rung: a long run shows its progress
        runs.write_json(out / "results.json", merged(earlier_rows, rows))
    total = time.perf_counter() - t0
    all_rows = merged(earlier_rows, rows)
    runs.write_json(out / "samples.json", samples)
    runs.write_json(out / "diagnostics.json", diagnostics)
    if diagnostics:
        plot_diagnostics(diagnostics, out)
    write_readme(out, all_rows, samples, diagnostics, args, total)
    write_side_by_side(out, args)
    print(f"ladder done in {total / 60:.1f} min; results in {out}")
    return rows


if __name__ == "__main__":
    main()
