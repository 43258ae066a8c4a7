"""Training speed of lesson 17's BatchNorm CNN on Fashion-MNIST, variants side by side in one run.

    python benchmarks/fashion_mnist_speed.py [--epochs 3] [--bs 256] [--n-train N] [--steps-per-call K]

Variants (same model, data and batch size; epochs interleaved round-robin so drift hits all alike):
  plain       SGD momentum, no statistics
  schedule    plain + a one-cycle ParamSchedulerCB (evaluated inside the step)   (goal: ≤ 3% slower)
  stats       plain + ActivationStats(GeneralRelu) reduced inside the step   (goal: ≤ 15% slower)
  scan        plain with K steps per compiled call (lax.scan; default a whole epoch, 10 on CPU)
  adam_ours   jaxlearn.optim.adam                                             (goal: ≥ 0.95× optax)
  adam_optax  optax.adam with the same settings
Samples/s is the median over epochs; a ratio is the median of per-round ratios (the two epochs of a round
run back to back); compile time (first call minus one steady step) is reported apart.
Then time-to-accuracy: one-cycle training, evaluated after each epoch, until 90% test accuracy.
Side by side with PyTorch (when torch is installed, the ``bench`` extra): the main job's exact configuration
(``experiments/fashion_mnist.py``: schedule, metrics and progress callbacks on) against lesson 17's model and
loop in PyTorch, epochs alternating; the last line printed is ``ratio_vs_torch X`` (torch s ÷ jaxlearn s).
``--torch-only`` runs just that.
Results go to ``benchmarks/results/fashion_mnist_speed-<device>.md`` (``fashion_mnist_vs_torch-<device>.md``
with ``--torch-only``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import jax
import optax

from jaxlearn import optim
from jaxlearn.callback import Callback, CancelFitException
from jaxlearn.callbacks import ActivationStats, BatchTransformCB, ParamSchedulerCB, SingleBatchCB
from jaxlearn.data import fashion_mnist_loaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal
from jaxlearn.optim import one_cycle
from jaxlearn.vision import get_model


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
        "schedule": make_learner(dls, sgd, 0.1, [ParamSchedulerCB("learning_rate", lambda n: one_cycle(0.1, n))]),
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
    with learn.trial(callbacks=learn.callbacks):  # compile the train and eval calls, then start from scratch
        learn.fit(1, callbacks=[SingleBatchCB()])
        learn.evaluate()
    timer = EpochTimer(target)
    learn.fit(max_epochs, callbacks=[timer, ParamSchedulerCB(
        "learning_rate", lambda n: optax.cosine_onecycle_schedule(n, 0.2))])
    return {"target": target, "history": timer.history, "train_seconds": timer.train_s,
            "reached": bool(timer.history) and timer.history[-1][2] >= target}


# ------------------------------------------------------------------------------ side by side with PyTorch

def torch_threads(x, y, bs: int, probe_batches: int = 30) -> tuple[int, dict]:
    """Torch's faster intra-op thread count here, its default or 1, by a short probe of each (on a loaded
    2-core machine the default's threads can fight over the cores)."""
    import torch
    times = {}
    for threads in dict.fromkeys([torch.get_num_threads(), 1]):
        torch.set_num_threads(threads)
        run = torch_lesson17(bs, 0.1, probe_batches * 2)
        n = probe_batches * bs
        run(x[:bs * 5], y[:bs * 5], True)  # warm up
        t0 = time.perf_counter()
        run(x[:n], y[:n], True)
        times[threads] = time.perf_counter() - t0
    best = min(times, key=times.get)
    torch.set_num_threads(best)
    return best, times


