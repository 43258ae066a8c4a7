"""The GPU path, checked without a GPU: the compiled train calls of the main job (with ActivationStats and a
schedule), makemore and the stateful LSTM lower for CUDA, so CPU-only code (a CPU custom call, the CPU's im2col
convolution) cannot slip into what a GPU would run unnoticed."""

import re
from functools import partial

import numpy as np
import optax
import pytest

from jaxlearn import makemore as mm, prepare, text
from jaxlearn.callbacks import ActivationStats, BatchTransformCB, ParamSchedulerCB
from jaxlearn.data import DataLoaders, identity, normalize, shuffle_key
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal
from jaxlearn.optim import one_cycle
from jaxlearn.vision import get_model


def lowered_for_cuda(learn: Learner) -> str:
    """StableHLO of the Learner's train call (two steps) lowered for CUDA: traced here, compiled nowhere."""
    learn._compile(learn.dls.train.n_batches)
    ds = learn.dls.train
    learn.reset_carry(ds.batch_size)  # as every epoch starts: a stateful model's carry sized for the batch
    idx, weight = ds.epoch_indices(np.int32(0), shuffle_key(learn.seed, ds.seed))
    acc, pos = prepare.epoch_start(learn._sums)
    traced = learn._train_call.trace(learn.state, acc, (ds.x, ds.y), idx, weight, pos, learn.state.step,
                                     n_steps=2)
    return traced.lower(lowering_platforms=("cuda",)).as_text()


def assert_gpu_clean(hlo: str) -> None:
    targets = set(re.findall(r'custom_call @([\w.]+)|call_target_name = "([^"]+)"', hlo))
    names = {a or b for a, b in targets}
    cpu_only = {n for n in names if re.search(r"cpu|lapack|ducc|xla_python_cpu", n, re.I)}
    assert not cpu_only, f"CPU-only custom calls in the GPU lowering: {sorted(cpu_only)}"


def test_the_main_job_with_activation_stats_and_a_schedule_lowers_for_cuda(tiny_data):
    x, y = tiny_data
    x = np.repeat(np.repeat(x, 7, 1), 7, 2)  # 28x28 like Fashion-MNIST
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
    learn = Learner(model, dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.2, table=False,
                    callbacks=[BatchTransformCB(normalize(0.28, 0.35)), ActivationStats(GeneralRelu),
                               ParamSchedulerCB("learning_rate", lambda n: one_cycle(0.2, n))])
    hlo = lowered_for_cuda(learn)
    assert_gpu_clean(hlo)
    # the five conv layers, forward and backward (two of each layer's three convolutions in the backward):
    # platform_dependent picked the GPU's convolutions, not the CPU's im2col slices
    assert hlo.count("stablehlo.convolution") >= 10


def test_makemore_lowers_for_cuda():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 27, (256, 3)).astype(np.int32), rng.integers(0, 27, 256).astype(np.int32)
    dls = DataLoaders.from_arrays((x, y), (x, y), 32, transform=identity)
    model = mm.LADDER[4].model  # the BatchNorm rung
    learn = mm.lecture_learner(model, dls, steps_per_call=2)
    hlo = lowered_for_cuda(learn)
    assert_gpu_clean(hlo)
    assert "stablehlo.dot_general" in hlo


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_stateful_rnn_lowers_for_cuda(cell):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, (64, 8)).astype(np.int32)
    dls = DataLoaders.from_arrays((x, np.roll(x, -1, 1)), (x, np.roll(x, -1, 1)), 16, transform=identity)
    learn = Learner(text.StatefulCharRnn(20, cell, 6, 12), dls, optimizer=optax.adam, lr=1e-3, table=False)
    hlo = lowered_for_cuda(learn)
    assert_gpu_clean(hlo)
    assert "stablehlo.while" in hlo or "stablehlo.dot_general" in hlo
