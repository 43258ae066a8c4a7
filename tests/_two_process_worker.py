"""One small data-parallel training run, for tests/test_sharding.py and tests/test_multiprocess.py.

The device count must be fixed before jax is imported, so the tests run this file in subprocesses:

    # 4 CPU devices in one process; results of the run on a 'data' mesh and of the one-device run
    python tests/_two_process_worker.py --out r.npz --devices 4 --runs mesh,single
    # one of two processes (2 CPU devices each, 4 in all), CPU collectives over gloo on 127.0.0.1
    python tests/_two_process_worker.py --out r0.npz --devices 2 --runs mesh \\
        --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0
    # the same, checkpointing with CheckpointCB(DIR, resume=True), then resuming a new Learner from DIR
    python tests/_two_process_worker.py ... --checkpoint DIR
    # a process whose partners never start ends after --init-timeout seconds, naming the coordinator
    python tests/_two_process_worker.py ... --init-timeout 3

It can also be imported (``train``) to compute the one-device reference in the test process itself.
"""

from __future__ import annotations

import argparse
import os
import sys

BATCH, STEPS_PER_EPOCH, EPOCHS = 32, 10, 2  # 20 steps


def data():
    """Synthetic 8x8 'images' of 4 classes (label readable from the pixels), train 320 / valid 100."""
    import numpy as np
    rng = np.random.default_rng(0)
    n = BATCH * STEPS_PER_EPOCH + 100
    y = rng.integers(0, 4, n).astype(np.int32)
    x = (rng.random((n, 8, 8, 1)) * 100 + y[:, None, None, None] * 40).astype(np.uint8)
    k = BATCH * STEPS_PER_EPOCH
    return (x[:k], y[:k]), (x[k:], y[k:])


def train(mesh, checkpoint: str | None = None) -> dict:
    """20 SGD-momentum steps of conv → BatchNorm → relu → dropout → dense, with a random augmentation.

    With ``checkpoint``: the fit runs with ``CheckpointCB(checkpoint, resume=True)`` (a new directory: nothing to
    resume, every process must agree on that), then a new Learner resumes from it (``resumed_*``)."""
    import time
    from functools import partial

    import flax.linen as nn
    import jax
    import numpy as np
    import optax

    from jaxlearn.callbacks import CheckpointCB, MetricsCB
    from jaxlearn.data import DataLoaders
    from jaxlearn.callback import Callback
    from jaxlearn.learner import Learner
    from jaxlearn.nn import BatchNorm

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Conv(8, (3, 3), strides=2)(x)
            x = nn.relu(BatchNorm()(x, use_running_average=not train))
            x = nn.Dropout(0.1, deterministic=not train)(x)
            return nn.Dense(4)(x.reshape(x.shape[0], -1))

    class Record(Callback):
        shardings: list = []  # of the training inputs, as compiled (jax.debug.inspect_array_sharding)

        def before_fit(self, learn):
            self.losses = []

        def after_batch(self, learn):
            if learn.training:
                self.losses.append(learn.losses)

        def batch_transform(self, x, training, key):  # augmentation from the step's key
            if training:
                jax.debug.inspect_array_sharding(x, callback=self.shardings.append)
            return x + 0.02 * jax.random.normal(key, x.shape) if training else x

    train_set, valid_set = data()
    dls = DataLoaders.from_arrays(train_set, valid_set, BATCH, valid_batch_size=50)  # 50: not split evenly
    record, metrics = Record(), MetricsCB(show=False)

    def learner(callbacks):
        return Learner(Net(), dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.1, seed=0, mesh=mesh,
                       callbacks=callbacks)
    learn = learner([record, metrics])
    if checkpoint and jax.process_index() == 1:
        time.sleep(2)  # a slower host: it comes to the fit when process 0 has already created the directory
    learn.fit(EPOCHS, callbacks=[CheckpointCB(checkpoint, resume=True)] if checkpoint else [])
    state = learn.state
    resumed = {}
    if checkpoint:  # every epoch is in the checkpoint: the resumed fit restores it and trains nothing
        again = learner([])
        again.fit(EPOCHS, callbacks=[CheckpointCB(checkpoint, resume=True)])
        pairs = zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(jax.device_get(again.state.params)))
        resumed = {"resumed_step": np.int64(int(jax.device_get(again.state.step))),
                   "resumed_equal": np.bool_(all(np.array_equal(a, b) for a, b in pairs))}
    params = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
              for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
    stats = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
             for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.model_state))}
    batch_spec = record.shardings[0].spec if hasattr(record.shardings[0], "spec") else ()
    return {"losses": np.concatenate([np.asarray(jax.device_get(l)) for l in record.losses]),
            "valid_loss": np.float64(metrics.history[-1]["valid_loss"]),
            "step": np.int64(int(jax.device_get(state.step))),
            "n_devices": np.int64(learn.n_devices),
            "params_replicated": np.bool_(all(v.sharding.is_fully_replicated for v in jax.tree.leaves(state.params))),
            "batch_sharded": np.bool_(len(batch_spec) > 0 and batch_spec[0] == "data"),
            "batch_sharding": np.str_(str(record.shardings[0])), **resumed,
            **{f"param:{k}": v for k, v in params.items()}, **{f"stat:{k}": v for k, v in stats.items()}}


def indivisible_error() -> str:
    """The error for a batch size that does not split over the devices (raised before any compiling)."""
    from jaxlearn.data import DataLoaders
    from jaxlearn.learner import Learner
    import flax.linen as nn

    train_set, valid_set = data()
    try:
        Learner(nn.Dense(4), DataLoaders.from_arrays(train_set, valid_set, 30))
    except ValueError as e:
        return str(e)
    return "no error"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=1, help="CPU devices in this process")
    p.add_argument("--runs", default="mesh",
                   help="comma-separated: mesh (all devices), single (mesh=False), indivisible (batch 30)")
    p.add_argument("--coordinator", help="host:port of process 0, for a multi-process run")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--checkpoint", help="checkpoint the mesh run into this new directory, then resume from it")
    p.add_argument("--init-timeout", type=float, default=120,
                   help="seconds for all processes to meet (jaxlearn.sharding.initialize_distributed)")
    args = p.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np
    if args.coordinator:
        from jaxlearn.sharding import initialize_distributed
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        initialize_distributed(args.coordinator, args.num_processes, args.process_id, timeout_s=args.init_timeout)
    out = {"process_count": np.int64(jax.process_count()), "device_count": np.int64(jax.device_count())}
    for run in args.runs.split(","):
        if run == "indivisible":
            out["indivisible"] = np.str_(indivisible_error())
            continue
        result = train(mesh=None if run == "mesh" else False, checkpoint=args.checkpoint if run == "mesh" else None)
        out.update({f"{run}|{k}": v for k, v in result.items()})
    np.savez(args.out, **out)
    if args.coordinator:
        jax.distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
