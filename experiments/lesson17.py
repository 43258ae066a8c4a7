"""fast.ai 2022 lesson 17's ladder on Fashion-MNIST, rung by rung, beside the lesson's numbers.

    python experiments/lesson17.py                      # the whole ladder -> runs/lesson17/
    python experiments/lesson17.py --docs               # the same, published: -> docs/lesson17/
    python experiments/lesson17.py --rungs baseline batchnorm --out runs/l17
    python experiments/lesson17.py --quick              # < 1 min: batchnorm, 1 epoch a fit, 1,024 images

Every rung trains the lesson's plain stride-2 CNN (1→8→16→32→64→10) with SGD + momentum 0.85 (the lesson's
``MomentumLearner``: heavy-ball momentum, ``optax.sgd(momentum=0.85)``), lr 0.2 and batch size 1024, for as many
epochs as the lesson's notebook (``11_initializing``) ran: ``fit(1)`` for the baseline, ``fit(3)`` for the others. Each
rung changes one thing:

1. ``baseline``     plain ReLU, PyTorch's default init, raw [0, 1] pixels: the LR finder (start 1e-2, ×1.1 a batch,
                    as in the lesson) is "ridiculous" and training collapses;
2. ``kaiming``      Kaiming-normal init (raw input);
3. ``input_norm``   + input normalization ``(x - 0.28) / 0.35`` (``BatchTransformCB``);
4. ``general_relu`` + ``GeneralRelu(leak=0.1, sub=0.4)`` with the matching leaky Kaiming init;
5. ``lsuv``         LSUV (on one normalized batch of 1024) instead of Kaiming;
6. ``layernorm``    + LayerNorm (from scratch, ``jaxlearn.nn.norms``);
7. ``batchnorm``    + BatchNorm, batch size 256: 3 epochs at lr 0.2, then (as the lesson, with a new Learner, i.e. a
                    fresh optimizer) 2 more at lr 0.05 — two rows, ``batchnorm`` and ``batchnorm_5ep``;
8. ``beyond``       past the lesson with the same plain CNN: AdamW + one-cycle (fastai's follow-up), 5 epochs.

``--epochs``, ``--bs`` and ``--lr`` override every rung's (the continuation of ``batchnorm`` keeps its lr 0.05).
A rung whose loss turns NaN stops the run with exit status 2, before its results are written.

Each rung's test accuracy is printed beside the lesson's and saved; the script writes ``OUT/results.json``
(rows ``{rung, test_accuracy, lesson_accuracy, epochs, ...}``; rungs not run this time are kept from an earlier
``results.json``), ``OUT/README.md`` (the table) and, per rung, ``OUT/<rung>_stats.png`` (activation means and
stds), ``OUT/<rung>_color_dim.png`` (log histogram of |activations| per layer over the batches),
``OUT/<rung>_dead.png`` (share of |activations| in the lowest bin), ``OUT/<rung>_loss.png`` and, for the
baseline, ``OUT/baseline_lr_find.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import optim
from jaxlearn.optim import schedules
from jaxlearn.callback import Callback
from jaxlearn.callbacks import ActivationStats, BatchTransformCB, MetricsCB, ParamSchedulerCB, lr_find
from jaxlearn.callbacks.plots import plot_losses
from jaxlearn.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataLoaders, fashion_mnist, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu, LayerNorm, kaiming_normal, lsuv, torch_default
from jaxlearn.vision import get_model

import runs

MOMENTUM = 0.85                     # miniai MomentumLearner's default
LESSON_NFS = (1, 8, 16, 32, 64)

relu = GeneralRelu  # leak=None, sub=None: a plain ReLU, but a module, so ActivationStats captures it
general_relu = partial(GeneralRelu, leak=0.1, sub=0.4)


@dataclass
class Stage:
    """One ``fit`` of a rung; ``row`` names the result row recorded after it (None: no row)."""
    epochs: int
    lr: float | None = None
    row: str | None = None
    lesson_accuracy: float | None = None
    lesson: str = ""
    fresh_optimizer: bool = False  # the lesson built a new MomentumLearner here: momentum starts from zero
    notes: str | None = None       # the row's notes (default: the rung's)


@dataclass
class Rung:
    name: str
    notes: str
    stages: list[Stage]
    act: Callable = general_relu
    init: str = "kaiming"           # 'torch' (PyTorch default), 'kaiming' (a = the act's leak), 'lsuv'
    normalize_input: bool = True
    norm: Callable | None = None
    bs: int = 1024
    lr: float = 0.2
    nfs: tuple[int, ...] = LESSON_NFS
    optimizer: Callable = partial(optax.sgd, momentum=MOMENTUM)
    one_cycle: bool = False          # one-cycle lr (and b1) over the whole fit, peak = ``lr``
    lr_find: bool = False
    extra: dict = field(default_factory=dict)


LADDER: list[Rung] = [
    Rung("baseline", "plain ReLU, PyTorch default init U(±1/√fan_in), raw [0,1] pixels; LR finder first",
         [Stage(1, row="baseline", lesson_accuracy=0.482, lesson="48.2% (fails)")], act=relu, init="torch",
         normalize_input=False,
         lr_find=True),
    Rung("kaiming", "Kaiming normal init (gain √2), raw pixels",
         [Stage(3, row="kaiming", lesson_accuracy=0.70, lesson="~70%")], act=relu, normalize_input=False),
    Rung("input_norm", "+ input normalization (x-0.28)/0.35",
         [Stage(3, row="input_norm", lesson_accuracy=0.85, lesson="85%")], act=relu),
    Rung("general_relu", "+ GeneralRelu(leak 0.1, sub 0.4), Kaiming a=0.1",
         [Stage(3, row="general_relu", lesson_accuracy=0.87, lesson="87%")]),
    Rung("lsuv", "LSUV (on one normalized batch of 1024) instead of Kaiming; GeneralRelu(0.1, 0.4)",
         [Stage(3, row="lsuv", lesson_accuracy=0.86, lesson="86%")], init="lsuv"),
    Rung("layernorm", "+ LayerNorm (scalar scale/shift) after each conv; Kaiming a=0.1",
         [Stage(3, row="layernorm", lesson_accuracy=0.873, lesson="87.3%")], norm=LayerNorm),
    Rung("batchnorm", "BatchNorm (jaxlearn.nn.norms, mom 0.1), bs 256, lr 0.2 for 3 epochs, then 2 more at lr 0.05 "
         "with a fresh optimizer (the lesson's new MomentumLearner)",
         [Stage(3, row="batchnorm", lesson_accuracy=0.878, lesson="87.8%",
                notes="+ BatchNorm (jaxlearn.nn.norms, mom 0.1) after each conv, bs 256, 3 epochs at lr 0.2"),
          Stage(2, lr=0.05, row="batchnorm_5ep", lesson_accuracy=0.899, lesson="89.9%", fresh_optimizer=True,
                notes="the same model, 2 more epochs at lr 0.05 with a fresh optimizer (the lesson's new "
                      "MomentumLearner)")],
         norm=BatchNorm, bs=256),
]

# Past the lesson: the same plain CNN family (stride-2 conv + BatchNorm + GeneralRelu blocks, no residuals, no
# augmentation), trained the way fastai's follow-up did: AdamW (wd 0.01) with one-cycle lr and b1 schedules.
BEYOND = Rung("beyond", "AdamW (wd 0.01) + one-cycle lr (peak 3e-2), b1 0.95→0.85→0.95; BatchNorm, "
              "GeneralRelu(0.1, 0.4), leaky Kaiming, the lesson's nfs; bs 256",
              [Stage(5, row="beyond", lesson_accuracy=0.906, lesson="90.6% (fastai follow-up)")],
              norm=BatchNorm, bs=256, lr=3e-2, optimizer=partial(optim.adamw, weight_decay=1e-2), one_cycle=True)
LADDER.append(BEYOND)
RUNGS = {r.name: r for r in LADDER}


class LossRecorder(Callback):
    """Every training batch's loss, kept on the device until the fit ends (over all of a rung's fits)."""
    def __init__(self):
        self.chunks: list[jax.Array] = []

    def after_batch(self, learn: Learner) -> None:
        if learn.training:
            self.chunks.append(learn.losses)

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(jnp.concatenate(self.chunks)) if self.chunks else np.zeros(0)


def kernel_init_for(rung: Rung):
    if rung.init in ("torch", "lsuv"):
        return torch_default()  # LSUV starts from PyTorch's default, as in the lesson
    leak = getattr(rung.act, "keywords", {}).get("leak") or 0.0
    return kaiming_normal(a=leak)


def concat_stats(parts: list[dict]) -> dict:
    """ActivationStats.stats of consecutive fits, joined along the batch axis."""
    parts = [p for p in parts if p]
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def health(stats: dict) -> dict:
    """Numbers behind the pictures: per layer, the dead share and std over the first and last 10% of batches."""
    out = {}
    for name, s in stats.items():
        n = len(s["dead"])
        k = max(1, n // 10)
        out[name] = {"dead_first": float(np.mean(s["dead"][:k])), "dead_last": float(np.mean(s["dead"][-k:])),
                     "std_first": float(np.mean(s["std"][:k])), "std_last": float(np.mean(s["std"][-k:])),
                     "dead_max": float(np.max(s["dead"]))}
    return out


def run_rung(rung: Rung, data: dict, out: Path, seed: int, n_train: int | None, steps_per_call: int,
             args: argparse.Namespace | None = None) -> list[dict]:
    (x, y), test = data["train"], data["test"]
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    dls = DataLoaders.from_arrays((x, y), test, min(rung.bs, len(x)), seed=seed)
    model = get_model(rung.act, rung.nfs, norm=rung.norm, kernel_init=kernel_init_for(rung))
    metrics, astats, losses = MetricsCB(), ActivationStats(GeneralRelu), LossRecorder()
    normalizer = BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD))
    cbs = [metrics] + ([normalizer] if rung.normalize_input else [])
    learn = Learner(model, dls, optimizer=rung.optimizer, lr=rung.lr, seed=seed, callbacks=cbs,
                    steps_per_call=steps_per_call)
    prefix = out / rung.name
    t0 = time.perf_counter()
    extra: dict = {}
    if args is not None and (report := runs.diagnose(learn, args, rung.name)):
        extra["health"] = report
    if rung.init == "lsuv":
        xb = dls.train.transform(dls.train.x[:min(1024, len(dls.train))])
        xb = normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)(xb) if rung.normalize_input else xb
        new = lsuv(model, learn.state.variables(), xb, train=False)
        learn.state = learn.state.replace(params=new["params"])
    if rung.lr_find:
        # The lesson's call: lr_find(gamma=1.1, start_lr=1e-2) on the un-normalized, default-init model.
        finder = lr_find(learn, start_lr=1e-2, gamma=1.1, max_mult=3.0, plot_path=f"{prefix}_lr_find.png")
        i_min = int(np.nanargmin(finder.losses))
        extra["lr_find"] = {"lrs": [float(v) for v in finder.lrs], "losses": [float(v) for v in finder.losses],
                            "lr_at_min": float(finder.lrs[i_min]), "min_loss": float(finder.losses[i_min]),
                            "suggestion": float(finder.suggestion)}
        print(f"  LR finder: smoothed loss min {finder.losses[i_min]:.3f} at lr {finder.lrs[i_min]:.3g} "
              f"(start {finder.losses[0]:.3f}), suggestion {finder.suggestion:.3g}")
    rows, stats_parts, epochs = [], [], 0
    for stage in rung.stages:
        fit_cbs = [astats, losses]  # per fit, so the LR finder's batches are not recorded
        if rung.one_cycle:
            fit_cbs += [ParamSchedulerCB("learning_rate", lambda n: schedules.one_cycle(rung.lr, n)),
                        ParamSchedulerCB("b1", lambda n: schedules.one_cycle_momentum(n))]
        if stage.fresh_optimizer:
            learn.state = learn.state.replace(opt_state=learn.state.tx.init(learn.state.params))
        learn.fit(stage.epochs, lr=stage.lr, callbacks=fit_cbs)
        runs.check_history(metrics.history, at=f"rung {rung.name}",
                           hint=runs.lower_lr_hint(stage.lr if stage.lr is not None else rung.lr))
        stats_parts.append(astats.stats)
        epochs += stage.epochs
        if stage.row is not None:
            test_metrics = learn.evaluate()
            rows.append({"rung": stage.row, "test_accuracy": test_metrics["accuracy"],
                         "lesson_accuracy": stage.lesson_accuracy, "lesson": stage.lesson, "epochs": epochs,
                         "test_loss": test_metrics["loss"], "batch_size": dls.train.batch_size,
                         "lr": stage.lr if stage.lr is not None else rung.lr, "notes": stage.notes or rung.notes,
                         "history": list(metrics.history)})
            lesson = f"{stage.lesson_accuracy:.3f}" if stage.lesson_accuracy is not None else stage.lesson
            print(f"{stage.row:>14}: test accuracy {test_metrics['accuracy']:.4f}   lesson {lesson}   "
                  f"({epochs} epoch{'s' if epochs > 1 else ''})")
    seconds = time.perf_counter() - t0
    stats = concat_stats(stats_parts)
    astats_files = {}
    from jaxlearn.callbacks.plots import color_dim, dead_chart, plot_stats
    for kind, fn in (("stats", plot_stats), ("color_dim", color_dim), ("dead", dead_chart)):
        fn(stats, path=f"{prefix}_{kind}.png")
        astats_files[kind] = f"{rung.name}_{kind}.png"
    plot_losses(losses.losses, path=f"{prefix}_loss.png")
    summary = health(stats)
    for row in rows:
        row.update(seconds=seconds, seed=seed, n_train=len(x), plots=astats_files, activation_health=summary,
                   **extra)
    return rows


def load_previous(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


ROW_ORDER = [s.row for r in LADDER for s in r.stages if s.row]


def merge(previous: list[dict], new: list[dict]) -> list[dict]:
    by_name = {r["rung"]: r for r in previous}
    by_name.update({r["rung"]: r for r in new})
    return [by_name[n] for n in ROW_ORDER if n in by_name]


def write_readme(out: Path, rows: list[dict]) -> None:
    commands = list(dict.fromkeys(r.get("command", "python experiments/lesson17.py") for r in rows))
    runtimes = list(dict.fromkeys((r["plots"]["stats"].removesuffix("_stats.png"), r["seconds"])
                                  for r in rows if "plots" in r and "seconds" in r))
    lines = ["# Lesson 17's ladder on Fashion-MNIST (jaxlearn)", "",
             "Written by `experiments/lesson17.py` (" + "; ".join(f"`{c}`" for c in commands) + ").", "",
             "Test accuracy on the 10,000 Fashion-MNIST test images (the lesson's validation set). As in the lesson's "
             "notebook (`11_initializing`): SGD + momentum 0.85 (`MomentumLearner`), lr 0.2, batch size 1024, "
             "`fit(1)` for the baseline and `fit(3)` for the other rungs unless noted; `epochs` counts all the "
             "epochs behind a row.", "",
             "| rung | ours | lesson | epochs | notes |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lesson = r.get("lesson") or ("" if r["lesson_accuracy"] is None else f"{r['lesson_accuracy']:.1%}")
        notes = r["notes"] + (f" (bs {r['batch_size']}, n_train {r['n_train']})" if r.get("n_train", 60000) != 60000
                              else "")
        lines.append(f"| {r['rung']} | {r['test_accuracy']:.2%} | {lesson} | {r['epochs']} | {notes} |")
    if runtimes:
        lines += ["", "Wall-clock seconds per rung (compilation, LR finder, training and evaluation; "
                  "2 shared CPU cores): "
                  + ", ".join(f"{name} {sec:.0f}" for name, sec in runtimes)
                  + f"; {sum(sec for _, sec in runtimes) / 60:.1f} min in all."]
    if (out / "OBSERVATIONS.md").exists():
        lines += ["", "What the pictures show, and how the epochs and the `beyond` setting were chosen: "
                  "[OBSERVATIONS.md](OBSERVATIONS.md)."]
    lines += ["", "## Inside the activations", "",
              "Per rung, over the GeneralRelu/ReLU outputs of the four conv blocks (the last conv has none): "
              "the share of |activation| in the lowest histogram bin ([0, 0.25), miniai's `dead_chart`) and the "
              "activation std, averaged over the first and the last 10% of training batches.", "",
              "| rung | layer | dead first → last (max) | std first → last |", "| --- | --- | --- | --- |"]
    seen = set()
    for r in rows:
        plots = r.get("plots", {})
        key = plots.get("stats")
        if key in seen or "activation_health" not in r:
            continue
        seen.add(key)
        for layer, h in r["activation_health"].items():
            lines.append(f"| {r['rung']} | {layer.split('/')[0]} | {h['dead_first']:.2f} → {h['dead_last']:.2f} "
                         f"({h['dead_max']:.2f}) | {h['std_first']:.3f} → {h['std_last']:.3f} |")
    lines += ["", "## Pictures", ""]
    seen = set()
    for r in rows:
        plots = r.get("plots")
        if not plots or plots["stats"] in seen:
            continue
        seen.add(plots["stats"])
        name = plots["stats"].removesuffix("_stats.png")
        lines.append(f"### {name}")
        lines.append("")
        if "lr_find" in r:
            lf = r["lr_find"]
            lines.append(f"LR finder: smoothed loss minimum {lf['min_loss']:.3f} at lr {lf['lr_at_min']:.3g}; "
                         f"suggestion (lr at the minimum / 10) {lf['suggestion']:.3g}.")
            lines.append("")
            lines.append(f"![{name} LR finder]({name}_lr_find.png)")
        for kind in ("stats", "color_dim", "dead"):
            lines.append(f"![{name} {kind}]({plots[kind]})")
        lines.append(f"![{name} loss]({name}_loss.png)")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = runs.experiment_parser(
        "lesson17", __doc__.splitlines()[0], seed=0, epochs=None, bs=None, lr=None,
        helps={"epochs": "epochs of every fit of every rung (default: the lesson's, per rung)",
               "bs": "batch size of every rung (default: the lesson's, 1024, or 256 with BatchNorm)",
               "lr": "learning rate of every rung (default: the lesson's, per rung; batchnorm's continuation "
                     "keeps its 0.05)"},
        quick={"rungs": ["batchnorm"], "epochs": 1, "n_train": 1024},
        keep_results=True)  # results.json gathers the rungs of every run: the ladder may be run rung by rung
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS),
                        help="rungs to run (default: all, in ladder order)")
    parser.add_argument("--n-train", type=runs.positive_int, default=None,
                        help="train on the first N images (smoke runs)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite OUT/README.md from OUT/results.json (notes from the current ladder); no training")
    parser.add_argument("--steps-per-call", type=runs.positive_int, default=1,
                        help="batches per compiled call (lax.scan); the LR finder always steps one at a time")
    return parser.parse_args(argv)


def with_overrides(rung: Rung, epochs: int | None, bs: int | None, lr: float | None) -> Rung:
    """``rung`` with the command line's --epochs (every fit), --bs and --lr where they were given."""
    stages = [replace(stage, epochs=epochs) for stage in rung.stages] if epochs is not None else rung.stages
    return replace(rung, stages=stages, bs=bs if bs is not None else rung.bs, lr=lr if lr is not None else rung.lr)


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    command = "python experiments/lesson17.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs.prepare_run(args)
    if args.report_only:
        rows = load_previous(args.out / "results.json")
        notes = {s.row: s.notes or r.notes for r in LADDER for s in r.stages if s.row}
        for row in rows:
            row["notes"] = notes.get(row["rung"], row.get("notes", ""))
        runs.write_json(args.out / "results.json", rows, indent=1)
        write_readme(args.out, rows)
        return rows
    data = fashion_mnist()
    new_rows: list[dict] = []
    t0 = time.perf_counter()
    for name in [n for n in RUNGS if n in args.rungs]:
        print(f"== {name}: {RUNGS[name].notes}")
        rung = with_overrides(RUNGS[name], args.epochs, args.bs, args.lr)
        new_rows += run_rung(rung, data, args.out, args.seed, args.n_train, args.steps_per_call, args)
    total = time.perf_counter() - t0
    for r in new_rows:
        r["command"] = command.strip()
    rows = merge(load_previous(args.out / "results.json"), new_rows)
    runs.write_json(args.out / "results.json", rows, indent=1)
    write_readme(args.out, rows)
    print(f"\n{'rung':>14} {'ours':>8} {'lesson':>24} {'epochs':>6}")
    for r in rows:
        lesson = r.get("lesson") or ""
        print(f"{r['rung']:>14} {r['test_accuracy']:>8.4f} {lesson:>24} {r['epochs']:>6}")
    print(f"total {total:.0f} s; wrote {args.out / 'results.json'} and {args.out / 'README.md'}")
    return rows


if __name__ == "__main__":
    main()
