"""The training-health report on deliberately broken runs, each paired with its healthy twin (the same run,
fixed), plus the courses' own healthy recipes as controls: does ``learn.diagnose()`` find what is wrong, name
the right layer, stay silent on healthy runs, and does its top remedy work? And what does ``HealthCB`` cost?

    python benchmarks/health.py                  # every configuration, 3 seeds, and the overhead: ~40 min, 2 cores
    python benchmarks/health.py --seeds 1 --only raw_0_255 lr_1e-6   # a look at a few
    python benchmarks/health.py --docs           # also publish docs/health/ (the table and a few report figures)
    python benchmarks/health.py --publish run.json   # publish docs/health/ from a finished run's results
    python benchmarks/health.py --overhead-only --results run.json   # (re)measure the overhead into a run's results

For each broken configuration and seed: ``diagnose(100)`` on the broken run and on its twin; the broken run is
*found* when a problem of its class is among the findings (``recall``), its layer is *named* when the first such
finding's layer is the faulty one (``layer_top1``, for layer-specific faults), and *steps to detect* is the first
prefix of the 100 steps (10, 20, ...) on which the rules already find it. A healthy run (twin or control) with
any finding is a false positive. *Remedy success*: the broken run with its report's top finding's remedy applied
(the remedy as written: the measured input statistics, the lr from ``learn.lr_find()``'s valley, the init the
finding names...) trained as long as the twin, ending within 0.05 loss (or 2 accuracy points) of it, or better.

Overhead: the main job (lesson 17's BatchNorm CNN, Fashion-MNIST, bs 256, SGD + momentum) with and without a
default ``HealthCB``, alternating one-epoch fits, median samples/s of each over ``--overhead-reps`` pairs.

Writes ``benchmarks/results/health.json`` (the summary and every run) and prints the per-configuration table
(which BENCHMARKS.md carries); with ``--docs``, ``docs/health/README.md`` and report figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import makemore as mm, optim, text
from jaxlearn.callbacks import BatchTransformCB, HealthCB
from jaxlearn.callbacks.health_rules import HealthThresholds, before, diagnose_observations
from jaxlearn.collab import EmbeddingDot, EmbeddingDotBias, collab_loaders
from jaxlearn.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataLoaders, fashion_mnist, names_loaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.losses import mse
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal, torch_default
from jaxlearn.vision import get_model

ROOT = Path(__file__).resolve().parents[1]
N_BATCHES = 100          # the diagnosis window
PREFIXES = range(10, N_BATCHES + 1, 10)

# problem classes: a broken run is found when any problem of its class is
LR_HIGH = {"update_ratio_high", "oscillating_loss", "diverged", "exploding_gradients"}
LR_LOW = {"update_ratio_low", "not_learning"}
INIT = {"dead_units", "vanishing_activations", "exploding_activations", "saturated_units", "vanishing_gradients",
        "high_initial_loss"}


# ------------------------------------------------------------------------------------------- families

@cache
def fmnist_arrays():
    sp = fashion_mnist()
    (x, y), (xt, yt) = sp["train"], sp["test"]
    return (x[:10_000], y[:10_000]), (xt[:2_000], yt[:2_000])


class SoftmaxOut(nn.Module):
    """A model whose output has already been through a softmax (a classic bug: cross_entropy softmaxes again)."""
    inner: nn.Module

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jax.nn.softmax(self.inner(x, train))


class MLP(nn.Module):
    """A user's own MLP with its activations as plain functions (no activation modules)."""
    act: str = "relu"
    init_scale: float | None = None  # None: Kaiming (gain 5/3 for tanh); else N(0, init_scale)
    bias: float = 0.0
    widths: tuple[int, ...] = (128, 64, 64, 64)
    last_scale: float = 1.0  # the output layer's init scale (30: confident logits; 0.01: makemore's fix)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.reshape(len(x), -1)
        fn = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[self.act]
        gain = {"relu": math.sqrt(2), "tanh": 5 / 3, "sigmoid": 1.0}[self.act]
        for w in self.widths:
            init = nn.initializers.variance_scaling(gain ** 2, "fan_in", "normal") if self.init_scale is None \
                else nn.initializers.normal(self.init_scale)
            h = fn(nn.Dense(w, kernel_init=init, bias_init=nn.initializers.constant(self.bias))(h))
        return nn.Dense(10, kernel_init=nn.initializers.variance_scaling(self.last_scale ** 2, "fan_in", "normal"))(h)


