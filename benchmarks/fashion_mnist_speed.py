"""Training speed of lesson 17's BatchNorm CNN on Fashion-MNIST, variants side by side in one run.

    python benchmarks/fashion_mnist_speed.py [--epochs 3] [--bs 256] [--n-train N] [--steps-per-call K]

Variants (same model, data and batch size; epochs interleaved round-robin so drift hits all alike):
  plain       SGD momentum, no statistics
  stats       plain + ActivationStats(GeneralRelu) reduced inside the step   (goal: ≤ 15% slower)
  scan        plain with K steps per compiled call (lax.scan; default a whole epoch, 10 on CPU)
  adam_ours   jaxlearn.optim.adam                                             (goal: ≥ 0.95× optax)
  adam_optax  optax.adam with the same settings
Samples/s is the median over epochs; a ratio is the median of per-round ratios (the two epochs of a round
run back to back); compile time (first call minus one steady step) is reported apart.
Then time-to-accuracy: one-cycle training, evaluated after each epoch, until 90% test accuracy.
Results go to ``benchmarks/results/fashion_mnist_speed-<device>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import jax
import optax

from jaxlearn import optim
from jaxlearn.callbacks import ActivationStats, BatchTransformCB, ParamSchedulerCB, SingleBatchCB
from jaxlearn.data import fashion_mnist_loaders, normalize
from jaxlearn.init import kaiming_normal
from jaxlearn.layers import GeneralRelu
from jaxlearn.learner import Callback, CancelFitException, Learner
from jaxlearn.models import get_model
from jaxlearn.norms import BatchNorm


def machine() -> str:
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{dev.platform}: {dev.device_kind}; host CPU {cpu}, {os.cpu_count()} cores; jax {jax.__version__}"


def make_learner(dls, optimizer, lr, callbacks=(), steps_per_call=1, seed=0) -> Learner:
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
    return Learner(model, dls, optimizer=optimizer, lr=lr, seed=seed, steps_per_call=steps_per_call,
                   callbacks=[BatchTransformCB(normalize(0.28, 0.35)), *callbacks])


def timed_fit(learn: Learner, **kw) -> float:
    t0 = time.perf_counter()
    learn.fit(1, valid=False, **kw)  # reading the epoch's metrics waits for the device
    return time.perf_counter() - t0


def speed(dls, epochs: int, steps_per_call: int) -> dict[str, dict]:
    sgd = partial(optax.sgd, momentum=0.9)
    variants = {
        "plain": make_learner(dls, sgd, 0.1),
        "stats": make_learner(dls, sgd, 0.1, [ActivationStats(GeneralRelu)]),
        "scan": make_learner(dls, sgd, 0.1, steps_per_call=steps_per_call),
        "adam_ours": make_learner(dls, partial(optim.adam, b1=0.9, b2=0.99, eps=1e-5, eps_in_sqrt=False), 3e-3),
        "adam_optax": make_learner(dls, partial(optax.adam, b1=0.9, b2=0.99, eps=1e-5), 3e-3),
    }
    results = {}
    for name, learn in variants.items():
        first = timed_fit(learn, callbacks=[SingleBatchCB()])
        one = timed_fit(learn, callbacks=[SingleBatchCB()])
        results[name] = {"compile_s": first - one, "epoch_s": []}
    for _ in range(epochs):
        for name, learn in variants.items():
            results[name]["epoch_s"].append(timed_fit(learn))
    n = dls.train.n_batches * dls.train.batch_size
    for r in results.values():
        r["samples_per_s"] = n / statistics.median(r["epoch_s"])
    return results


def paired_ratio(variant: dict, reference: dict) -> float:
    """Median over rounds of (reference epoch s ÷ variant epoch s), each pair timed back to back.

    Pairing cancels the slow drifts of a shared machine that a ratio of two separate medians keeps.
    """
    return statistics.median(r / v for r, v in zip(reference["epoch_s"], variant["epoch_s"]))


class EpochTimer(Callback):
    """Training-pass seconds and validation accuracy per epoch; stops the fit once ``target`` is reached."""

    def __init__(self, target: float):
        self.target, self.train_s, self.history = target, 0.0, []

    def before_epoch(self, learn: Learner) -> None:
        self._t0 = time.perf_counter()

    def after_epoch(self, learn: Learner) -> None:
        if learn.training:  # the epoch's metrics were read, so the device has finished
            self.train_s += time.perf_counter() - self._t0
            return
        acc = learn.epoch_metrics["accuracy"]
        self.history.append((learn.epoch + 1, self.train_s, acc))
        if acc >= self.target:
            raise CancelFitException()


def time_to_accuracy(dls, target: float, max_epochs: int, steps_per_call: int) -> dict:
    learn = make_learner(dls, partial(optax.sgd, momentum=0.9), 0.2, steps_per_call=steps_per_call)
    initial = learn.state
    learn.fit(1, callbacks=[SingleBatchCB()])  # compile the train call ...
    learn.evaluate()                           # ... and the eval call, then start again from scratch
    learn.state, learn.epochs_done = initial, 0
    timer = EpochTimer(target)
    learn.fit(max_epochs, callbacks=[timer, ParamSchedulerCB(
        "learning_rate", lambda n: optax.cosine_onecycle_schedule(n, 0.2))])
    return {"target": target, "history": timer.history, "train_seconds": timer.train_s,
            "reached": bool(timer.history) and timer.history[-1][2] >= target}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (median taken)")
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--steps-per-call", type=int, default=None, help="default: a whole epoch per call")
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--max-epochs", type=int, default=5)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    dls = fashion_mnist_loaders(args.bs, n_train=args.n_train)
    on_cpu = jax.devices()[0].platform == "cpu"
    # XLA's CPU backend runs conv weight-gradients far slower inside a loop, so on CPU the Learner's best
    # setting is one step per call; accelerators are dispatch-bound and want a whole epoch per call.
    k = args.steps_per_call or (10 if on_cpu else dls.train.n_batches)
    res = speed(dls, args.epochs, k)
    desc = machine()
    lines = [f"# Fashion-MNIST lesson-17 BN CNN speed", "", f"- machine: {desc}",
             f"- batch size {args.bs}, {dls.train.n_batches * args.bs} training images per epoch, "
             f"median of {args.epochs} epochs; ratios are medians of per-round ratios; scan = {k} steps per call", "",
             "| variant | samples/s | median epoch (s) | compile (s) | ratio |", "| --- | ---: | ---: | ---: | --- |"]
    ratios = {"plain": "1.00 (reference)",
              "stats": f"{paired_ratio(res['stats'], res['plain']):.3f} × plain",
              "scan": f"{paired_ratio(res['scan'], res['plain']):.3f} × plain",
              "adam_ours": f"{paired_ratio(res['adam_ours'], res['adam_optax']):.3f} × optax",
              "adam_optax": "1.00 (reference for adam_ours)"}
    for name, r in res.items():
        lines.append(f"| {name} | {r['samples_per_s']:,.0f} | {statistics.median(r['epoch_s']):.3f} | "
                     f"{r['compile_s']:.2f} | {ratios[name]} |")
    if not args.skip_accuracy:
        tta = time_to_accuracy(dls, args.target, args.max_epochs, 1 if on_cpu else k)
        lines += ["", f"Time to {tta['target']:.0%} test accuracy (SGD momentum 0.9, one-cycle lr 0.2, "
                      f"{args.max_epochs}-epoch schedule, training time only, compile excluded): "
                      + (f"**{tta['train_seconds']:.2f} s**" if tta["reached"] else "not reached"), "",
                  "| epoch | cumulative train s | test accuracy |", "| ---: | ---: | ---: |"]
        lines += [f"| {e} | {s:.2f} | {a:.4f} |" for e, s, a in tta["history"]]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = jax.devices()[0].platform
    (args.out / f"fashion_mnist_speed-{tag}.md").write_text(text)


if __name__ == "__main__":
    main()
