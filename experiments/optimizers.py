"""Lesson 17's optimizers on the BatchNorm CNN, SGDR snapshots, and DLVU's optimizer demos.

    python experiments/optimizers.py                    # -> runs/optimizers/
    python experiments/optimizers.py --docs             # the same, published: -> docs/optimizers/
    python experiments/optimizers.py --quick            # < 1 min: the demos and 1 epoch of SGD on 1,024 images

Trains lesson 17's CNN (jaxlearn.nn.norms.BatchNorm, GeneralRelu(0.1, 0.4), leaky Kaiming init, input
normalization, batch size 1024, 3 epochs) on Fashion-MNIST with each of jaxlearn.optim's optimizers at the
lesson's learning rates, plus AdamW with one-cycle and momentum with SGDR + a snapshot ensemble. Writes

* ``OUT/results.json``: a list of ``{optimizer, lr, test_accuracy, lesson_accuracy, ...}``;
* ``OUT/README.md``: the table beside the lesson's numbers, the demo numbers, the figures;
* ``OUT/losses.png`` (all training-loss curves), ``OUT/onecycle_hypers.png`` (recorded lr and beta1),
  ``OUT/schedules.png`` (one_cycle and sgdr);
* the DLVU demos (``OUT/demos.json`` and a figure each): momentum's 1/(1-beta) acceleration on a
  constant gradient, Adam vs SGD on fast.ai 2018's linear regression y = 2x + 30, and L2 vs decoupled
  weight decay for SGD / momentum / Adam.

``--demos-only`` skips the CNN runs (seconds); ``--n-train N`` trains on the first N images; ``--lr`` replaces
every optimizer's lesson learning rate. A run whose loss turns NaN stops the script with exit status 2 and no
results.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxlearn import optim  # noqa: E402
from jaxlearn.callbacks import (BatchTransformCB, MetricsCB, ParamSchedulerCB, RecorderCB, SGDRSnapshotCB,
                                SmoothedLossCB, snapshot_ensemble_accuracy)
from jaxlearn.callbacks.plots import integer_ticks, save  # noqa: E402
from jaxlearn.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist_loaders, normalize  # noqa: E402
from jaxlearn.learner import Learner  # noqa: E402
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal  # noqa: E402
from jaxlearn.optim import one_cycle, one_cycle_momentum, sgdr  # noqa: E402
from jaxlearn.vision import get_model  # noqa: E402

import runs  # noqa: E402


# ------------------------------------------------------------------------------------------- CNN runs

def run_specs() -> list[dict]:
    """The lesson-17 runs: name, optimizer factory, lr, the lesson's accuracy, a callbacks factory.

    ``callbacks(lr, steps_per_epoch)`` returns the fit's extra callbacks; schedules get the fit's step
    count from ParamSchedulerCB.
    """

    def one_cycle_cbs(lr, steps_per_epoch):
        del steps_per_epoch
        # The lesson's torch OneCycleLR: 30% warmup, div 25, final lr max/(25*1e4), beta1 0.95->0.85->0.95.
        return [ParamSchedulerCB("learning_rate", lambda n: one_cycle(lr, n, 0.3, 25.0, 2.5e5)),
                ParamSchedulerCB("b1", lambda n: one_cycle_momentum(n, 0.3, (0.95, 0.85, 0.95))),
                RecorderCB("learning_rate", "b1")]

    def sgdr_cbs(lr, steps_per_epoch):
        return [ParamSchedulerCB("learning_rate", lambda n: sgdr(lr, steps_per_epoch, 1, 2)),
                SGDRSnapshotCB(cycle_len=1, cycle_mult=2), RecorderCB("learning_rate")]

    return [
        {"optimizer": "sgd (wd 1e-4)", "factory": partial(optim.sgd, weight_decay=1e-4), "lr": 0.4,
         "lesson_accuracy": 0.85, "note": "lesson: miniai SGD lr 0.4 (its wd argument left at 0)"},
        {"optimizer": "momentum (beta 0.9, lerp)", "factory": partial(optim.momentum, beta=0.9), "lr": 1.5,
         "lesson_accuracy": 0.876, "note": "miniai Momentum lerps: = torch SGD(momentum=0.9) at lr 0.15"},
        {"optimizer": "rmsprop (0.99, eps 1e-5)", "factory": optim.rmsprop, "lr": 3e-3,
         "lesson_accuracy": None, "note": "lesson: 'smoother' loss, no accuracy quoted"},
        {"optimizer": "adam (0.9, 0.99, eps 1e-5)", "factory": optim.adam, "lr": 6e-3,
         "lesson_accuracy": 0.865, "note": "miniai Adam, eps inside the sqrt"},
        {"optimizer": "adamw (wd 0.01) + one-cycle", "factory": optim.adamw, "lr": 6e-2,
         "lesson_accuracy": None, "callbacks": one_cycle_cbs,
         "note": "lesson: torch AdamW + OneCycleLR max 6e-2 for 5 epochs, no accuracy in our notes"},
        {"optimizer": "momentum + SGDR (1, x2), snapshots", "factory": partial(optim.momentum, beta=0.9),
         "lr": 1.5, "lesson_accuracy": None, "callbacks": sgdr_cbs,
         "note": "fast.ai 2018 SGDR cycle_len=1 cycle_mult=2: cycles of 1 and 2 epochs"},
    ]


def train_one(spec: dict, dls, epochs: int, seed: int, args: argparse.Namespace | None = None) -> dict:
    """Train the lesson-17 CNN with ``spec``'s optimizer; returns the row of results.json (+ losses)."""
    act = partial(GeneralRelu, leak=0.1, sub=0.4)
    model = get_model(act, norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
    losses, metrics = SmoothedLossCB(), MetricsCB()
    make_callbacks = spec.get("callbacks")
    extra = make_callbacks(spec["lr"], dls.train.n_batches) if make_callbacks else []
    learn = Learner(model, dls, optimizer=spec["factory"], lr=spec["lr"], seed=seed,
                    callbacks=[metrics, BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD))])
    print(f"\n== {spec['optimizer']}, lr {spec['lr']}")
    health = runs.diagnose(learn, args, spec["optimizer"]) if args is not None else None
    t0 = time.perf_counter()
    learn.fit(epochs, callbacks=[losses, *extra])
    seconds = time.perf_counter() - t0
    test = learn.evaluate()
    row = {"optimizer": spec["optimizer"], "lr": spec["lr"], "test_accuracy": test["accuracy"],
           "lesson_accuracy": spec["lesson_accuracy"], "test_loss": test["loss"], "epochs": epochs,
           "seconds": seconds, "note": spec["note"], "n_traces": learn.n_traces,
           "history": metrics.history, **({"health": health} if health else {})}
    for cb in extra:
        if isinstance(cb, SGDRSnapshotCB):
            ens = snapshot_ensemble_accuracy(learn, cb.snapshots)
            row["snapshot_steps"] = [s["step"] for s in cb.snapshots]
            row["snapshot_accuracies"] = ens["members"]
            row["snapshot_ensemble_accuracy"] = ens["ensemble"]
        if isinstance(cb, RecorderCB):
            row["_recorder"] = cb
    row["_losses"] = losses.raw
    print(f"test accuracy {test['accuracy']:.4f} (lesson: {spec['lesson_accuracy']}) in {seconds:.0f} s")
    return row


