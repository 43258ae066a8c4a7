"""makemore part 3's BatchNorm MLP (rung 5 of the ladder): the full 200,000-step run in jaxlearn's compiled loop
beside the lecture's plain PyTorch loop, on the same machine, in the same run.

    python benchmarks/makemore_speed.py                  # 200,000 steps each
    python benchmarks/makemore_speed.py --steps 20000    # quicker
    python benchmarks/makemore_speed.py --jax-only       # JAX alone (e.g. on a GPU machine without torch)

The two alternate in blocks of ``--block`` steps (20,000), each block continuing its own run, so that both
see the same load when other jobs share the machine; steps/s are totals over the blocks. Both train the same
model the same way: n_embd 10, n_hidden 200, block 3, the lecture's hand-written BatchNorm
(no b1), batch 32 drawn with replacement, SGD lr 0.1 → 0.01 at step 100,000, the per-step loss kept.
* JAX: jaxlearn's Learner, the same compiled train call as every other model (``makemore.lecture_learner``) —
  ``--chunk`` steps per call (a ``lax.scan``), each epoch's minibatch indices drawn on the device, the losses
  kept on the device until the end of each block. The compile time is reported apart from the steps/s. Runs on
  whatever device jax picks (CPU here, the GPU on a GPU machine).
* PyTorch: the lecture's loop verbatim (``torch.randint`` minibatch, forward, ``loss.backward()``,
  ``p.data += -lr * p.grad``, ``lossi.append(loss.log10().item())``), always on the CPU. Torch's intra-op thread
  count is chosen by a short probe (2,000 steps or 5 s) of its default and of 1 thread, and the faster one
  runs the full loop, so the ratio is against torch at its best on this machine (both probes are printed).
  ``--torch-threads N`` fixes it instead.

No XLA flag is set for the process. The JAX side compiles with ``makemore.CPU_COMPILER_OPTIONS`` on the CPU,
as every ``lecture_learner`` does: no YNNPACK library calls, which cost more than they save on matrices this
small (59.5 → 51.7 CPU-µs per step, alternating blocks in one process). Other flags tried (no XNNPACK,
thunk runtime off, single-threaded Eigen, scan ``unroll``) were not faster beyond the noise of a shared
machine. What else helped: the whole chunk's minibatch indices and gathers hoisted out of the scan,
a one-hot cross-entropy (a gather's gradient is a scatter-add, a slow serial loop on XLA:CPU), the lecture's
BatchNorm with its closed-form backward (``makemore.lecture_batchnorm``, makemore part 4) and a one-select lr
schedule. A step is then ~50 CPU-microseconds, most of it the six small matrix products.

Also printed: CPU-microseconds per step of each (process CPU time, all threads) and their ratio, which moves
less than the wall-clock ratio when other jobs share the machine.

Prints steps/s of each, the JAX compile time, both final validation losses (running BatchNorm statistics, as
the lecture's split_loss('val')) and, last, exactly ``ratio <jax steps/s / torch steps/s>``. Appends (or updates the
row of the same machine, device and steps) a table in ``--results`` (benchmarks/results/makemore_speed.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxlearn import data
from jaxlearn import makemore as mm
from jaxlearn.data import ArrayDataset
from jaxlearn.nn import calibrate_batchnorm

RUNG = mm.LADDER[4]  # the one-hidden-layer BatchNorm MLP (rungs 4 and 5 share it)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class JaxRun:
    """jaxlearn's Learner on the makemore model (``makemore.lecture_learner``: the one core, ``chunk`` steps per
    compiled call), run block by block: each block is a fit that continues the last (same state, same compiled
    call), so that its blocks can alternate with torch's. The first call compiles; it runs before the timing, on
    a trial copy of the state (``Learner.trial``), and is reported apart."""

    def __init__(self, splits, chunk: int, seed: int):
        self.splits = splits
        self.learn = mm.lecture_learner(RUNG.model, data.names_loaders(32, batches_per_epoch=chunk), seed=seed,
                                        steps_per_call=chunk)
        with self.learn.trial(callbacks=[]):
            t0 = time.perf_counter()
            mm.train(self.learn, chunk)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            mm.train(self.learn, chunk)
            self.compile_s = max(first - (time.perf_counter() - t0), 0.0)
        self.run_s = self.cpu_s = 0.0
        self.steps = 0
        self.losses = []

    def block(self, steps: int):
        t0, c0 = time.perf_counter(), time.process_time()
        self.losses.append(mm.train(self.learn, steps))  # ends with the losses' one device→host copy
        self.run_s += time.perf_counter() - t0
        self.cpu_s += time.process_time() - c0
        self.steps += steps

    def result(self):
        valid = ArrayDataset(*self.splits["valid"], 8192)
        running = self.learn.evaluate(valid)["loss"]  # eval mode: the running BatchNorm statistics
        calibrated = calibrate_batchnorm(RUNG.model, mm.variables_of(self.learn), [self.splits["train"][0]],
                                         train=False)
        self.learn.replace_state(model_state={"batch_stats": calibrated["batch_stats"]})
        return {"steps_per_s": self.steps / self.run_s, "run_s": self.run_s, "compile_s": self.compile_s,
                "cpu_us_per_step": self.cpu_s / self.steps * 1e6,
                "val": running, "val_calibrated": self.learn.evaluate(valid)["loss"]}


class TorchRun:
    """The lecture's training loop, as written in its notebook (with the lecture's generator seed), run block
    by block: ``block(n)`` does the loop's next n iterations."""

    def __init__(self, splits, threads: int | None):
        import torch
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.Xtr, self.Ytr = (torch.from_numpy(a.astype(np.int64)) for a in splits["train"])
        self.Xva, self.Yva = (torch.from_numpy(a.astype(np.int64)) for a in splits["valid"])
        g = self.g = torch.Generator().manual_seed(2147483647)
        n_embd, n_hidden, block_size, vocab_size = 10, 200, 3, 27
        self.C = torch.randn((vocab_size, n_embd), generator=g)
        self.W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5 / 3) / ((n_embd * block_size) ** 0.5)
        self.W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
        self.b2 = torch.randn(vocab_size, generator=g) * 0
        self.bngain = torch.ones((1, n_hidden))
        self.bnbias = torch.zeros((1, n_hidden))
        self.bnmean_running = torch.zeros((1, n_hidden))
        self.bnstd_running = torch.ones((1, n_hidden))
        self.parameters = [self.C, self.W1, self.W2, self.b2, self.bngain, self.bnbias]
        for p in self.parameters:
            p.requires_grad = True
        self.lossi = []
        self.i = 0
        self.run_s = self.cpu_s = 0.0

    def block(self, steps: int, max_seconds: float = float("inf")):
        torch, F = self.torch, self.torch.nn.functional
        Xtr, Ytr, g, batch_size = self.Xtr, self.Ytr, self.g, 32
        C, W1, W2, b2, bngain, bnbias = self.parameters
        bnmean_running, bnstd_running = self.bnmean_running, self.bnstd_running
        parameters, lossi = self.parameters, self.lossi
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(self.i, self.i + steps):
            ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)
            Xb, Yb = Xtr[ix], Ytr[ix]
            emb = C[Xb]
            embcat = emb.view(emb.shape[0], -1)
            hpreact = embcat @ W1
            bnmeani = hpreact.mean(0, keepdim=True)
            bnstdi = hpreact.std(0, keepdim=True)
            hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
            with torch.no_grad():
                bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
                bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
            h = torch.tanh(hpreact)
            logits = h @ W2 + b2
            loss = F.cross_entropy(logits, Yb)
            for p in parameters:
                p.grad = None
            loss.backward()
            lr = 0.1 if i < 100000 else 0.01
            for p in parameters:
                p.data += -lr * p.grad
            lossi.append(loss.log10().item())
            if i % 100 == 99 and time.perf_counter() - t0 > max_seconds:
                break
        self.run_s += time.perf_counter() - t0
        self.cpu_s += time.process_time() - c0
        self.i = len(lossi)
        self.bnmean_running, self.bnstd_running = bnmean_running, bnstd_running

    def result(self):
        torch, F = self.torch, self.torch.nn.functional
        C, W1, W2, b2, bngain, bnbias = self.parameters
        with torch.no_grad():  # the lecture's split_loss('val'), running statistics
            embcat = C[self.Xva].view(self.Xva.shape[0], -1)
            hpreact = bngain * (embcat @ W1 - self.bnmean_running) / self.bnstd_running + bnbias
            val = F.cross_entropy(torch.tanh(hpreact) @ W2 + b2, self.Yva).item()
        return {"steps_per_s": self.i / self.run_s, "run_s": self.run_s, "val": val, "threads": self.threads,
                "steps": self.i, "cpu_us_per_step": self.cpu_s / self.i * 1e6, "torch": torch.__version__}