def fmnist_learner(k: dict, seed: int) -> Learner:
    """Fashion-MNIST (10,000 training images, 2,000 to validate), bs 256: lesson 17's CNN or a plain MLP."""
    (x, y), valid = fmnist_arrays()
    n = k.get("n_train", len(y))
    x, y = x[:n], y[:n]
    if k.get("labels") == "shuffled":
        y = np.random.default_rng(seed).permutation(y)
    transform = {"float01": None, "raw255": lambda a: a.astype(jnp.float32)}[k.get("transform", "float01")]
    dls = DataLoaders.from_arrays((x, y), valid, k.get("bs", 256), seed=seed,
                                  **({"transform": transform} if transform else {}))
    if k.get("model", "cnn") == "cnn":
        act = partial(GeneralRelu, leak=0.1, sub=0.4) if k.get("act", "general") == "general" else GeneralRelu
        init = {"kaiming": kaiming_normal(a=0.1), "torch": torch_default(), "zeros": nn.initializers.zeros}[
            k.get("init", "kaiming")]
        model = get_model(act, norm=BatchNorm if k.get("norm", True) else None, kernel_init=init)
    else:
        model = MLP(k.get("act", "relu"), k.get("init_scale"), k.get("bias", 0.0), last_scale=k.get("last_scale", 1.0))
    if k.get("softmax_twice"):
        model = SoftmaxOut(model)
    stats = k.get("stats", (FASHION_MNIST_MEAN, FASHION_MNIST_STD))
    cbs = [BatchTransformCB(normalize(*stats))] if stats else []
    cbs += [BatchTransformCB(normalize(*s)) for s in k.get("extra_normalize", [])]
    opt = {"sgd": partial(optax.sgd, momentum=0.9), "adam": optim.adam,
           "adamw": partial(optim.adamw, weight_decay=k.get("wd", 0.01))}[k.get("opt", "sgd")]
    return Learner(model, dls, optimizer=opt, lr=k.get("lr", 0.2), callbacks=cbs, seed=seed)


@cache
def names_dls():
    return names_loaders(32, batches_per_epoch=100)


def makemore_learner(k: dict, seed: int) -> Learner:
    """makemore part 3's models on the names, the lecture's SGD (``makemore.lecture_learner``)."""
    model = mm.LADDER[k["rung"]].model if "rung" in k else mm.DeepMLP(**k.get("deep", {}))
    # the lecture's lr 0.1 (its drop to 0.01 comes at step 100,000), injected so that lr_find can move it
    return mm.lecture_learner(model, names_dls(), seed=seed, steps_per_call=1,
                              optimizer=partial(optim.sgd, learning_rate=k.get("lr", 0.1)))


@cache
def stream_dls(bptt: int):
    st = text.nietzsche_loaders(kind="stateful", batch_size=64, bptt=bptt, vocab="lesson7")
    n = 6_000 * 32 // bptt // 64  # the same characters whatever the window
    return DataLoaders(dataclasses.replace(st.train, x=st.train.x[:64 * n], y=st.train.y[:64 * n]),
                       dataclasses.replace(st.valid, x=st.valid.x[:64 * 20], y=st.valid.y[:64 * 20]), st.info)