def torch_lesson17(bs: int, lr: float, total_steps: int, seed: int = 0):
    """Lesson 17's BatchNorm CNN and training loop in PyTorch (miniai's ``get_model(act_gr, norm=BatchNorm2d)``
    with leaky Kaiming init, SGD momentum 0.9, ``OneCycleLR``), on the CPU (threads: :func:`torch_threads`).

    Returns ``run_epoch(x_uint8, y, train) -> (mean loss, accuracy)``: data preloaded as tensors, each batch
    normalized as lesson 17's ``BatchTransformCB`` does, loss and accuracy summed on the fly and read once per
    epoch, a tqdm bar per epoch — the main job's configuration.
    """
    import torch
    from torch import nn
    from tqdm.auto import tqdm
    torch.manual_seed(seed)

    class GeneralRelu(nn.Module):
        def forward(self, x):
            return torch.nn.functional.leaky_relu(x, 0.1) - 0.4

    def conv(ni, nf, act=True, norm=True):
        layers = [nn.Conv2d(ni, nf, 3, 2, padding=1, bias=not norm)]
        layers += [nn.BatchNorm2d(nf)] if norm else []
        layers += [GeneralRelu()] if act else []
        return nn.Sequential(*layers)

    nfs = (1, 8, 16, 32, 64)
    model = nn.Sequential(*[conv(a, b) for a, b in zip(nfs, nfs[1:])], conv(64, 10, act=False, norm=False),
                          nn.Flatten())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def run_epoch(x, y, train: bool) -> tuple[float, float]:
        model.train(train)
        n = len(x)
        order = torch.randperm(n) if train else torch.arange(n)
        loss_sum, correct = torch.zeros(()), torch.zeros(())
        with torch.set_grad_enabled(train):
            for i in tqdm(range(0, n, bs), leave=False, desc="torch"):
                idx = order[i:i + bs]
                xb = (x[idx].float() / 255 - 0.28) / 0.35
                logits = model(xb)
                loss = loss_fn(logits, y[idx])
                if train:
                    opt.zero_grad()
                    (loss / len(idx)).backward()
                    opt.step()
                    sched.step()
                loss_sum += loss.detach()
                correct += (logits.argmax(1) == y[idx]).sum()
        return float(loss_sum) / n, float(correct) / n
    return run_epoch