def plot_losses(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        ax.plot(row["_losses"], lw=0.9, label=f"{row['optimizer']} ({row['test_accuracy']:.3f})")
    integer_ticks(ax.xaxis)
    ax.set(xlabel="training batch", ylabel="training loss", yscale="log",
           title="lesson-17 BN CNN, Fashion-MNIST, bs 1024 (test accuracy in brackets)")
    ax.legend(fontsize=8)
    save(fig, path)


def plot_recorded(recs: dict[str, list[float]], path: Path, title: str) -> None:
    fig, axs = plt.subplots(1, len(recs), figsize=(4.5 * len(recs), 3.2), squeeze=False)
    for ax, (name, values) in zip(axs[0], recs.items()):
        ax.plot(values)
        ax.set(title=f"{title}: {name}", xlabel="training step", ylabel=name)
        integer_ticks(ax.xaxis)
    save(fig, path)


def plot_schedules(path: Path, steps_per_epoch: int = 59) -> dict:
    """one_cycle (+ its momentum) and SGDR over a few epochs; returns a few values for the README."""
    n = 3 * steps_per_epoch
    t = np.arange(n)
    oc, mom = one_cycle(6e-2, n, 0.3, 25.0, 2.5e5), one_cycle_momentum(n, 0.3)
    t7 = np.arange(7 * steps_per_epoch)
    sg = sgdr(1.5, steps_per_epoch, 1, 2)
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.2))
    axs[0].plot(t, jax.vmap(oc)(t))
    axs[0].set(title="one_cycle(6e-2, pct_start=0.3)", xlabel="step", ylabel="learning rate")
    axs[1].plot(t, jax.vmap(mom)(t))
    axs[1].set(title="one_cycle_momentum (0.95, 0.85, 0.95)", xlabel="step", ylabel="beta1 (momentum)")
    axs[2].plot(t7, jax.vmap(sg)(t7))
    axs[2].set(title="sgdr(1.5, cycle_len=1, cycle_mult=2)", xlabel="step", ylabel="learning rate")
    for ax in axs:
        integer_ticks(ax.xaxis)
    for e in (1, 3, 7):
        axs[2].axvline(e * steps_per_epoch, color="k", lw=0.6, ls="--")
    save(fig, path)
    return {"one_cycle_start_peak_end": [float(oc(0)), float(oc(int(0.3 * n))), float(oc(n))],
            "sgdr_restarts_at": [steps_per_epoch, 3 * steps_per_epoch]}