def rnn_learner(k: dict, seed: int) -> Learner:
    """Lesson 7's stateful RNN / LSTM on Nietzsche (64 streams, a ``bptt`` window), Adam; the clipped variant
    chains ``optax.clip_by_global_norm`` before it."""
    dls = stream_dls(k.get("bptt", 32))
    gain = k.get("gain", 1.0)
    ortho = nn.initializers.orthogonal()
    init = text.identity_init if k.get("identity") else lambda key, s, d=jnp.float32: ortho(key, s, d) * gain
    model = text.StatefulCharRnn(len(dls.info["vocab"]), k.get("cell", "rnn"), n_hidden=128, recurrent_init=init)
    tx = partial(optim.adam, eps_in_sqrt=False)
    if k.get("clip"):
        tx = _clipped(k["clip"])
    return Learner(model, dls, optimizer=tx, lr=k.get("lr", 3e-3), seed=seed)


def _clipped(max_norm: float) -> Callable[..., optax.GradientTransformation]:
    def factory(learning_rate):
        return optax.chain(optax.clip_by_global_norm(max_norm), optim.adam(learning_rate, eps_in_sqrt=False))
    return factory


@cache
def ratings_dls():
    return collab_loaders("ml-latest-small", batch_size=256)


def collab_learner(k: dict, seed: int) -> Learner:
    """Lesson 5's collaborative filtering on ml-latest-small, Adam, an MSE loss."""
    dls = ratings_dls()
    cls = {"dot": EmbeddingDot, "dot_bias": EmbeddingDotBias}[k.get("model", "dot_bias")]
    opt = partial(optim.adamw, weight_decay=k.get("wd", 0.0), eps_in_sqrt=False)
    return Learner(cls(dls.info["n_users"], dls.info["n_items"]), dls, loss_fn=mse, optimizer=opt,
                   lr=k.get("lr", 5e-3), seed=seed)


FAMILIES = {"fmnist": fmnist_learner, "makemore": makemore_learner, "rnn": rnn_learner, "collab": collab_learner}
TRAIN_STEPS = {"fmnist": 400, "makemore": 10_000, "rnn": 600, "collab": 600}  # for remedy success


# -------------------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class Config:
    name: str
    family: str
    broken: dict
    twin: dict              # the same run, fixed
    expect: frozenset       # problems of its class
    layer: str | None = None  # the faulty layer (a prefix of the finding's layer), for layer-specific faults
    note: str = ""
    fit_epochs: int = 0     # > 0: checked by HealthCB during a fit with validation (overfitting), not diagnose
    twin_epochs: int = 0    # the twin's fit, when it is the fix (early stopping); 0: fit_epochs


def cfg(name, family, broken, twin, expect, layer=None, note="", **kw) -> Config:
    return Config(name, family, broken, twin, frozenset(expect), layer, note, **kw)


