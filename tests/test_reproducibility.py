"""One seed drives init, shuffling, dropout and augmentation; the same seed gives bitwise-identical runs."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

RUN = textwrap.dedent("""
    import hashlib
    from functools import partial
    import flax.linen as nn, jax, numpy as np, optax
    from jaxlearn.callbacks import MetricsCB
    from jaxlearn.data import DataLoaders, shuffle_key
    from jaxlearn.callback import Callback
    from jaxlearn.learner import Learner

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Dense(16)(x.reshape(x.shape[0], -1))
            x = nn.relu(nn.BatchNorm(momentum=0.9)(x, use_running_average=not train))
            x = nn.Dropout(0.3, deterministic=not train)(x)
            return nn.Dense(3)(x)

    class Augment(Callback):
        def batch_transform(self, x, training, key):
            return x * jax.random.uniform(key, (x.shape[0], 1, 1, 1), minval=0.8, maxval=1.2) if training else x

    class Losses(Callback):
        def before_fit(self, learn): self.losses = []
        def after_batch(self, learn):
            if learn.training: self.losses.append(learn.losses)

    def run(seed):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, 96).astype(np.int32)
        x = (rng.random((96, 4, 4, 1)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)
        losses, metrics = Losses(), MetricsCB(show=False)
        learn = Learner(Net(), DataLoaders.from_arrays((x, y), (x[:48], y[:48]), 16),
                        optimizer=partial(optax.sgd, momentum=0.9), lr=0.1, seed=seed,
                        callbacks=[Augment(), losses, metrics])
        learn.fit(3)
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(jax.device_get((learn.state.params, learn.state.model_state,
                                                    learn.state.opt_state))):
            h.update(np.asarray(leaf).tobytes())
        h.update(np.concatenate(jax.device_get(losses.losses)).tobytes())
        h.update(repr([{k: v for k, v in r.items() if not k.endswith("seconds")} for r in metrics.history]).encode())
        return h.hexdigest()
""")


def run_here(seed):
    """The same run in this process, on the CPU (as the subprocesses) even where an accelerator is default."""
    namespace = {}
    exec(compile(RUN, "reproducibility_run", "exec"), namespace)
    with jax.default_device(jax.devices("cpu")[0]):
        return namespace["run"](seed)


def test_same_seed_is_bitwise_identical_across_processes():
    """Two fresh interpreters and this one: the same seed gives the same bytes (params, norm stats,
    optimizer state, every batch loss, the metrics table)."""
    cmd = [sys.executable, "-c", RUN + "\nprint(run(7))"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    here = run_here(7)
    other = run_here(8)
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1] == here
    assert other != here, "a different seed must give a different run"


def test_the_learner_seed_drives_every_random_stream(tiny_data):
    import flax.linen as nn
    from jaxlearn.data import DataLoaders, shuffle_key
    from jaxlearn.learner import Learner

    class TinyNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)  # the datasets' own seed stays 0
    a, b, a2 = (Learner(TinyNet(), dls, seed=s) for s in (1, 2, 1))
    leaves = lambda l: [np.asarray(v) for v in jax.tree.leaves(l.state.params)]
    # init
    assert not np.array_equal(leaves(a)[-1], leaves(b)[-1])
    assert all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(a2)))
    # shuffling: each epoch's order follows the Learner's seed (and the epoch), not only the dataset's
    order = lambda l, e: np.asarray(dls.train.epoch_indices(e, key=shuffle_key(l.seed, dls.train.seed))[0])
    assert not np.array_equal(order(a, 0), order(b, 0))
    assert np.array_equal(order(a, 0), order(a2, 0)) and not np.array_equal(order(a, 0), order(a, 1))
    # dropout and augmentation keys come from state.rng (folded with the step): seeded the same way
    kd = lambda l: np.asarray(jax.random.key_data(l.state.rng))
    assert not np.array_equal(kd(a), kd(b)) and np.array_equal(kd(a), kd(a2))