# ---------------------------------------------------------------------------------------- DLVU demos

def momentum_demo(betas=(0.5, 0.9, 0.99), steps: int = 500, path: Path | None = None) -> dict:
    r"""Constant gradient g = 1: heavy-ball momentum's step grows to lr/(1-beta) (DLVU).

    ``m_t = beta m_{t-1} + g = (1 - beta^t)/(1 - beta) g``; miniai's lerped momentum
    (``(1-beta)`` times that) stays at the gradient's scale.
    """
    def step_sizes(tx):
        p = jnp.zeros(())

        def body(carry, _):
            p, s = carry
            u, s = tx.update(jnp.ones(()), s, p)
            return (p + u, s), -u

        return np.asarray(jax.lax.scan(body, (p, tx.init(p)), None, length=steps)[1])

    out, fig = {}, plt.figure(figsize=(6, 4))
    ax = fig.gca()
    for beta in betas:
        heavy = step_sizes(optim.momentum(1.0, beta, lerp=False))
        lerped = step_sizes(optim.momentum(1.0, beta, lerp=True))
        out[str(beta)] = {"heavy_ball_final_step": float(heavy[-1]), "one_over_1_minus_beta": 1 / (1 - beta),
                          "heavy_ball_step_10": float(heavy[9]),
                          "closed_form_step_10": (1 - beta ** 10) / (1 - beta),
                          "lerp_final_step": float(lerped[-1])}
        ax.plot(np.arange(1, steps + 1), heavy, label=f"heavy ball, beta={beta}")
        ax.axhline(1 / (1 - beta), color="gray", lw=0.6, ls="--")
    ax.plot(np.arange(1, steps + 1), step_sizes(optim.momentum(1.0, 0.9, lerp=True)), "k:",
            label="lerp (miniai), beta=0.9")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="step size / (lr * g)",
           title="momentum on a constant gradient: 1/(1-beta) acceleration")
    ax.legend(fontsize=8)
    save(fig, path)
    return out