CNN = {"model": "cnn"}
MLP_RELU = {"model": "mlp", "act": "relu", "lr": 0.05}
CONFIGS = [
    cfg("raw_0_255", "fmnist", {**CNN, "transform": "raw255", "stats": None}, CNN, {"unnormalized_input"},
        note="0..255 pixels fed as floats"),
    cfg("stats_not_applied", "fmnist", {**CNN, "stats": None, "transform": "raw255",
                                        "extra_normalize": [(FASHION_MNIST_MEAN, FASHION_MNIST_STD)]},
        CNN, {"unnormalized_input"}, note="[0, 1] statistics applied to 0..255 pixels"),
    cfg("stats_wrong_scale", "fmnist", {**CNN, "stats": (73.0, 90.0)}, CNN, {"unnormalized_input"},
        note="0..255 statistics applied to [0, 1] pixels"),
    cfg("poor_init_no_bn", "fmnist", {**CNN, "norm": False, "init": "torch", "act": "relu", "lr": 0.4},
        {**CNN, "lr": 0.4}, INIT | {"not_learning"}, note="lesson 17's baseline: ReLU, PyTorch init, no BN"),
    cfg("zero_init", "fmnist", {**CNN, "norm": False, "init": "zeros", "lr": 0.1}, {**CNN, "norm": False, "lr": 0.1},
        {"dead_units", "vanishing_activations", "vanishing_gradients", "not_learning"}, note="every kernel zero"),
    cfg("lr_10x", "fmnist", {**CNN, "lr": 2.0}, CNN, LR_HIGH, note="10x the finder's lr"),
    cfg("lr_100x", "fmnist", {**CNN, "lr": 20.0}, CNN, LR_HIGH, note="100x the finder's lr"),
    cfg("lr_1e-6", "fmnist", {**CNN, "lr": 1e-6}, CNN, LR_LOW),
    cfg("adam_high_lr", "fmnist", {**MLP_RELU, "opt": "adam", "lr": 0.1},
        {**MLP_RELU, "opt": "adam", "lr": 1e-3}, LR_HIGH, note="the MLP, Adam at 0.1, no warmup"),
    cfg("labels_shuffled", "fmnist", {**CNN, "labels": "shuffled"}, CNN, {"not_learning"}),
    cfg("softmax_twice", "fmnist", {**CNN, "softmax_twice": True}, CNN,
        {"outputs_are_probabilities", "not_learning"},
        note="the model's softmax, then cross_entropy's"),
    cfg("weight_decay_huge", "fmnist", {**CNN, "opt": "adamw", "lr": 3e-3, "wd": 30.0},
        {**CNN, "opt": "adamw", "lr": 3e-3}, {"not_learning", "vanishing_activations", "update_ratio_high"}),
    cfg("mlp_sigmoid_deep", "fmnist", {"model": "mlp", "act": "sigmoid", "init_scale": 1.0, "lr": 0.05}, MLP_RELU,
        {"vanishing_gradients", "saturated_units", "not_learning"}, layer="Dense_0",
        note="4 sigmoid layers, N(0, 1) init"),
    cfg("mlp_tanh_large_init", "fmnist", {"model": "mlp", "act": "tanh", "init_scale": 1.0, "lr": 0.05},
        {"model": "mlp", "act": "tanh", "lr": 0.05}, {"saturated_units"}, layer="Dense_0", note="N(0, 1): |z| ~ 28 at init"),
    cfg("mlp_negative_bias", "fmnist", {**MLP_RELU, "bias": -3.0}, MLP_RELU, {"dead_units"}, layer="Dense_0",
        note="every ReLU's bias -3"),
    cfg("mlp_confident_logits", "fmnist", {**MLP_RELU, "last_scale": 30.0}, MLP_RELU, {"high_initial_loss"},
        layer="Dense_4", note="logits x30"),
    cfg("makemore_27", "makemore", {"rung": 0}, {"rung": 3}, {"high_initial_loss", "saturated_units"},
        layer="W2", note="the lecture's first init: loss 27"),
    cfg("makemore_tanh_saturated", "makemore", {"rung": 1}, {"rung": 3}, {"saturated_units"}, layer="Tanh_0",
        note="W1 randn: tanh saturated"),
    cfg("deep_tanh_gain_3", "makemore", {"deep": {"gain": 3.0}}, {"deep": {}}, {"saturated_units"},
        layer="Tanh_0"),
    cfg("deep_tanh_gain_0.5", "makemore", {"deep": {"gain": 0.5}}, {"deep": {}},
        {"vanishing_activations", "vanishing_gradients"}, note="activations shrink layer over layer"),
    cfg("makemore_lr_1e-4", "makemore", {"rung": 3, "lr": 1e-4}, {"rung": 3}, LR_LOW),
    cfg("rnn_gain_3", "rnn", {"gain": 3.0}, {}, {"exploding_gradients"}, layer="rnn/h_0",
        note="vanilla RNN, recurrent matrix 3x orthogonal, bptt 32"),
    cfg("lstm_lr_high", "rnn", {"cell": "lstm", "lr": 0.3}, {"cell": "lstm"}, LR_HIGH),
    cfg("collab_no_range", "collab", {"model": "dot"}, {}, {"high_initial_loss"},
        note="lesson 5's EmbeddingDot: no biases, no sigmoid range"),
    cfg("collab_lr_high", "collab", {"lr": 3.0}, {}, LR_HIGH),
    cfg("collab_weight_decay_huge", "collab", {"wd": 100.0}, {}, {"not_learning", "update_ratio_high"}),
    cfg("overfit_small_data", "fmnist", {**MLP_RELU, "n_train": 300, "bs": 32, "lr": 0.05},
        {**MLP_RELU, "n_train": 300, "bs": 32, "lr": 0.05}, {"overfitting"}, fit_epochs=25, twin_epochs=5,
        note="300 images, 25 epochs, checked by HealthCB; twin: stopped early, after 5"),
]
CONTROLS = {  # the courses' own healthy recipes
    "lesson17_bn_cnn": ("fmnist", CNN),
    "makemore_bn_mlp": ("makemore", {"rung": 4}),
    "makemore_deep_bn": ("makemore", {"deep": {"batchnorm": True}}),
    "default_lstm": ("rnn", {"cell": "lstm", "lr": 3e-3}),
    "collab_dot_bias": ("collab", {}),
}


