"""makemore part 3: the lecture's ladder of fixes and its activation / gradient diagnostics, side by side with
the lecture's numbers.

    python experiments/makemore.py                 # full: 200,000 steps per rung (a few minutes on a CPU)
    python experiments/makemore.py --docs          # the same, published to docs/makemore/
    python experiments/makemore.py --steps 5000 --out /tmp/mm --diag-steps 200   # quick look
    python experiments/makemore.py --quick         # < 1 min: 1,000 steps per rung, no deep-net diagnostics

Writes under ``--out`` (default runs/makemore; docs/makemore with ``--docs``):
  results.json      list of {rung, train_loss, val_loss, lecture_train, lecture_val, ...} — the ladder
  diagnostics.json  per deep-net configuration and tanh layer: mean, std, % saturated, gradient std, at init
                    and after --diag-steps steps; grad:data and final update:data ratios per weight
  README.md         both as markdown tables
  ladder_loss.png   training loss (log10, mean of each 1,000 steps) of every rung
  deep_*.png        per configuration: activation / activation-gradient / weight-gradient histograms at init
                    and after training, and the update:data ratio over training with the -3 guideline
  deep_summary.png  activation std and % saturated per layer for every configuration
Names come from $JAXLEARN_NAMES_PATH (makemore's names.txt). A rung whose training loss turns NaN stops the run
with exit status 2 and no results.json.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from jaxlearn import data
from jaxlearn import makemore as mm
from jaxlearn.data import ArrayDataset
from jaxlearn.nn import calibrate_batchnorm

import runs

TOLERANCE = 0.02
SMOKE_RUN = "smoke run (--quick): not comparable to the lecture"
EVAL_BATCH = 8192  # examples per step when scoring a whole split
DIVERGED_HINT = "the lecture's SGD (lr 0.1, then 0.01) should not diverge: check the rung's initialization"

# (file stem, title, model, lr, what the lecture says[, steps]) — the linear sandwiches are a look at init only
# (their point is the forward / backward statistics; gain 5/3 without tanh diverges when trained)
DEEP_CONFIGS = [
    ("tanh_gain_5_3", "tanh, gain 5/3 (Kaiming for tanh)", dict(), 0.1,
     "std ~0.65, ~5% saturated (first layer ~20%)"),
    ("tanh_gain_0.5", "tanh, gain 0.5", dict(gain=0.5), 0.1, "activations shrink towards 0 layer after layer"),
    ("tanh_gain_3", "tanh, gain 3", dict(gain=3.0), 0.1, "saturated tanh everywhere"),
    ("linear_gain_1", "linear sandwich (no tanh), gain 1", dict(linear_only=True, gain=1.0), 0.1,
     "gain 1 keeps the std of every layer", 1),
    ("linear_gain_0.5", "linear sandwich (no tanh), gain 0.5", dict(linear_only=True, gain=0.5), 0.1,
     "activations shrink, gradients grow towards the input", 1),
    ("linear_gain_5_3", "linear sandwich (no tanh), gain 5/3", dict(linear_only=True, gain=5 / 3), 0.1,
     "activations grow layer after layer", 1),
    ("bn", "BatchNorm, gain 5/3", dict(batchnorm=True), 0.1, "every layer std ~0.65, ~2% saturated"),
    ("bn_no_fanin_lr0.1", "BatchNorm, no fan-in scaling, lr 0.1", dict(batchnorm=True, fan_in_scaling=False),
     0.1, "update:data ratios far below -3: lr too small"),
    ("bn_no_fanin_lr1.0", "BatchNorm, no fan-in scaling, lr 1.0", dict(batchnorm=True, fan_in_scaling=False),
     1.0, "~10x the lr brings the ratios back up"),
]


def verdict(row: dict) -> str:
    """'ok' / 'MISS' beside the lecture's numbers; 'smoke run' for a --quick run, which cannot reach them."""
    if row["within_tolerance"] is None:
        return "smoke run"
    return "ok" if row["within_tolerance"] else "MISS"