def torch_threads(splits, probe_steps: int) -> tuple[int, dict]:
    """Torch's faster intra-op thread count here: its default or 1 (each probed for probe_steps or 5 s)."""
    import torch
    probes = {}
    for t in dict.fromkeys([torch.get_num_threads(), 1]):
        run = TorchRun(splits, t)
        run.block(probe_steps, max_seconds=5.0)
        probes[t] = run.result()["steps_per_s"]
        print(f"torch probe: {t} thread(s): {probes[t]:.0f} steps/s ({run.i} steps)", flush=True)
    return max(probes, key=probes.get), probes


def update_results(path: Path, row: dict):
    header = ["date", "machine", "jax device", "steps", "jax steps/s", "jax compile s", "jax val",
              "torch steps/s (threads)", "torch val", "ratio", "CPU-time ratio", "load avg", "versions"]
    key_cols = ("machine", "jax device", "steps")
    intro = ("# makemore part 3 speed: jaxlearn's compiled loop vs the lecture's PyTorch loop\n\n"
             "`python benchmarks/makemore_speed.py` — the 1-hidden-layer BatchNorm MLP (ladder rung 5), "
             "batch 32, SGD 0.1 → 0.01 at step 100,000, JAX and torch alternating in blocks of 20,000 steps (same "
             "load for both). steps/s exclude JAX's compile time (its own column); "
             "torch runs on the CPU with the faster of its default thread count and 1 thread (short probe). "
             "val = validation loss with the running BatchNorm statistics. ratio = jax steps/s ÷ torch "
             "steps/s (wall clock); CPU-time ratio = the same by CPU seconds of the process (less sensitive to "
             "other jobs on a shared machine); load avg = the 1/5/15-minute load average at the end of the run. "
             "One row per (machine, jax device, steps); a rerun replaces its row.\n\n")
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("| ") and not line.startswith("| date") and not line.startswith("|---"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) == len(header):
                    rows.append(dict(zip(header, cells)))
    rows = [r for r in rows if any(r[k] != str(row[k]) for k in key_cols)] + [{k: str(row[k]) for k in header}]
    lines = [intro, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[k] for k in header) + " |" for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def print_jax(j: dict, steps: int) -> None:
    print(f"jax:   {j['steps_per_s']:10.0f} steps/s  ({j['run_s']:.2f} s for {steps} steps; compile "
          f"{j['compile_s']:.2f} s apart; {j['cpu_us_per_step']:.1f} CPU-us/step)  val {j['val']:.4f} "
          f"(calibrated {j['val_calibrated']:.4f})", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--chunk", type=int, default=10_000, help="training steps per compiled JAX call")
    p.add_argument("--block", type=int, default=20_000,
                   help="JAX and torch alternate in blocks of this many steps (same load for both)")
    p.add_argument("--torch-threads", type=int, default=None, help="fix torch's thread count (default: probe)")
    p.add_argument("--probe-steps", type=int, default=2000, help="steps of each thread probe (at most 5 s)")
    p.add_argument("--seed", type=int, default=mm.LECTURE_SEED)
    p.add_argument("--results", default="benchmarks/results/makemore_speed.md")
    p.add_argument("--no-results", action="store_true", help="do not write the results file")
    p.add_argument("--jax-only", action="store_true",
                   help="time only jaxlearn's loop (no torch needed; no ratio, no results row)")
    args = p.parse_args(argv)
    if not args.jax_only and importlib.util.find_spec("torch") is None:
        p.error("torch is not installed: pip install -e '.[bench]' (torch 2.13.0 CPU), or pass --jax-only")

    vocab, splits = data.names_splits(data.load_names())
    dev = jax.devices()[0]
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    device = f"{jax.default_backend()}: {dev.device_kind}"
    print(f"machine: {machine}; jax {jax.__version__} on {device}; python {platform.python_version()}")
    print(f"model: {RUNG.name}, {mm.count_params(mm.init(RUNG.model))} params; {args.steps} steps, batch 32")
    if args.block % args.chunk or args.steps % args.chunk:
        p.error(f"--steps and --block must be multiples of --chunk ({args.chunk})")

    if args.jax_only:
        jax_run = JaxRun(splits, args.chunk, args.seed)
        jax_run.block(args.steps)
        j = jax_run.result()
        print_jax(j, args.steps)
        return j["steps_per_s"]

    probes = {}
    threads = args.torch_threads
    if threads is None:
        threads, probes = torch_threads(splits, min(args.probe_steps, args.steps))
    jax_run, torch_run = JaxRun(splits, args.chunk, args.seed), TorchRun(splits, threads)
    done = 0
    while done < args.steps:  # alternate blocks, so that both see the same load on a shared machine
        n = min(args.block, args.steps - done)
        jax_run.block(n)
        torch_run.block(n)
        done += n
        print(f"{done:7d} steps: jax {jax_run.steps / jax_run.run_s:8.0f} steps/s, torch "
              f"{torch_run.i / torch_run.run_s:6.0f} steps/s", flush=True)
    j, t = jax_run.result(), torch_run.result()
    t["probes"] = probes
    print_jax(j, args.steps)
    print(f"torch: {t['steps_per_s']:10.0f} steps/s  ({t['run_s']:.2f} s for {args.steps} steps, "
          f"{t['threads']} thread(s), torch {t['torch']} CPU; {t['cpu_us_per_step']:.1f} CPU-us/step)  "
          f"val {t['val']:.4f}", flush=True)
    ratio = j["steps_per_s"] / t["steps_per_s"]
    cpu_ratio = t["cpu_us_per_step"] / j["cpu_us_per_step"]
    print(f"CPU-time ratio {cpu_ratio:.2f} (torch CPU-us/step / jax CPU-us/step: the same comparison by CPU "
          f"seconds, less sensitive to other load on a shared machine; both count all their threads)")

    if not args.no_results:
        probes = ", ".join(f"{k} thr {v:.0f}" for k, v in t["probes"].items())
        update_results(Path(args.results), {
            "date": datetime.date.today().isoformat(), "machine": machine, "jax device": device,
            "steps": args.steps, "jax steps/s": f"{j['steps_per_s']:.0f}", "jax compile s": f"{j['compile_s']:.1f}",
            "jax val": f"{j['val']:.4f}",
            "torch steps/s (threads)": f"{t['steps_per_s']:.0f} ({t['threads']})"
                                       + (f"; probes {probes}" if probes else ""),
            "torch val": f"{t['val']:.4f}", "ratio": f"{ratio:.1f}", "CPU-time ratio": f"{cpu_ratio:.1f}",
            "load avg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "versions": f"jax {jax.__version__}, torch {t['torch']}, python {platform.python_version()}"})
        print(f"results: {args.results}")
    print(f"ratio {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