# ----------------------------------------------------------------------------------------------- runs

def build(family: str, knobs: dict, seed: int) -> Learner:
    return FAMILIES[family](dict(knobs), seed)


def observe(learn: Learner, n: int = N_BATCHES):
    """``diagnose``'s trial, keeping the observations (for the prefix analysis)."""
    cb = HealthCB(every=1, first=n, check_after=None, verbose=False, max_steps=n)
    with learn.trial():
        learn.fit(-(-n // learn.dls.train.n_batches), valid=False, callbacks=[cb])
        cb.check(learn)
        cb._epochs = []
        return cb.report, cb.observations()


def first_detection(obs, expect: frozenset) -> int | None:
    """The first prefix of the window on which the rules find a problem of the class."""
    for n in PREFIXES:
        if n > len(obs.losses):
            break
        found, _ = diagnose_observations(before(obs, int(obs.loss_steps[0]) + n), HealthThresholds())
        if expect & {f.problem for f in found}:
            return n
    return None


def score(learn: Learner, steps: int) -> dict:
    """Train ``steps`` steps (whole epochs) and evaluate: the validation loss (and accuracy)."""
    epochs = max(1, round(steps / learn.dls.train.n_batches))
    learn.fit(epochs, valid=False)
    m = learn.evaluate()
    return {"loss": m["loss"], **({"accuracy": m["accuracy"]} if "accuracy" in m else {})}


def remedied(config: Config, finding, seed: int) -> Learner | None:
    """The broken run with the top finding's remedy applied, as its text says (None: no remedy to apply)."""
    k, p = dict(config.broken), finding.problem
    family = config.family
    ev = finding.evidence
    if p == "unnormalized_input":
        k["extra_normalize"] = [*k.get("extra_normalize", []), (ev["mean"], ev["std"])]
    elif p == "high_initial_loss":
        k = {"rung": 1} if family == "makemore" else \
            {**k, "model": "dot_bias"} if family == "collab" else {**k, "last_scale": 0.01}
    elif p in ("dead_units", "vanishing_activations", "exploding_activations", "vanishing_gradients"):
        k = {"deep": {}} if family == "makemore" else \
            {**k, "init": "kaiming", "act": "general", "init_scale": None, "bias": 0.0,
             **({"act": "relu"} if k.get("model") == "mlp" else {}),
             **({"norm": True} if k.get("model", "cnn") == "cnn" and k.get("init") != "zeros" else {})}
    elif p == "saturated_units":
        k = {"rung": 3} if family == "makemore" and "rung" in k else \
            {"deep": {}} if family == "makemore" else \
            {**k, "init_scale": None, **({"act": "relu"} if ev.get("activation") == "sigmoid" else {})}
    elif p == "update_ratio_high" and ev.get("likely_cause") == "weight decay":
        k = {**k, "wd": 0.0}
    elif p in ("update_ratio_high", "update_ratio_low", "oscillating_loss", "diverged") or \
            (p == "not_learning" and ev.get("likely_cause") == "lr too low"):
        learn = build(family, k, seed)
        k["lr"] = float(learn.lr_find(plot=False).valley)
        if family == "makemore":
            k["rung"] = k.get("rung", 3)
    elif p == "exploding_gradients" and finding.layer is not None:  # through time: the hidden matrix at gain 1
        k = {**k, "gain": 1.0}
    elif p == "exploding_gradients":
        k = {**k, "clip": 1.0}
    elif p == "outputs_are_probabilities":
        k = {kk: v for kk, v in k.items() if kk != "softmax_twice"}
    elif p == "not_learning":  # the weights move: the labels or the loss
        k = {kk: v for kk, v in k.items() if kk not in ("labels", "softmax_twice", "wd")}
    else:
        return None
    return build(family, k, seed)


def run_config(config: Config, seed: int, out: list) -> None:
    t0 = time.perf_counter()
    row = {"config": config.name, "family": config.family, "seed": seed, "expect": sorted(config.expect)}
    if config.fit_epochs:
        cb = HealthCB(verbose=False)
        learn = build(config.family, config.broken, seed)
        learn.fit(config.fit_epochs, callbacks=[cb])
        report = cb.report
        twin_cb = HealthCB(verbose=False)
        build(config.family, config.twin, seed).fit(config.twin_epochs or config.fit_epochs, callbacks=[twin_cb])
        twin = twin_cb.report
        row["steps_to_detect"] = None
    else:
        report, obs = observe(build(config.family, config.broken, seed))
        twin, _ = observe(build(config.family, config.twin, seed))
        row["steps_to_detect"] = first_detection(obs, config.expect)
    hits = [f for f in report.findings if f.problem in config.expect]
    row.update(found=bool(hits), problems=sorted(report.problems), twin_problems=sorted(twin.problems),
               twin_critical=bool(twin.critical), first=hits[0].problem if hits else None,
               layer=hits[0].layer if hits else None,
               report=json.loads(report.to_json(indent=None)), twin_report=json.loads(twin.to_json(indent=None)))
    if config.layer is not None:
        row["layer_right"] = bool(hits) and (hits[0].layer or "").startswith(config.layer)
    top = report.findings[0] if report.findings else None
    if top is not None and not config.fit_epochs:
        fixed = remedied(config, top, seed)
        if fixed is not None:
            steps = TRAIN_STEPS[config.family]
            a, b = score(fixed, steps), score(build(config.family, config.twin, seed), steps)
            # the remedy works when the fixed run reaches the twin: within 0.05 loss or 2 accuracy points, or better
            ok = a["loss"] <= b["loss"] + 0.05 or ("accuracy" in a and a["accuracy"] >= b["accuracy"] - 0.02)
            row.update(remedy=top.problem, remedied=a, twin_trained=b,
                       remedy_success=bool(ok and math.isfinite(a["loss"])))

    row["seconds"] = round(time.perf_counter() - t0, 1)
    out.append(row)
    print(f"{config.name:26s} seed {seed}: {'FOUND' if row['found'] else 'missed'} {row['problems']} | twin "
          f"{row['twin_problems'] or 'healthy'} | detect {row.get('steps_to_detect')} | remedy "
          f"{row.get('remedy')} {row.get('remedy_success')} ({row['seconds']} s)", flush=True)


def run_control(name: str, family: str, knobs: dict, seed: int, out: list) -> None:
    report, _ = observe(build(family, knobs, seed))
    out.append({"control": name, "seed": seed, "problems": sorted(report.problems), "critical": bool(report.critical),
                "report": json.loads(report.to_json(indent=None))})
    print(f"control {name:20s} seed {seed}: {sorted(report.problems) or 'healthy'}", flush=True)


def overhead(reps: int, epochs: int = 3) -> dict:
    """Samples/s of the main job as ``make run`` trains it (a fit of ``epochs`` epochs) with and without a default
    HealthCB, alternating the two ``reps`` times after one compiling fit each; the median of the paired ratios."""
    sp = fashion_mnist()
    dls = DataLoaders.from_arrays(sp["train"], sp["test"], 256)

    def make(cbs):
        model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
        return Learner(model, dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.2,
                       callbacks=[BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)), *cbs])

    runs = {"plain": make([]), "health": make([HealthCB(verbose=False)])}
    for learn in runs.values():  # compile
        learn.fit(1, valid=False)
    sps = {k: [] for k in runs}
    for _ in range(reps):
        for name, learn in runs.items():
            t0 = time.perf_counter()
            learn.fit(epochs, valid=False)
            jax.block_until_ready(learn.state.params)
            sps[name].append(epochs * len(dls.train) / (time.perf_counter() - t0))
    ratios = [h / p for h, p in zip(sps["health"], sps["plain"])]
    return {"plain_samples_per_s": statistics.median(sps["plain"]),
            "health_samples_per_s": statistics.median(sps["health"]),
            "ratio": statistics.median(sps["health"]) / statistics.median(sps["plain"]),
            "paired_ratio_median": statistics.median(ratios), "overhead": 1 - statistics.median(ratios), "reps": reps,
            "epochs_per_fit": epochs}


