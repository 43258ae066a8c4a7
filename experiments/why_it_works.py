"""DLVU "Tools of the trade" / "Why does it work?" demos on Fashion-MNIST subsets, small enough for a CPU.

    python experiments/why_it_works.py                  # a few minutes on a laptop CPU -> runs/why_it_works/
    python experiments/why_it_works.py --docs           # the same, published to docs/why_it_works/
    python experiments/why_it_works.py --quick --out /tmp/wiw       # < 1 min: a smoke run on tiny subsets

1. Memorization (Zhang et al. 2016): an MLP drives its training loss towards 0 on *random* labels (it
   memorises), while its test accuracy stays at chance (10%); the same MLP on the true labels, for contrast.
2. Confidence intervals: a test accuracy p on n examples is ± 1.96 sqrt(p(1-p)/n) (95%): every accuracy
   below is printed with it, and the spread of accuracies over disjoint subsets of 100 / 1,000 test images
   shows why DLVU asks for ~10,000.
3. Random vs grid search (Bergstra & Bengio 2012) of AdamW's lr and weight decay on a log scale, with the same
   budget of short runs, scored on a validation split carved from the training set (never the test set).
4. The development ladder: linear model → one conv, no activation (still a linear model!) → + ReLU →
   + max pooling; each step's test accuracy.
5. Magnitude pruning of a trained LeNet-300-100 (accuracy vs fraction of weights kept, no retraining) and the
   lottery ticket (Frankle & Carbin 2019): retrain the pruned mask from the *original* init (rewind) vs from
   a fresh random init.

Writes ``OUT/*.png``, ``OUT/results.json`` and ``OUT/README.md`` (the summary tables). Each demo has its own
epochs, batch size, learning rates and seeds (in results.json's ``settings``), so ``--epochs``, ``--bs``, ``--lr``
and ``--seed`` are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlearn.callbacks import BatchTransformCB
from jaxlearn.data import (FASHION_MNIST_ENV, FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataLoaders, fashion_mnist,
                           normalize)
from jaxlearn.learner import Learner
from jaxlearn.metrics import accuracy_ci_halfwidth, format_accuracy
from jaxlearn.optim import adam, adamw
from jaxlearn.trees import copy_state

import runs


# ------------------------------------------------------------------------------------------------- models

class MLP(nn.Module):
    hidden: tuple[int, ...] = (300, 100)
    n_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x.reshape(x.shape[0], -1)
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.n_classes)(x)


class Ladder(nn.Module):
    """The DLVU ladder: 'linear', 'conv' (no activation), 'conv_relu', 'conv_relu_pool'."""
    step: str = "linear"
    features: int = 16
    n_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.step != "linear":
            x = nn.Conv(self.features, (3, 3))(x)
            if self.step in ("conv_relu", "conv_relu_pool"):
                x = nn.relu(x)
            if self.step == "conv_relu_pool":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(self.n_classes)(x.reshape(x.shape[0], -1))


LADDER = {"linear": "linear model", "conv": "+ 1 conv (no activation)", "conv_relu": "+ ReLU",
          "conv_relu_pool": "+ 2x2 max pooling"}


# ----------------------------------------------------------------------------------------------- helpers

@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray
    xt: np.ndarray
    yt: np.ndarray


def learner(model, train, valid, bs, lr, optimizer=adam, seed=0, steps_per_call=None, **kw) -> Learner:
    dls = DataLoaders.from_arrays(train, valid, bs, seed=seed)
    spc = steps_per_call or dls.train.n_batches  # one compiled call per epoch: small models, little dispatch
    return Learner(model, dls, optimizer=optimizer, lr=lr, seed=seed, steps_per_call=spc,
                   callbacks=[BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD))], **kw)


def test_accuracy(learn: Learner, d: Data) -> float:
    return float((learn.predict(d.xt, raw=True).argmax(-1) == d.yt).mean())


def log(msg: str) -> None:
    print(msg, flush=True)


def savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------------ 1. memorizing

def memorization(d: Data, n: int, epochs: int, chunk: int, out: Path,
                 args: argparse.Namespace | None = None) -> dict:
    import matplotlib.pyplot as plt
    from jaxlearn.callbacks.plots import integer_ticks
    rng = np.random.default_rng(0)
    x, y_true = d.x[:n], d.y[:n]
    y_rand = rng.integers(0, 10, n).astype(np.int32)
    curves = {}
    for name, y in (("random labels", y_rand), ("true labels", y_true)):
        learn = learner(MLP((512, 512)), (x, y), (d.xt, d.yt), bs=100, lr=1e-3)
        if args is not None:  # the report on random labels: not learning for a while, the weights moving
            runs.diagnose(learn, args, name)
        ep, rows = 0, []
        while ep < epochs:
            learn.fit(chunk, valid=False)
            ep += chunk
            tr = learn.evaluate(learn.dls.train)
            rows.append((ep, tr["loss"], tr["accuracy"], test_accuracy(learn, d)))
            if tr["accuracy"] == 1.0 and tr["loss"] < 0.01:  # memorized: every training label right, loss ~0
                break
        curves[name] = rows
        ep, loss, acc, tacc = rows[-1]
        log(f"  {name}: after {ep} epochs train loss {loss:.4f}, train accuracy {format_accuracy(acc, n)}, "
            f"test accuracy {format_accuracy(tacc, len(d.yt))}")
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rows in curves.items():
        e, l, a, t = map(np.array, zip(*rows))
        axs[0].plot(e, l, "o-", ms=3, label=name)
        axs[1].plot(e, a, "o-", ms=3, label=f"train, {name}")
        axs[1].plot(e, t, "s--", ms=3, label=f"test, {name}")
    axs[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title=f"MLP 512-512 on {n} images")
    axs[1].axhline(0.1, color="gray", lw=0.8, ls=":")
    axs[1].set(xlabel="epoch", ylabel="accuracy", title="memorizes random labels; test stays at chance")
    axs[0].legend(), axs[1].legend(fontsize=7)
    integer_ticks(axs[0].xaxis, axs[1].xaxis)
    savefig(fig, out / "memorization.png")
    return {name: [dict(epoch=e, train_loss=l, train_accuracy=a, test_accuracy=t) for e, l, a, t in rows]
            for name, rows in curves.items()}


# ----------------------------------------------------------------------------------- 2. confidence intervals

def confidence(probs_correct: np.ndarray, out: Path) -> dict:
    import matplotlib.pyplot as plt
    n_all = len(probs_correct)
    rows = []
    for n in (100, 1000, 10_000):
        if n > n_all:
            continue
        subsets = probs_correct[: (n_all // n) * n].reshape(-1, n).mean(1)
        p = float(probs_correct[:n].mean())
        rows.append(dict(n=n, accuracy=p, ci95=accuracy_ci_halfwidth(p, n), n_subsets=len(subsets),
                         subset_min=float(subsets.min()), subset_max=float(subsets.max()),
                         subset_std=float(subsets.std()), predicted_std=float(np.sqrt(p * (1 - p) / n))))
        log(f"  n={n:>6}: {format_accuracy(p, n)}; {len(subsets)} disjoint subsets range "
            f"{100 * subsets.min():.1f}%..{100 * subsets.max():.1f}%")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    p_all = probs_correct.mean()
    for i, n in enumerate((100, 1000)):
        if n > n_all:
            continue
        subsets = probs_correct[: (n_all // n) * n].reshape(-1, n).mean(1)
        h = accuracy_ci_halfwidth(p_all, n)
        ax.scatter(np.full(len(subsets), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(subsets)),
                   subsets, s=10, alpha=0.6)
        ax.errorbar([i + 0.3], [p_all], yerr=[h], fmt="k_", capsize=6, label="±1.96·sqrt(p(1-p)/n)" if i == 0 else None)
    ax.axhline(p_all, color="gray", ls=":", lw=0.8)
    ax.set_xticks([0, 1], ["100 test images", "1,000 test images"])
    ax.set(xlabel="size of each disjoint test subset", ylabel="accuracy",
           title=f"accuracy on disjoint test subsets (all {n_all}: {100 * p_all:.2f}%)")
    ax.legend()
    savefig(fig, out / "ci.png")
    return {"rows": rows}


# -------------------------------------------------------------------------------------- 3. random vs grid

def search(d: Data, n_train: int, n_valid: int, epochs: int, budget_side: int, out: Path) -> dict:
    import matplotlib.pyplot as plt
    train = (d.x[:n_train], d.y[:n_train])
    valid = (d.x[n_train:n_train + n_valid], d.y[n_train:n_train + n_valid])  # held out from *training* data
    learn = learner(MLP((128,)), train, valid, bs=128, lr=1e-3, optimizer=adamw)
    lr_range, wd_range = (1e-5, 1e-1), (1e-5, 1e0)

    def score(lr, wd):
        with learn.trial():  # every trial from the same init, same shuffles: only lr and wd differ
            learn.set_hyper("learning_rate", lr)
            learn.set_hyper("weight_decay", wd)
            learn.fit(epochs, valid=False)
            return learn.evaluate()["accuracy"], copy_state(learn.state)

    k = budget_side
    grid = [(lr, wd) for lr in np.geomspace(*lr_range, k) for wd in np.geomspace(*wd_range, k)]
    rng = np.random.default_rng(0)
    rand = [(10 ** rng.uniform(*np.log10(lr_range)), 10 ** rng.uniform(*np.log10(wd_range))) for _ in range(k * k)]
    results = {}
    for name, configs in (("grid", grid), ("random", rand)):
        rows, best = [], (-1.0, None, None)
        for lr, wd in configs:
            acc, state = score(lr, wd)
            rows.append(dict(lr=float(lr), wd=float(wd), valid_accuracy=acc))
            if acc > best[0]:
                best = (acc, (lr, wd), state)
        learn.state = best[2]
        tacc = test_accuracy(learn, d)
        results[name] = dict(runs=rows, best_lr=float(best[1][0]), best_wd=float(best[1][1]),
                             best_valid_accuracy=best[0], test_accuracy_of_best=tacc,
                             distinct_lrs=len({round(np.log10(r['lr']), 6) for r in rows}))
        log(f"  {name:>6}: {len(rows)} runs, best lr {best[1][0]:.2e} wd {best[1][1]:.2e}: valid "
            f"{format_accuracy(best[0], n_valid)}, test {format_accuracy(tacc, len(d.yt))} "
            f"({results[name]['distinct_lrs']} distinct lrs tried)")
    fig, axs = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    for ax, name in zip(axs[:2], ("grid", "random")):
        rows = results[name]["runs"]
        sc = ax.scatter([r["lr"] for r in rows], [r["wd"] for r in rows], c=[r["valid_accuracy"] for r in rows],
                        cmap="viridis", vmin=0.1, vmax=max(r["valid_accuracy"] for r in results["grid"]["runs"]
                                                           + results["random"]["runs"]), s=70)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay",
               title=f"{name} search ({len(rows)} runs)")
    fig.colorbar(sc, ax=axs[1], label="validation accuracy")
    for name, m in (("grid", "o"), ("random", "x")):
        rows = results[name]["runs"]
        axs[2].scatter([r["lr"] for r in rows], [r["valid_accuracy"] for r in rows], marker=m, label=name)
    axs[2].set(xscale="log", xlabel="learning rate", ylabel="validation accuracy",
               title="projected on the lr axis")
    axs[2].legend()
    savefig(fig, out / "search.png")
    return results


# ------------------------------------------------------------------------------------------------ 4. ladder

def ladder(d: Data, n_train: int, epochs: int, out: Path) -> tuple[dict, np.ndarray]:
    import matplotlib.pyplot as plt
    rows, correct = [], None
    for step, label in LADDER.items():
        learn = learner(Ladder(step), (d.x[:n_train], d.y[:n_train]), (d.xt, d.yt), bs=128, lr=3e-3)
        t0 = time.perf_counter()
        learn.fit(epochs, valid=False)
        preds = learn.predict(d.xt, raw=True).argmax(-1)
        acc = float((preds == d.yt).mean())
        n_params = sum(p.size for p in jax.tree.leaves(learn.state.params))
        rows.append(dict(step=step, label=label, test_accuracy=acc, ci95=accuracy_ci_halfwidth(acc, len(d.yt)),
                         n_params=int(n_params), seconds=time.perf_counter() - t0))
        log(f"  {label:<28} {n_params:>8,} params: test {format_accuracy(acc, len(d.yt))}")
        correct = (preds == d.yt).astype(np.float64)  # the last (best) model's per-example hits, for the CIs
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(rows)), [100 * r["test_accuracy"] for r in rows], yerr=[100 * r["ci95"] for r in rows],
           capsize=5, color="tab:blue")
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=12, fontsize=8)
    lo = min(100 * r["test_accuracy"] for r in rows)
    ax.set(ylim=(lo - 5, 100), xlabel="model", ylabel="test accuracy (%)",
           title=f"the development ladder ({n_train} training images, {epochs} epochs)")
    savefig(fig, out / "ladder.png")
    return {"rows": rows}, correct


# ------------------------------------------------------------------------------------- 5. pruning, lottery

def _kernels(params) -> dict:
    return {k: v for k, v in flatten_dict(params).items() if k[-1] == "kernel"}


def magnitude_mask(params, keep: float) -> dict:
    """Global magnitude pruning: keep the ``keep`` fraction of all kernel weights with the largest |w|."""
    kernels = _kernels(params)
    all_w = np.concatenate([np.abs(np.asarray(v)).ravel() for v in kernels.values()])
    n_keep = max(1, int(round(keep * all_w.size)))
    threshold = np.partition(all_w, all_w.size - n_keep)[all_w.size - n_keep]
    flat = flatten_dict(params)
    return unflatten_dict({k: (np.abs(np.asarray(v)) >= threshold).astype(np.float32) if k in kernels
                           else np.ones(v.shape, np.float32) for k, v in flat.items()})


def masked(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """``tx`` whose updates are zero where ``mask`` is 0: pruned weights stay exactly 0 while training."""
    mask = jax.tree.map(jnp.asarray, mask)

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return jax.tree.map(lambda u, m: u * m, updates, mask), state
    return optax.GradientTransformation(tx.init, update)


def pruning(d: Data, n_train: int, epochs: int, keeps: list[float], ticket_keeps: list[float], out: Path) -> dict:
    import matplotlib.pyplot as plt
    train = (d.x[:n_train], d.y[:n_train])
    lr = 1e-3
    learn = learner(MLP((300, 100)), train, (d.xt, d.yt), bs=128, lr=lr, seed=0)
    theta0 = copy_state(learn.state.params)
    learn.fit(epochs, valid=False)
    trained = learn.state
    full_acc = test_accuracy(learn, d)
    n_weights = sum(v.size for v in _kernels(theta0).values())
    log(f"  LeNet-300-100 ({n_weights:,} kernel weights), trained: test {format_accuracy(full_acc, len(d.yt))}")
    curve = []
    for keep in keeps:
        mask = magnitude_mask(trained.params, keep)
        learn.state = trained.replace(params=jax.tree.map(lambda p, m: p * m, trained.params, mask))
        acc = test_accuracy(learn, d)
        curve.append(dict(keep=keep, test_accuracy=acc))
        log(f"    keep {100 * keep:5.1f}% of weights, no retraining: {format_accuracy(acc, len(d.yt))}")
    tickets = []
    for keep in ticket_keeps:
        mask = magnitude_mask(trained.params, keep)
        row = dict(keep=keep)
        for name, seed in (("rewind_to_init", 0), ("random_reinit", 1)):
            tx = masked(optax.inject_hyperparams(adam)(learning_rate=lr), mask)
            l2 = learner(MLP((300, 100)), train, (d.xt, d.yt), bs=128, lr=lr, optimizer=tx, seed=seed)
            start = theta0 if name == "rewind_to_init" else l2.state.params  # seed 1: a fresh random init
            l2.state = l2.state.replace(params=jax.tree.map(lambda p, m: p * m, start, mask))
            l2.fit(epochs, valid=False)
            assert all(float(jnp.abs(p * (1 - m)).max()) == 0 for p, m in
                       zip(jax.tree.leaves(l2.state.params), jax.tree.leaves(mask)))
            row[name] = test_accuracy(l2, d)
        tickets.append(row)
        log(f"    keep {100 * keep:5.1f}%, retrained {epochs} epochs: from the original init "
            f"{format_accuracy(row['rewind_to_init'], len(d.yt))}, from a fresh init "
            f"{format_accuracy(row['random_reinit'], len(d.yt))}")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([100 * c["keep"] for c in curve], [100 * c["test_accuracy"] for c in curve], "o-",
            label="pruned, no retraining")
    h = 100 * accuracy_ci_halfwidth(full_acc, len(d.yt))
    ax.axhspan(100 * full_acc - h, 100 * full_acc + h, color="gray", alpha=0.2, label="unpruned ± 95% CI")
    ax.plot([100 * t["keep"] for t in tickets], [100 * t["rewind_to_init"] for t in tickets], "s-",
            label="mask retrained from original init (ticket)")
    ax.plot([100 * t["keep"] for t in tickets], [100 * t["random_reinit"] for t in tickets], "^--",
            label="mask retrained from fresh init")
    ax.set(xscale="log", xlabel="% of weights kept", ylabel="test accuracy (%)",
           title="magnitude pruning and lottery tickets (LeNet-300-100)")
    ax.legend(fontsize=8)
    savefig(fig, out / "pruning.png")
    return {"unpruned_test_accuracy": full_acc, "n_weights": int(n_weights), "curve": curve, "tickets": tickets}


# ------------------------------------------------------------------------------------------------- report

def pct(p: float, n: int) -> str:
    return f"{100 * p:.2f} ± {100 * accuracy_ci_halfwidth(p, n):.2f}"


def write_readme(r: dict, out: Path, n_test: int) -> None:
    s = r["settings"]
    L = ["# Why it works: DLVU demos on Fashion-MNIST", "",
         f"Produced by `{r['command']}` in {r['seconds']:.0f} s on {r['device']} "
         f"(jax {r['jax_version']}). Accuracies are % ± the 95% confidence half-width 1.96·sqrt(p(1-p)/n) "
         f"(n = {n_test:,} test images unless stated).", ""]
    m = r["memorization"]
    L += ["## 1. Memorizing random labels (Zhang et al. 2016)", "",
          f"MLP 784-512-512-10, Adam lr 1e-3, on the first {s['mem_n']:,} training images.", "",
          "| labels | epochs | train loss | train accuracy | test accuracy |", "| --- | --- | --- | --- | --- |"]
    for name, rows in m.items():
        last = rows[-1]
        L.append(f"| {name} | {last['epoch']} | {last['train_loss']:.4f} | {pct(last['train_accuracy'], s['mem_n'])} "
                 f"(n={s['mem_n']}) | {pct(last['test_accuracy'], n_test)} |")
    L += ["", "Both runs stop once every training label is fitted with training loss < 0.01. The network "
          "fits labels that carry no information (it memorizes; it needs more epochs for them than for true "
          "labels) and so predicts the test set at chance level (10%): the ability to memorize is not what "
          "makes the same network generalize on true labels. (The random-label test accuracy strays from 10% "
          "by more than the binomial ± because its errors are not independent: similar images — often a whole "
          "class — share the random label that the network learned for their neighbours.)", "",
          "![memorization](memorization.png)", ""]
    c = r["confidence"]["rows"]
    L += ["## 2. How many test images? (confidence intervals)", "",
          "The ladder's last model evaluated on the first n test images, and on disjoint subsets of n images.", "",
          "| n | accuracy on the first n | 95% CI half-width | std over disjoint subsets "
          "| predicted sqrt(p(1-p)/n) | subsets range |",
          "| --- | --- | --- | --- | --- | --- |"]
    for row in c:
        spread = (f"{100 * row['subset_std']:.2f}% ({row['n_subsets']} subsets)", f"{100 * row['subset_min']:.1f}.."
                  f"{100 * row['subset_max']:.1f}%") if row["n_subsets"] > 1 else ("—", "—")
        L.append(f"| {row['n']:,} | {100 * row['accuracy']:.2f}% | ±{100 * row['ci95']:.2f}% | {spread[0]} | "
                 f"{100 * row['predicted_std']:.2f}% | {spread[1]} |")
    L += ["", "The spread of accuracies over disjoint subsets matches the binomial standard deviation "
          "sqrt(p(1-p)/n). With 100 test images a model's accuracy is only known to about ±7 points (the "
          "lecture's ±0.1 at p = 0.5), with 10,000 to about ±0.7: differences smaller than that between two "
          "models are noise.", "", "![ci](ci.png)", ""]
    sr = r["search"]
    L += ["## 3. Random search vs grid search (log scale)", "",
          f"AdamW (lr ∈ [1e-5, 1e-1], wd ∈ [1e-5, 1], log-uniform), MLP 784-128-10, {s['search_epochs']} epochs on "
          f"{s['search_n_train']:,} training images, scored on {s['search_n_valid']:,} *validation* images held out "
          "from the training set; only the winner is evaluated on the test set.", "",
          "| search | runs | distinct lrs | best lr | best wd | validation accuracy | test accuracy of the winner |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("grid", "random"):
        x = sr[name]
        L.append(f"| {name} | {len(x['runs'])} | {x['distinct_lrs']} | {x['best_lr']:.2e} | {x['best_wd']:.2e} | "
                 f"{pct(x['best_valid_accuracy'], s['search_n_valid'])} (n={s['search_n_valid']:,}) | "
                 f"{pct(x['test_accuracy_of_best'], n_test)} |")
    L += ["", "With the same budget a grid tries only √budget values of each parameter; random search tries "
          "a new value of every parameter in every run, which pays off when one parameter (here the lr) "
          "matters much more than the other (wd).", "", "![search](search.png)", ""]
    L += ["## 4. The development ladder", "",
          f"Adam lr 3e-3, bs 128, {s['ladder_epochs']} epochs on {s['ladder_n_train']:,} training images.", "",
          "| model | parameters | test accuracy |", "| --- | --- | --- |"]
    for row in r["ladder"]["rows"]:
        L.append(f"| {row['label']} | {row['n_params']:,} | {pct(row['test_accuracy'], n_test)} |")
    L += ["", "A convolution without an activation is still a linear function of the pixels, so it can do no "
          "better than the linear model; the non-linearity is what helps, and pooling then adds some "
          "translation invariance with 4× fewer inputs to the classifier.", "", "![ladder](ladder.png)", ""]
    p = r["pruning"]
    L += ["## 5. Magnitude pruning and the lottery ticket", "",
          f"LeNet-300-100 ({p['n_weights']:,} weights), Adam lr 1e-3, {s['prune_epochs']} epochs on "
          f"{s['prune_n_train']:,} images: {pct(p['unpruned_test_accuracy'], n_test)} unpruned. Global magnitude "
          "pruning of the kernels (biases kept), no retraining:", "",
          "| weights kept | test accuracy |", "| --- | --- |"]
    for row in p["curve"]:
        L.append(f"| {100 * row['keep']:.1f}% | {pct(row['test_accuracy'], n_test)} |")
    L += ["", f"Retraining only the kept weights for {s['prune_epochs']} epochs (the pruned ones held at 0):", "",
          "| weights kept | from the original init (rewind: the ticket) | from a fresh random init |",
          "| --- | --- | --- |"]
    for row in p["tickets"]:
        L.append(f"| {100 * row['keep']:.1f}% | {pct(row['rewind_to_init'], n_test)} "
                 f"| {pct(row['random_reinit'], n_test)} |")
    L += ["", "![pruning](pruning.png)", ""]
    (out / "README.md").write_text("\n".join(L))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    own = "each demo sets its own (see settings in results.json)"
    return runs.experiment_parser(
        "why_it_works", __doc__.splitlines()[0],
        helps={"quick": "tiny subsets and epochs: a smoke run of under a minute"},
        not_applicable={"epochs": own, "bs": own, "lr": own,
                        "seed": "the demos fix their seeds, so that the published numbers reproduce"},
    ).parse_args(argv)


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = " ".join(["python experiments/why_it_works.py", *(sys.argv[1:] if argv is None else argv)])
    runs.prepare_run(args)
    q = args.quick
    s = dict(mem_n=200 if q else 1000, mem_epochs=4 if q else 300, mem_chunk=2 if q else 5,
             search_n_train=500 if q else 5000, search_n_valid=500 if q else 5000, search_epochs=1 if q else 3,
             search_side=2 if q else 3, ladder_n_train=500 if q else 10_000, ladder_epochs=1 if q else 3,
             prune_n_train=500 if q else 10_000, prune_epochs=1 if q else 5,
             keeps=[1.0, 0.2, 0.05] if q else [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01],
             ticket_keeps=[0.05] if q else [0.2, 0.05, 0.02, 0.01], n_test=1000 if q else 10_000)
    splits = fashion_mnist(use_tfds=not os.environ.get(FASHION_MNIST_ENV))
    (x, y), (xt, yt) = splits["train"], splits["test"]
    d = Data(x, y, xt[:s["n_test"]], yt[:s["n_test"]])
    t0 = time.perf_counter()
    r: dict = {"settings": s}
    log("1. memorizing random labels")
    r["memorization"] = memorization(d, s["mem_n"], s["mem_epochs"], s["mem_chunk"], args.out, args)
    log("4. the development ladder")
    r["ladder"], correct = ladder(d, s["ladder_n_train"], s["ladder_epochs"], args.out)
    log("2. confidence intervals (the ladder's last model)")
    r["confidence"] = confidence(correct, args.out)
    log("3. random vs grid search")
    r["search"] = search(d, s["search_n_train"], s["search_n_valid"], s["search_epochs"], s["search_side"], args.out)
    log("5. magnitude pruning and lottery tickets")
    r["pruning"] = pruning(d, s["prune_n_train"], s["prune_epochs"], s["keeps"], s["ticket_keeps"], args.out)
    dev = jax.devices()[0]
    device = (f"a CPU ({os.cpu_count()} cores, {platform.machine()})" if dev.platform == "cpu"
              else f"{dev.platform} ({getattr(dev, 'device_kind', '')})")
    r.update(seconds=time.perf_counter() - t0, device=device, jax_version=jax.__version__, command=command)
    if (args.out / "health.json").exists() and args.diagnose:
        r["health"] = json.loads((args.out / "health.json").read_text())
    runs.write_json(args.out / "results.json", r)
    write_readme(r, args.out, len(d.yt))
    log(f"done in {r['seconds']:.0f} s: {args.out}/README.md")
    return r


if __name__ == "__main__":
    main()