def run_ladder(splits, steps: int, seed: int, out: Path, args: argparse.Namespace | None = None):
    # whole splits, scored in eval mode (BatchNorm with its running statistics) by learn.evaluate
    scored = {name: ArrayDataset(*splits[name], EVAL_BATCH) for name in ("train", "valid", "test")}
    rows, curves, trained = [], {}, {}
    # the lecture's batches of 32 drawn with replacement, 10,000 steps per epoch (and per compiled call)
    dls = data.names_loaders(32, batches_per_epoch=math.gcd(steps, 10_000))
    quick = bool(args is not None and args.quick)
    if quick:
        print(SMOKE_RUN)
    print(f"{'rung':52s} {'init':>7s} {'train':>7s} {'val':>7s}   lecture: {'init':>7s} {'train':>7s} "
          f"{'val':>7s}")
    for i, rung in enumerate(mm.LADDER):
        model = rung.model
        if rung.calibrated:  # the same trained BatchNorm model, scored with calibrated statistics
            learn, variables, losses, seconds = trained[model]
            calibrated = calibrate_batchnorm(model, variables, [scored["train"].x], train=False)
            learn.replace_state(model_state={**learn.state.model_state, "batch_stats": calibrated["batch_stats"]})
        else:
            t0 = time.perf_counter()
            learn = mm.lecture_learner(model, dls, seed=seed)
            health = runs.diagnose(learn, args, rung.name) if args is not None else None
            losses = mm.train(learn, steps)
            seconds = time.perf_counter() - t0
            runs.check_finite(losses, f"the training loss of rung {rung.name!r}", hint=DIVERGED_HINT)
            variables = mm.variables_of(learn)
            trained[model] = (learn, variables, losses, seconds)
            curves[rung.name] = losses
        loss = {name: learn.evaluate(ds)["loss"] for name, ds in scored.items()}
        row = {
            "rung": rung.name,
            "train_loss": loss["train"],
            "val_loss": loss["valid"],
            "lecture_train": rung.lecture_train,
            "lecture_val": rung.lecture_val,
            "test_loss": loss["test"],
            "init_loss": float(losses[0]),
            "lecture_init_loss": rung.lecture_init_loss,
            "expected_init_loss": mm.EXPECTED_INIT_LOSS,
            "steps": steps,
            "params": mm.count_params(variables),
            "train_seconds": round(seconds, 2),  # compilation included
            **({"health": health} if not rung.calibrated and health else {}),
        }
        row["within_tolerance"] = None if quick else bool(abs(row["train_loss"] - row["lecture_train"]) <= TOLERANCE
                                                          and abs(row["val_loss"] - row["lecture_val"]) <= TOLERANCE)
        rows.append(row)
        lec_init = f"{rung.lecture_init_loss:7.4f}" if rung.lecture_init_loss else "       "
        print(f"{i} {rung.name:50s} {row['init_loss']:7.4f} {row['train_loss']:7.4f} {row['val_loss']:7.4f}"
              f"            {lec_init} {rung.lecture_train:7.4f} {rung.lecture_val:7.4f}  "
              f"{verdict(row)} ({row['train_seconds']:.1f} s)", flush=True)
    print(f"expected initial loss -ln(1/27) = {mm.EXPECTED_INIT_LOSS:.4f}")
    bn_model = mm.LADDER[-1].model
    samples = mm.sample(bn_model, trained[bn_model][1], splits["vocab"], n=20, seed=seed + 10)
    print("samples (BatchNorm MLP):", " ".join(samples))
    plot_ladder(curves, out / "ladder_loss.png")
    return rows, samples