# ------------------------------------------------------------------------------------------- summary

def summarize(rows: list, controls: list, over: dict | None) -> dict:
    broken = [r for r in rows]
    layered = [r for r in rows if "layer_right" in r]
    remedies = [r for r in rows if "remedy_success" in r]
    healthy = [{"problems": r["twin_problems"], "critical": r["twin_critical"]} for r in rows] + controls
    steps = [r["steps_to_detect"] for r in rows if r["found"] and r.get("steps_to_detect") is not None]
    return {
        "recall": sum(r["found"] for r in broken) / max(len(broken), 1),
        "false_positive_rate": sum(bool(h["problems"]) for h in healthy) / max(len(healthy), 1),
        "critical_on_healthy": sum(bool(h["critical"]) for h in healthy),
        "layer_top1": sum(r["layer_right"] for r in layered) / max(len(layered), 1),
        "remedy_success": sum(r["remedy_success"] for r in remedies) / max(len(remedies), 1),
        "steps_to_detect": statistics.median(steps) if steps else None,
        "detected_within_100_steps": sum(s <= 100 for s in steps) / max(len(steps), 1),
        "overhead": over["overhead"] if over else None,
        "n_broken_runs": len(broken), "n_healthy_runs": len(healthy), "n_configs": len({r["config"] for r in rows}),
    }


