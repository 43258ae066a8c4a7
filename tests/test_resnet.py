import json
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.callbacks import SmoothedLossCB
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu
from jaxlearn.optim import adamw
from jaxlearn.vision import ResBlock, ResNet, avg_pool_2x2_ceil, fmnist_resnet

ROOT = Path(__file__).resolve().parents[1]


def init(model, x):
    return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)


def shapes(model, x):
    return jax.eval_shape(lambda: init(model, x))


def test_avg_pool_matches_torch_ceil_mode():
    x = np.arange(2 * 7 * 5 * 3, dtype=np.float32).reshape(2, 7, 5, 3)
    out = np.asarray(avg_pool_2x2_ceil(jnp.asarray(x)))
    assert out.shape == (2, 4, 3, 3)
    for i in range(4):
        for j in range(3):  # torch AvgPool2d(2, ceil_mode=True): mean over the window's pixels that exist
            np.testing.assert_allclose(out[:, i, j], x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((1, 2)), rtol=1e-6)


@pytest.mark.parametrize("ni,nf,stride,hw,out_hw,idconv", [
    (16, 16, 1, 7, 7, False),   # identity shortcut
    (8, 16, 1, 7, 7, True),     # 1x1 conv shortcut
    (16, 32, 2, 7, 4, True),    # pooled + 1x1 conv shortcut, 7 -> 4 like torch's ceil mode
    (16, 16, 2, 28, 14, False)  # pooled shortcut only
])
def test_resblock_shapes_and_shortcut(ni, nf, stride, hw, out_hw, idconv):
    block = ResBlock(nf, stride=stride, act=GeneralRelu, norm=BatchNorm)
    x = jnp.ones((2, hw, hw, ni))
    v = shapes(block, x)
    out = jax.eval_shape(lambda v: block.apply(v, x, train=False), v)
    assert out.shape == (2, out_hw, out_hw, nf)
    assert ("idconv" in v["params"]) == idconv
    assert v["params"]["conv1"]["Conv_0"]["kernel"].shape == (3, 3, ni, nf)
    assert "bias" not in v["params"]["conv1"]["Conv_0"]  # no conv bias before a BatchNorm
    assert "batch_stats" in v


def test_fmnist_resnet_shapes_and_size():
    model = fmnist_resnet()
    x = jnp.ones((3, 28, 28, 1))
    v = shapes(model, x)
    p = v["params"]
    assert p["ResBlock_0"]["conv1"]["Conv_0"]["kernel"].shape == (5, 5, 1, 16)
    assert [p[f"ResBlock_{i}"]["conv2"]["Conv_0"]["kernel"].shape[-1] for i in range(5)] == [16, 32, 64, 128, 256]
    n_params = sum(a.size for a in jax.tree.leaves(p))
    assert 1.2e6 < n_params < 1.3e6  # course22's model: ~1.2M
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), v)
    assert out.shape == (3, 10)
    # per-block resolution 28 -> 28 -> 14 -> 7 -> 4 -> 2
    _, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                                    mutable=["intermediates"]), v)
    hws = [state["intermediates"][f"ResBlock_{i}"]["__call__"][0].shape[1] for i in range(5)]
    assert hws == [28, 14, 7, 4, 2]


def test_head_with_dropout_ps():
    model = fmnist_resnet(nfs=(16,), head_features=(32,), ps=[0.25, 0.5])
    x = jnp.ones((4, 6, 6, 1))
    v = jax.jit(lambda x: init(model, x))(x)
    assert v["params"]["Dense_0"]["kernel"].shape == (16, 32)
    train = jax.jit(lambda v, k: model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"])[0])
    a, b = train(v, jax.random.key(2)), train(v, jax.random.key(3))
    assert a.shape == (4, 10) and not np.allclose(a, b)  # dropout active in training
    ev = jax.jit(lambda v: model.apply(v, x, train=False))
    np.testing.assert_array_equal(ev(v), ev(v))
    with pytest.raises(ValueError):
        shapes(fmnist_resnet(nfs=(8,), head_features=(32,), ps=[0.5]), x)


def test_tiny_resnet_training_lowers_the_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 128).astype(np.int32)
    x = (rng.random((128, 8, 8, 1)) * 80).astype(np.uint8)
    x[np.arange(128), 1 + 3 * y, 1:7, 0] = 255  # the class is a bright bar's position
    dls = DataLoaders.from_arrays((x, y), (x[:64], y[:64]), 32)
    model = ResNet(nfs=(8, 16), act=partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm, n_classes=3,
                   first_kernel_size=3)
    losses = SmoothedLossCB()
    learn = Learner(model, dls, optimizer=adamw, lr=1e-2, callbacks=[losses])
    learn.fit(5, valid=False)
    raw = losses.raw
    assert raw[-4:].mean() < 0.6 * raw[0]


def test_experiment_script_quick_run(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import resnet
    finally:
        sys.path.pop(0)
    r = resnet.main(["--n-train", "64", "--n-test", "64", "--bs", "32", "--epochs", "1", "--nfs", "4",
                     "--augment", "--tta", "--no-progress", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(r["test_accuracy"])
    for k in ("tta_accuracy", "test_accuracy_ci95", "epochs", "seconds", "device", "history"):
        assert k in saved
    assert (tmp_path / "loss.png").exists()