def plot_ladder(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jaxlearn.callbacks.plots import integer_ticks
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, losses in curves.items():
        n = len(losses) // 1000 * 1000
        if n == 0:
            continue
        ax.plot(np.arange(0, n, 1000), np.log10(losses[:n]).reshape(-1, 1000).mean(1), label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("log10 training loss (mean of 1,000 steps)")
    integer_ticks(ax.xaxis)
    ax.set_title("makemore part 3: the ladder")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_deep(steps: int, seed: int, out: Path):
    dls = data.names_loaders(32)
    results = {}
    for stem, title, kwargs, lr, lecture, *n in DEEP_CONFIGS:
        model = mm.DeepMLP(**kwargs)
        n_steps = n[0] if n else steps
        t0 = time.perf_counter()
        res = mm.run_diagnostics(model, dls, steps=n_steps, lr=lr, seed=seed)
        names = mm.weight_ratio_names(res.variables["params"])
        entry = {
            "title": title, "lr": lr, "lecture": lecture, "params": mm.count_params(res.variables),
            "steps": n_steps, "loss_first": float(res.losses[0]),
            "loss_last100": float(np.nanmean(res.losses[-100:])),
            "at_init": mm.summary_table(res.diagnostics[0]),
            "after_training": mm.summary_table(res.diagnostics[-1]),
            "grad_data_at_init": {k: float(v["grad_data"]) for k, v in res.diagnostics[0]["weight_grads"].items()},
            "update_data_last100": {k: float(np.nanmean(res.update_ratios[k][-100:])) for k in names},
        }
        results[stem] = entry
        mm.plot_diagnostics(res, f"{title} (lr {lr}, {n_steps} steps)", out / f"deep_{stem}.png")
        init_rows = entry["at_init"]
        print(f"{title:42s} at init: std " + " ".join(f"{r['std']:.2f}" for r in init_rows)
              + " | sat% " + " ".join(f"{r['saturated_pct']:.1f}" for r in init_rows)
              + f" | after {n_steps}: std " + " ".join(f"{r['std']:.2f}" for r in entry["after_training"])
              + " | sat% " + " ".join(f"{r['saturated_pct']:.1f}" for r in entry["after_training"])
              + " | ud " + " ".join(f"{v:.1f}" for v in entry["update_data_last100"].values())
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    plot_deep_summary(results, out / "deep_summary.png")
    return results


def plot_deep_summary(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jaxlearn.callbacks.plots import integer_ticks
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for stem, e in results.items():
        layers = np.arange(1, len(e["at_init"]) + 1)
        axes[0].plot(layers, [r["std"] for r in e["at_init"]], "o-", label=e["title"])
        axes[1].plot(layers, [r["saturated_pct"] for r in e["at_init"]], "o-", label=e["title"])
        axes[2].plot(layers, [r["grad_std"] for r in e["at_init"]], "o-", label=e["title"])
    axes[0].set(title="activation std per layer (at init)", ylabel="std of the tanh output", yscale="log")
    axes[1].set(title="% saturated (|t| > 0.97) per layer (at init)", ylabel="% of tanh outputs saturated")
    axes[2].set(title="std of the gradient of each layer's output (at init)", ylabel="gradient std",
                yscale="log")
    for ax in axes:
        ax.set_xlabel("tanh layer")
        integer_ticks(ax.xaxis)
    fig.suptitle("deep-net diagnostics at init, every configuration")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def write_readme(out: Path, rows, samples, deep, steps: int, diag_steps: int):
    lines = ["# makemore part 3 — ours vs the lecture", "",
             f"Written by `python experiments/makemore.py --steps {steps} --diag-steps {diag_steps}` "
             "(jaxlearn.makemore; names.txt split 182,625 / 22,655 / 22,866; batch 32; SGD lr 0.1 → 0.01 at step "
             "100,000). Losses on the whole split in eval mode; the lecture's numbers from its notebook. "
             f"'ok' means both train and val are within ±{TOLERANCE} of the lecture's."
             + (f" This is a {SMOKE_RUN}." if any(r["within_tolerance"] is None for r in rows) else ""), "",
             "| rung | init loss | train | val | test | lecture init | lecture train | lecture val | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        li = f"{r['lecture_init_loss']:.4f}" if r["lecture_init_loss"] else ""
        lines.append(f"| {r['rung']} | {r['init_loss']:.4f} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
                     f"{r['test_loss']:.4f} | {li} | {r['lecture_train']:.4f} | {r['lecture_val']:.4f} | "
                     f"{verdict(r)} |")
    lines += ["", f"Expected initial loss −ln(1/27) = {mm.EXPECTED_INIT_LOSS:.4f}. "
              "The 'init loss' column is the first minibatch's loss.", "",
              "Samples from the BatchNorm MLP: " + ", ".join(f"`{s}`" for s in samples), "",
              "![ladder](ladder_loss.png)", "",
              f"## Deep net diagnostics (5 × [Linear, (BatchNorm1d), Tanh] + output, n_hidden 100; "
              f"{diag_steps} steps, batch 32)", "",
              "Per tanh layer: std and % saturated (|t| > 0.97) of the activations, at init (first batch) and "
              f"after {diag_steps} steps; update:data = mean over the last 100 steps of "
              "log10(std(lr·grad)/std(param)) per weight (C, Linear 0..5).", "",
              "| configuration | lr | std at init | sat % at init | std after | sat % after | update:data | "
              "lecture |", "|---|---|---|---|---|---|---|---|"]
    for stem, e in deep.items():
        f = lambda rows_, k, fmt: " ".join(fmt.format(r[k]) for r in rows_)
        if e["steps"] > 1:
            after = (f"{f(e['after_training'], 'std', '{:.2f}')} | "
                     f"{f(e['after_training'], 'saturated_pct', '{:.1f}')} | "
                     f"{' '.join(f'{v:.1f}' for v in e['update_data_last100'].values())}")
        else:
            after = "(look at init only) | | "
        lines.append(f"| [{e['title']}](deep_{stem}.png) | {e['lr']} | {f(e['at_init'], 'std', '{:.2f}')} | "
                     f"{f(e['at_init'], 'saturated_pct', '{:.1f}')} | {after} | {e['lecture']} |")
    lines += ["", "![summary](deep_summary.png)", ""]
    for stem, e in deep.items():
        lines += [f"### {e['title']}", "", f"![{stem}](deep_{stem}.png)", ""]
    (out / "README.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    steps_not_epochs = "makemore trains for --steps minibatches of 32 with the lecture's SGD schedule"
    p = runs.experiment_parser("makemore", __doc__, seed=mm.LECTURE_SEED,
                               not_applicable={"epochs": steps_not_epochs, "bs": steps_not_epochs,
                                               "lr": steps_not_epochs},
                               quick={"steps": 1000, "skip_deep": True})
    p.add_argument("--steps", type=runs.positive_int, default=200_000, help="training steps per rung of the ladder")
    p.add_argument("--diag-steps", type=runs.positive_int, default=1000, help="steps of each deep-net diagnostic run")
    p.add_argument("--skip-deep", action="store_true", help="no deep-net diagnostics")
    return p.parse_args(argv)


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = runs.prepare_run(args)
    vocab, splits = data.names_splits(data.load_names())
    splits["vocab"] = vocab
    print({k: len(v[0]) for k, v in splits.items() if k != "vocab"})
    t0 = time.perf_counter()
    rows, samples = run_ladder(splits, args.steps, args.seed, out, args)
    runs.write_json(out / "results.json", rows, indent=1)
    deep = {} if args.skip_deep else run_deep(args.diag_steps, args.seed, out)
    runs.write_json(out / "diagnostics.json", deep, indent=1)
    write_readme(out, rows, samples, deep, args.steps, args.diag_steps)
    print(f"wrote {out}/ in {time.perf_counter() - t0:.0f} s")
    missed = [r["rung"] for r in rows if r["within_tolerance"] is False]
    if args.quick:
        print(SMOKE_RUN)
    elif missed:
        print(f"outside ±{TOLERANCE} of the lecture: {missed}")


if __name__ == "__main__":
    main()