def versus_torch(dls, epochs: int, lr: float) -> dict:
    """The main job (``experiments/fashion_mnist.py``'s Learner: MetricsCB, ProgressCB, BatchTransformCB and the
    one-cycle ParamSchedulerCB) and the lesson's PyTorch loop, epochs alternating: after each jaxlearn epoch
    (train + validation pass) a torch epoch runs, so both see the same machine load. The first epoch of each
    (compilation, warm-up) is excluded from the ratio."""
    import numpy as np
    import torch
    from jaxlearn.callbacks import MetricsCB, ProgressCB
    from jaxlearn.optim import momentum
    x, y = (torch.from_numpy(np.asarray(a)) for a in (dls.train.x, dls.train.y))
    xt, yt = (torch.from_numpy(np.asarray(a)) for a in (dls.valid.x, dls.valid.y))
    x, xt = x.permute(0, 3, 1, 2).contiguous(), xt.permute(0, 3, 1, 2).contiguous()
    y, yt = y.long(), yt.long()
    threads, probes = torch_threads(x, y, dls.train.batch_size)
    print(f"torch threads: {threads} (probe seconds {probes})", flush=True)
    run_torch = torch_lesson17(dls.train.batch_size, lr, epochs * dls.train.n_batches)
    rows = []

    class Alternate(Callback):
        order = 100  # after MetricsCB has read the epoch

        def before_epoch(self, learn: Learner) -> None:
            if learn.training:
                self.t0 = time.perf_counter()

        def after_epoch(self, learn: Learner) -> None:
            if learn.training:
                return
            jax_s = time.perf_counter() - self.t0
            t0 = time.perf_counter()
            train = run_torch(x, y, True)
            valid = run_torch(xt, yt, False)
            torch_s = time.perf_counter() - t0
            rows.append({"epoch": learn.epoch, "jax_s": jax_s, "torch_s": torch_s,
                         "jax_valid_accuracy": learn.epoch_metrics["accuracy"], "torch_valid_accuracy": valid[1],
                         "torch_train_loss": train[0]})
            print(f"epoch {learn.epoch}: jaxlearn {jax_s:.2f} s, torch {torch_s:.2f} s "
                  f"(valid accuracy {learn.epoch_metrics['accuracy']:.4f} vs {valid[1]:.4f})", flush=True)

    learn = make_learner(dls, partial(momentum, beta=0.9, lerp=False), lr,
                         [MetricsCB(show=False), ParamSchedulerCB("learning_rate", lambda n: one_cycle(lr, n))])
    learn.fit(epochs, callbacks=[ProgressCB(), Alternate()])
    timed = rows[1:] or rows
    ratio = statistics.median(r["torch_s"] / r["jax_s"] for r in timed)
    return {"rows": rows, "ratio": ratio, "torch": torch.__version__, "torch_threads": threads,
            "load_avg": os.getloadavg()}


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
    p.add_argument("--torch-only", action="store_true", help="only the side-by-side run against PyTorch")
    p.add_argument("--torch-epochs", type=int, default=5, help="epochs of the side-by-side run (first excluded)")
    p.add_argument("--lr", type=float, default=0.2, help="peak lr of the side-by-side run (the main job's)")
    args = p.parse_args()

    dls = fashion_mnist_loaders(args.bs, n_train=args.n_train)
    on_cpu = jax.devices()[0].platform == "cpu"
    # The Learner's CPU default is one step per call (XLA's own conv gradients are far slower inside a loop;
    # jaxlearn.nn.conv's are not); accelerators are dispatch-bound and want a whole epoch per call.
    k = args.steps_per_call or (10 if on_cpu else dls.train.n_batches)
    desc = machine()
    has_torch = importlib.util.find_spec("torch") is not None
    if args.torch_only and not has_torch:
        p.error("torch is not installed: pip install -e '.[bench]' (torch 2.13.0 CPU)")
    vs = versus_torch(dls, args.torch_epochs, args.lr) if has_torch else None
    res = {} if args.torch_only else speed(dls, args.epochs, k)
    lines = ["# Fashion-MNIST lesson-17 BN CNN speed", "", f"- machine: {desc}",
             f"- batch size {args.bs}, {dls.train.n_batches * args.bs} training images per epoch, "
             f"median of {args.epochs} epochs; ratios are medians of per-round ratios; scan = {k} steps per call", "",
             "| variant | samples/s | median epoch (s) | compile (s) | ratio |", "| --- | ---: | ---: | ---: | --- |"]
    ratios = {} if args.torch_only else {"plain": "1.00 (reference)",
              "schedule": f"{paired_ratio(res['schedule'], res['plain']):.3f} × plain",
              "stats": f"{paired_ratio(res['stats'], res['plain']):.3f} × plain",
              "scan": f"{paired_ratio(res['scan'], res['plain']):.3f} × plain",
              "adam_ours": f"{paired_ratio(res['adam_ours'], res['adam_optax']):.3f} × optax",
              "adam_optax": "1.00 (reference for adam_ours)"}
    if args.torch_only:
        lines = lines[:2]
    for name, r in res.items():
        lines.append(f"| {name} | {r['samples_per_s']:,.0f} | {statistics.median(r['epoch_s']):.3f} | "
                     f"{r['compile_s']:.2f} | {ratios[name]} |")
    if vs is not None:
        lines += ["", f"## Side by side with the lesson's PyTorch loop (torch {vs['torch']}, {vs['torch_threads']} "
                      f"threads, CPU)", "",
                  f"The main job's configuration (`experiments/fashion_mnist.py`: SGD momentum 0.9, one-cycle lr "
                  f"{args.lr}, MetricsCB, ProgressCB, input normalization; bs {args.bs}) against the same model and "
                  f"loop in PyTorch; epochs alternate (train + validation pass each); epoch 0 (compilation) "
                  f"excluded. **ratio_vs_torch {vs['ratio']:.2f}** (median of torch s ÷ jaxlearn s). Load average "
                  f"at the end: {' '.join(f'{v:.1f}' for v in vs['load_avg'])}.", "",
                  "| epoch | jaxlearn s | torch s | torch ÷ jaxlearn | valid acc jaxlearn | valid acc torch |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['epoch']} | {r['jax_s']:.2f} | {r['torch_s']:.2f} | {r['torch_s'] / r['jax_s']:.2f} | "
                  f"{r['jax_valid_accuracy']:.4f} | {r['torch_valid_accuracy']:.4f} |" for r in vs["rows"]]
    if not args.skip_accuracy and not args.torch_only:
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
    name = "fashion_mnist_vs_torch" if args.torch_only else "fashion_mnist_speed"
    (args.out / f"{name}-{tag}.md").write_text(text)
    if vs is not None:
        print(f"ratio_vs_torch {vs['ratio']:.2f}")


if __name__ == "__main__":
    main()