def table(rows: list, controls: list) -> str:
    lines = ["| configuration | family | expected | found (seeds) | layer right | steps to detect | top remedy: works "
             "| twin's findings |", "|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    notes = {c.name: c.note for c in CONFIGS}
    for name, rs in by.items():
        found = f"{sum(r['found'] for r in rs)}/{len(rs)}"
        layer = f"{sum(r['layer_right'] for r in rs)}/{len(rs)}" if "layer_right" in rs[0] else "—"
        steps = [r["steps_to_detect"] for r in rs if r.get("steps_to_detect")]
        remedy = ", ".join(sorted({f"{r['remedy']}: {'yes' if r['remedy_success'] else 'no'}" for r in rs
                                   if "remedy" in r})) or "—"
        twin = ", ".join(sorted({p for r in rs for p in r["twin_problems"]})) or "none"
        problems = ", ".join(sorted({p for r in rs for p in r["problems"]}))
        lines.append(f"| `{name}` ({notes[name]}) | {rs[0]['family']} | {', '.join(rs[0]['expect'])} | {found}: "
                     f"{problems} | {layer} | {statistics.median(steps) if steps else '—'} | {remedy} | {twin} |")
    for name in dict.fromkeys(c["control"] for c in controls):
        cs = [c for c in controls if c["control"] == name]
        lines.append(f"| control `{name}` | {CONTROLS[name][0]} | none | "
                     f"{', '.join(sorted({p for c in cs for p in c['problems']})) or 'healthy'} ({len(cs)} seeds) "
                     f"| — | — | — | — |")
    return "\n".join(lines)


def machine() -> str:
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {jax.devices()[0].platform}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only", nargs="*", help="configuration names (default: all)")
    p.add_argument("--no-controls", action="store_true")
    p.add_argument("--overhead-reps", type=int, default=8, help="paired one-epoch fits (0: skip)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "health.json")
    p.add_argument("--docs", action="store_true", help="also write docs/health/")
    p.add_argument("--publish", type=Path, help="write docs/health/ from this results file, running nothing")
    p.add_argument("--overhead-only", action="store_true",
                   help="measure the overhead alone (on a quiet machine) into the existing --results file")
    args = p.parse_args(argv)
    if args.overhead_only:
        result = json.loads(args.results.read_text())
        result["overhead"] = overhead(args.overhead_reps or 8)
        result["summary"] = summarize(result["runs"], result["controls"], result["overhead"])
        args.results.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(json.dumps(result["overhead"], indent=1))
        return 0
    if args.publish:
        result = json.loads(args.publish.read_text())
        write_docs(result, result["runs"], result["controls"])
        return 0
    if args.seeds < 1:
        p.error(f"--seeds must be positive, got {args.seeds}")
    configs = [c for c in CONFIGS if not args.only or c.name in args.only]
    if args.only and len(configs) != len(args.only):
        p.error(f"unknown configurations: {sorted(set(args.only) - {c.name for c in CONFIGS})}")
    t0 = time.perf_counter()
    rows, controls = [], []
    for config in configs:
        for seed in range(args.seeds):
            run_config(config, seed, rows)
    if not args.no_controls and not args.only:
        for name, (family, knobs) in CONTROLS.items():
            for seed in range(args.seeds):
                run_control(name, family, knobs, seed, controls)
    over = overhead(args.overhead_reps) if args.overhead_reps else None
    summary = summarize(rows, controls, over)
    result = {"date": datetime.date.today().isoformat(), "machine": machine(), "seeds": args.seeds,
              "minutes": round((time.perf_counter() - t0) / 60, 1), "summary": summary, "overhead": over,
              "thresholds": dataclasses.asdict(HealthThresholds()), "runs": rows, "controls": controls}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(table(rows, controls))
    print(json.dumps(summary, indent=1))
    if args.docs:
        write_docs(result, rows, controls)
    return 0


def write_docs(result: dict, rows: list, controls: list) -> None:
    from jaxlearn.callbacks.health_report import HealthReport
    out = ROOT / "docs" / "health"
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in ("poor_init_no_bn", "makemore_27", "rnn_gain_3", "raw_0_255"):
        r = next((r for r in rows if r["config"] == name), None)
        if r is not None:
            HealthReport.from_json(json.dumps(r["report"])).plot(out / f"{name}.png")
            figures.append(name)
    s = result["summary"]
    text_ = ["# The training-health report on broken and healthy runs\n",
             f"Written by `python benchmarks/health.py --docs` on {result['date']} ({result['machine']}), "
             f"{result['seeds']} seeds, {result['minutes']} min.\n",
             f"recall **{s['recall']:.2f}**, false positives **{s['false_positive_rate']:.2f}** "
             f"({s['critical_on_healthy']} critical on a healthy run), layer top-1 **{s['layer_top1']:.2f}**, remedy "
             f"success **{s['remedy_success']:.2f}**, median steps to detect **{s['steps_to_detect']}**, overhead "
             f"of HealthCB on the main job **{(s['overhead'] or 0):.1%}**.\n", table(rows, controls), "\n"]
    text_ += [f"![{n}]({n}.png)\n" for n in figures]
    (out / "README.md").write_text("\n".join(text_))


if __name__ == "__main__":
    sys.exit(main())