def _linreg(kind: str, n: int = 100, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """fast.ai 2018 lesson 5's spreadsheet data y = 2x + 30 (noise-free)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) if kind == "standardized" else rng.uniform(0, 100, n)
    return jnp.asarray(x, jnp.float32), jnp.asarray(2 * x + 30, jnp.float32)


def _linreg_curves(factory: Callable, lrs: np.ndarray, x: jax.Array, y: jax.Array, steps: int) -> np.ndarray:
    """Full-batch MSE after each step, for each lr (one compile: the lr is an injected hyperparameter)."""
    tx = optax.inject_hyperparams(factory)(learning_rate=1.0)

    def loss(p):
        return jnp.mean((p["a"] * x + p["b"] - y) ** 2)

    def run(lr):
        p = {"a": jnp.ones(()), "b": jnp.ones(())}  # the spreadsheet starts at a = b = 1
        s = optim.set_hyperparams(tx.init(p), learning_rate=lr)

        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), loss(p)

        return jax.lax.scan(body, (p, s), None, length=steps)[1]

    return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(lrs, jnp.float32)))


def _steps_to(curves: np.ndarray, tol: float) -> np.ndarray:
    """Per lr, the number of steps after which the loss stays below ``tol`` (inf if it never settles)."""
    bad = ~(curves < tol)  # NaN counts as bad
    last_bad = np.where(bad.any(1), curves.shape[1] - 1 - np.argmax(bad[:, ::-1], axis=1), -1)
    return np.where(bad[:, -1], np.inf, last_bad + 2).astype(float)


def adam_vs_sgd_demo(steps: int = 5000, tol: float = 1e-4, path: Path | None = None) -> dict:
    r"""Adam vs SGD on y = 2x + 30, each at its best lr from a log sweep (full batch, start a = b = 1).

    On a well-conditioned problem (standardized x, Hessian ~ 2I) plain SGD at lr ~ 1/L converges in a
    handful of steps, while Adam's normalized steps (~lr per parameter, whatever the gradient) crawl the
    30 units to the intercept and then oscillate: SGD is much faster (DLVU "Adam is slow on linear
    problems"). With raw x in [0, 100] (condition number ~1e4) the picture flips:
    SGD's lr is capped by the steep direction and the intercept barely moves, while Adam's per-parameter
    scaling fixes the conditioning.
    """
    optimizers = {"sgd": (optim.sgd, np.logspace(-6, 0, 25)),
                  "adam": (optim.adam, np.logspace(-3, 1, 17))}
    out, fig = {}, plt.figure(figsize=(11, 4))
    axs = fig.subplots(1, 2)
    for ax, kind in zip(axs, ("standardized", "raw")):
        x, y = _linreg(kind)
        out[kind] = {}
        for name, (factory, lrs) in optimizers.items():
            curves = _linreg_curves(factory, lrs, x, y, steps)
            n_steps = _steps_to(curves, tol)
            best = int(np.argmin(np.where(np.isfinite(n_steps), n_steps, np.inf)
                                 if np.isfinite(n_steps).any() else np.nan_to_num(curves[:, -1], nan=np.inf)))
            # None (JSON null) when the loss never settles below tol: strict JSON has no infinity
            settled = float(n_steps[best]) if np.isfinite(n_steps[best]) else None
            out[kind][name] = {"best_lr": float(lrs[best]), "steps_to_tol": settled,
                               "final_loss": float(curves[best, -1])}
            ax.plot(np.arange(1, steps + 1), curves[best], label=f"{name}, lr {lrs[best]:.2g}")
        ax.axhline(tol, color="gray", lw=0.6, ls="--")
        ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE",
               title=f"y = 2x + 30, {'x ~ N(0, 1)' if kind == 'standardized' else 'x ~ U(0, 100)'}")
        ax.legend(fontsize=8)
    save(fig, path)
    out["tol"], out["steps"] = tol, steps
    return out


def l2_vs_decay_demo(steps: int = 300, wd: float = 0.1, path: Path | None = None) -> dict:
    r"""L2 (``add_l2`` in front) vs decoupled weight decay (``weight_decay=``), same lr and wd.

    Least squares with features on very different scales (0.1 ... 10). SGD: bitwise the same trajectory.
    Momentum: L2's ``wd*p`` goes through the momentum average, so the two differ. Adam: L2's ``wd*p`` is
    divided by ``sqrt(v)``, so weights with small gradients (small-scale features) are pulled to 0 far
    harder than large-gradient ones, while AdamW decays every weight by the same factor ``1 - lr*wd`` per
    step (Loshchilov & Hutter; fast.ai 2018 lesson 5).
    """
    rng = np.random.default_rng(0)
    scales = np.logspace(-1, 1, 8)
    X = jnp.asarray(rng.standard_normal((256, 8)) * scales, jnp.float32)
    w_true = jnp.asarray(rng.standard_normal(8), jnp.float32)
    y = X @ w_true + 0.1 * jnp.asarray(rng.standard_normal(256), jnp.float32)

    def loss(w):
        return jnp.mean((X @ w - y) ** 2) / 2

    def run(tx):
        w = jnp.zeros(8)

        def body(carry, _):
            w, s = carry
            u, s = tx.update(jax.grad(loss)(w), s, w)
            return (optax.apply_updates(w, u), s), None

        return np.asarray(jax.lax.scan(body, (w, tx.init(w)), None, length=steps)[0][0])

    configs = {"sgd": (optim.sgd, 5e-3), "momentum": (partial(optim.momentum, beta=0.9), 5e-3),
               "adam": (optim.adam, 1e-2)}
    out, finals = {}, {}
    for name, (factory, lr) in configs.items():
        l2 = run(optax.chain(optim.add_l2(wd), factory(lr)))
        decoupled = run(factory(lr, weight_decay=wd))
        finals[name] = (l2, decoupled)
        out[name] = {"lr": lr, "max_abs_diff": float(np.max(np.abs(l2 - decoupled))),
                     "bitwise_equal": bool(np.array_equal(l2, decoupled)),
                     "l2_weights": l2.round(4).tolist(), "decoupled_weights": decoupled.round(4).tolist()}
    out["wd"], out["steps"], out["feature_scales"] = wd, steps, scales.round(3).tolist()
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.5))
    idx = np.arange(8)
    for ax, (name, (l2, decoupled)) in zip(axs, finals.items()):
        ax.bar(idx - 0.2, l2, 0.4, label="L2 (add_l2 -> opt)")
        ax.bar(idx + 0.2, decoupled, 0.4, label="decoupled (weight_decay=)")
        ax.set(title=f"{name}: max |diff| {out[name]['max_abs_diff']:.2g}",
               xlabel="feature (scale 0.1 -> 10)", ylabel="weight", xticks=idx)
        ax.legend(fontsize=7)
    save(fig, path)
    return out


def run_demos(out_dir: Path) -> dict:
    return {"momentum": momentum_demo(path=out_dir / "momentum_acceleration.png"),
            "adam_vs_sgd": adam_vs_sgd_demo(path=out_dir / "adam_vs_sgd_linreg.png"),
            "l2_vs_weight_decay": l2_vs_decay_demo(path=out_dir / "l2_vs_weight_decay.png"),
            "schedules": plot_schedules(out_dir / "schedules.png")}


def _steps_text(steps: float | None) -> str:
    return "never" if steps is None else f"{steps:g}"


def print_demos(demos: dict) -> None:
    print("\nmomentum on a constant gradient (lr 1, g 1): heavy-ball step after 500 steps vs 1/(1-beta)")
    for beta, d in demos["momentum"].items():
        print(f"  beta {beta}: {d['heavy_ball_final_step']:.3f} vs {d['one_over_1_minus_beta']:.3f}"
              f" (lerp: {d['lerp_final_step']:.3f})")
    a = demos["adam_vs_sgd"]
    print(f"\nAdam vs SGD on y = 2x + 30 (steps until MSE stays < {a['tol']:g}, best lr of a sweep)")
    for kind in ("standardized", "raw"):
        for name in ("sgd", "adam"):
            d = a[kind][name]
            print(f"  {kind:>12} x, {name:>4}: lr {d['best_lr']:.2g}, steps {_steps_text(d['steps_to_tol'])}, "
                  f"final MSE {d['final_loss']:.3g}")
    w = demos["l2_vs_weight_decay"]
    print(f"\nL2 vs decoupled weight decay (wd {w['wd']}, {w['steps']} steps): max |w_L2 - w_decoupled|")
    for name in ("sgd", "momentum", "adam"):
        print(f"  {name:>8}: {w[name]['max_abs_diff']:.3g} (bitwise equal: {w[name]['bitwise_equal']})")


# ------------------------------------------------------------------------------------------------ main

def _fmt(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def write_readme(out: Path, rows: list[dict], demos: dict, command: str, seconds: float) -> None:
    a, w, m = demos["adam_vs_sgd"], demos["l2_vs_weight_decay"], demos["momentum"]
    lines = ["# Optimizers on lesson 17's BatchNorm CNN (and DLVU's optimizer demos)", "",
             f"Generated by `{command}` ({seconds / 60:.0f} min on {platform.machine()} CPU, "
             f"jax {jax.__version__}, backend {jax.default_backend()}).", "",
             "Lesson 17's CNN (`jaxlearn.nn.norms.BatchNorm`, `GeneralRelu(0.1, 0.4)`, leaky Kaiming init, inputs "
             "normalized with 0.28 / 0.35), Fashion-MNIST, batch size 1024, 3 epochs, seed 0, accuracy on the "
             "10,000 test images (±0.7% is a 95% interval at 87%). One run each, so differences of a point "
             "are within seed noise.", ""]
    if rows:
        lines += ["| optimizer (jaxlearn.optim) | lr | test accuracy | lesson 17 | note |",
                  "| --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['optimizer']} | {r['lr']:g} | {_fmt(r['test_accuracy'])} | "
                         f"{_fmt(r['lesson_accuracy'])} | {r['note']} |")
        for r in rows:
            if "snapshot_ensemble_accuracy" in r:
                lines += ["", f"SGDR snapshots (`SGDRSnapshotCB`) at steps {r['snapshot_steps']}: member "
                          f"accuracies {', '.join(_fmt(v) for v in r['snapshot_accuracies'])}; "
                          f"ensemble of their softmax outputs {_fmt(r['snapshot_ensemble_accuracy'])}."]
        lines += ["", "![training losses](losses.png)", "",
                  "AdamW + one-cycle: learning rate and beta1 as recorded by `RecorderCB('learning_rate', 'b1')` "
                  "(the lesson's torch `OneCycleLR`: 30% warmup from max/25, cosine down to max/2.5e5, beta1 "
                  "0.95 → 0.85 → 0.95).", "", "![one-cycle hyperparameters](onecycle_hypers.png)", ""]
    lines += ["![schedules](schedules.png)", "", "## DLVU demos", "",
              "**Momentum on a constant gradient** (heavy ball `m ← βm + g`, g = 1, lr = 1): the step after "
              "500 steps vs 1/(1−β); miniai's lerped momentum stays at the gradient's scale.", "",
              "| β | heavy-ball step | 1/(1−β) | lerped step |", "| --- | --- | --- | --- |"]
    for beta, d in m.items():
        lines.append(f"| {beta} | {d['heavy_ball_final_step']:.3f} | {d['one_over_1_minus_beta']:.3f} | "
                     f"{d['lerp_final_step']:.3f} |")
    lines += ["", "![momentum](momentum_acceleration.png)", "",
              f"**Adam vs SGD on y = 2x + 30** (fast.ai 2018 lesson 5's spreadsheet; full batch of 100 points, "
              f"start a = b = 1, each optimizer at its best lr from a log sweep; steps until the MSE stays "
              f"below {a['tol']:g}, out of {a['steps']}):", "",
              "| x | optimizer | best lr | steps | final MSE |", "| --- | --- | --- | --- | --- |"]
    for kind, label in (("standardized", "N(0, 1)"), ("raw", "U(0, 100)")):
        for name in ("sgd", "adam"):
            d = a[kind][name]
            lines.append(f"| {label} | {name} | {d['best_lr']:.2g} | {_steps_text(d['steps_to_tol'])} | "
                         f"{d['final_loss']:.2g} |")
    lines += ["", "On the well-conditioned problem SGD is far faster: Adam's normalized steps are ~lr "
              "whatever the gradient, so it crawls to the intercept and then rattles around the minimum. "
              "With raw x (condition number ~10^4) SGD's lr is capped by the steep "
              "slope direction and the intercept hardly moves, while Adam's per-parameter scaling undoes "
              "the conditioning, and Adam wins by far. Which optimizer is faster on a linear problem "
              "depends on its conditioning.", "",
              "![adam vs sgd](adam_vs_sgd_linreg.png)", "",
              f"**L2 vs decoupled weight decay** (wd {w['wd']}, {w['steps']} full-batch steps of least squares "
              f"with feature scales 0.1 … 10): max |w_L2 − w_decoupled|", "",
              "| optimizer | max abs diff | bitwise equal |", "| --- | --- | --- |"]
    for name in ("sgd", "momentum", "adam"):
        lines.append(f"| {name} | {w[name]['max_abs_diff']:.3g} | {w[name]['bitwise_equal']} |")
    lines += ["", "SGD: identical (wd·p added to the gradient is exactly the decay step). Momentum: L2's term "
              "goes through the momentum average, so it differs (slightly). Adam: L2's term is divided by "
              "sqrt(v), so the weights of the small-scale features (small gradients, left bars) are pulled "
              "to 0 far harder than those of the large-scale ones, while decoupled decay (AdamW) shrinks "
              "every weight by the same 1 − lr·wd per step.", "",
              "![l2 vs weight decay](l2_vs_weight_decay.png)", ""]
    (out / "README.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = runs.experiment_parser(
        "optimizers", __doc__.splitlines()[0], epochs=3, bs=1024, lr=None, seed=0,
        helps={"lr": "learning rate of every optimizer (default: each one's from the lesson)"},
        quick={"epochs": 1, "n_train": 1024, "only": "sgd"})
    parser.add_argument("--n-train", type=runs.positive_int, default=None,
                        help="train on the first N images (quick runs)")
    parser.add_argument("--only", default=None, help="comma-separated substrings of the runs to train")
    parser.add_argument("--demos-only", action="store_true", help="skip the CNN runs")
    args = parser.parse_args(argv)
    if args.only:
        names = [spec["optimizer"] for spec in run_specs()]
        unmatched = [part for part in args.only.split(",") if not any(part in name for name in names)]
        if unmatched:
            parser.error(f"--only {args.only}: {', '.join(map(repr, unmatched))} is in none of the runs' names "
                         f"({'; '.join(names)})")
    return args


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    command = " ".join(["python experiments/optimizers.py", *(sys.argv[1:] if argv is None else argv)])
    runs.prepare_run(args)
    t_start = time.perf_counter()

    demos = run_demos(args.out)
    print_demos(demos)
    runs.write_json(args.out / "demos.json", demos)

    rows: list[dict] = []
    if not args.demos_only:
        dls = fashion_mnist_loaders(args.bs, seed=args.seed, n_train=args.n_train)
        specs = run_specs()
        if args.only:
            specs = [s for s in specs if any(k in s["optimizer"] for k in args.only.split(","))]
        for spec in specs:
            spec = spec if args.lr is None else {**spec, "lr": args.lr}
            rows.append(train_one(spec, dls, args.epochs, args.seed, args))
            runs.check_history(rows[-1]["history"], at=spec["optimizer"], hint=runs.lower_lr_hint(spec["lr"]))
        plot_losses(rows, args.out / "losses.png")
        for r in rows:
            rec = r.get("_recorder")
            if rec is not None and "b1" in rec.recs:
                plot_recorded(rec.recs, args.out / "onecycle_hypers.png", r["optimizer"])
        print("\n| optimizer | lr | ours | lesson |")
        for r in rows:
            print(f"| {r['optimizer']} | {r['lr']:g} | {_fmt(r['test_accuracy'])} | {_fmt(r['lesson_accuracy'])} |")
        runs.write_json(args.out / "results.json",
                        [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    seconds = time.perf_counter() - t_start
    write_readme(args.out, rows, demos, command, seconds)
    print(f"\ndone in {seconds:.0f} s; outputs in {args.out}")
    return rows


if __name__ == "__main__":
    main()
