"""fast.ai 2018 lesson 7's CIFAR-10 ladder (jaxlearn/vision/cifar.py, cifar_models.py, experiments/cifar10.py):
parameter counts worked out by hand from the lesson's layer sizes, output shapes, BatchNorm from scratch, the
loader on tfds' mock data, the offline error, a short fit whose loss falls, and the experiment's command line."""

import importlib.util
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.data import DataFileError, DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.optim import momentum
from jaxlearn.vision import cifar
from jaxlearn.vision.cifar_models import BnLayer, ConvBnNet, ConvBnNet2, ConvNet, ConvNet2, Resnet2, SimpleNet

ROOT = Path(__file__).resolve().parents[1]


def conv(ni, nf, k, bias=True):
    return ni * nf * k * k + (nf if bias else 0)


def linear(ni, nf):
    return ni * nf + nf


def bn_layer(ni, nf, k=3):
    return conv(ni, nf, k, bias=False) + 2 * nf  # the lesson's m and a, one each per channel


CONV_BN = conv(3, 10, 5) + bn_layer(10, 20) + bn_layer(20, 40) + bn_layer(40, 80) + bn_layer(80, 160) + linear(160, 10)
EXPECTED_PARAMS = {
    SimpleNet: linear(3072, 40) + linear(40, 10),                                             # ">120k"
    ConvNet: conv(3, 20, 3) + conv(20, 40, 3) + conv(40, 80, 3) + linear(80, 10),             # "~30k"
    ConvNet2: conv(3, 20, 3) + conv(20, 40, 3) + conv(40, 80, 3) + linear(80, 10),
    ConvBnNet: CONV_BN,
    ConvBnNet2: CONV_BN + sum(bn_layer(n, n) for n in (20, 40, 80, 160)),
    Resnet2: (bn_layer(3, 16, k=7) + sum(bn_layer(a, b) for a, b in [(16, 32), (32, 64), (64, 128), (128, 256)])
              + 2 * sum(bn_layer(n, n) for n in (32, 64, 128, 256)) + linear(256, 10)),
}


@pytest.mark.parametrize("model_cls", list(EXPECTED_PARAMS), ids=lambda m: m.__name__)
def test_parameter_counts_and_shapes(model_cls):
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model_cls().init(jax.random.key(1), x, False))
    assert sum(p.size for p in jax.tree.leaves(variables["params"])) == EXPECTED_PARAMS[model_cls]
    out = jax.eval_shape(lambda v: model_cls().apply(v, x, True, mutable=["batch_stats"],
                                                      rngs={"dropout": jax.random.key(2)}), variables)[0]
    assert out.shape == (2, 10)


def test_lesson_parameter_counts_as_quoted():
    assert EXPECTED_PARAMS[SimpleNet] == 123_330 and EXPECTED_PARAMS[ConvNet] == 37_490
    assert EXPECTED_PARAMS[ConvBnNet] == 155_970 and EXPECTED_PARAMS[Resnet2] == 1_966_234


def test_bn_layer_normalizes_with_the_batch_and_evaluates_with_the_last_batch():
    layer = BnLayer(4, stride=1)
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 3)) + 2.0
    variables = layer.init(jax.random.key(1), x, False)
    y, updates = layer.apply(variables, x, True, mutable=["batch_stats"])
    # m = 1, a = 0: every channel mean 0, (unbiased) std 1, over N, H, W
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std((0, 1, 2), ddof=1), 1.0, atol=1e-3)
    # evaluation uses the statistics of the last training batch (the lesson's self.means / self.stds)
    y_eval = layer.apply({**variables, **updates}, x, False)
    np.testing.assert_allclose(y_eval, y, atol=1e-5)
    assert not np.allclose(layer.apply(variables, x, False), y)  # before training: mean 0, std 1


def test_loader_on_tfds_mock_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv(cifar.CIFAR10_ENV, raising=False)
    monkeypatch.setattr(cifar, "require_download_host", lambda *a: None)  # the mock serves the data
    with tfds.testing.mock_data(num_examples=12):
        dls = cifar.cifar10_loaders(batch_size=4, n_train=10, data_dir=tmp_path)
    assert isinstance(dls, DataLoaders)
    assert dls.train.x.shape == (10, 32, 32, 3) and dls.valid.x.shape == (12, 32, 32, 3)
    assert dls.train.x.dtype == np.uint8 and dls.train.y.dtype == dls.valid.y.dtype == np.int32
    assert 0 <= int(dls.train.y.min()) and int(dls.train.y.max()) < 10
    assert dls.info["classes"] == cifar.CIFAR10_CLASSES and len(cifar.CIFAR10_CLASSES) == 10
    assert dls.train.transform(dls.train.x[:1]).dtype == np.float32


def test_offline_error_names_the_variable(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv(cifar.CIFAR10_ENV, raising=False)
    for var in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: connection refused at once
    with pytest.raises(DataFileError, match=r"cannot download CIFAR-10.*set JAXLEARN_CIFAR10_DIR to a folder "
                                            r"holding cifar-10-binary.tar.gz"):
        cifar.cifar10(data_dir=tmp_path)


def test_missing_manual_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar.CIFAR10_ENV, str(tmp_path))
    with pytest.raises(DataFileError, match=rf"missing data file {tmp_path}/cifar-10-binary.tar.gz.*"
                                            rf"JAXLEARN_CIFAR10_DIR"):
        cifar.cifar10()


def test_callbacks_normalize_with_the_lesson_stats():
    augment, norm = cifar.cifar10_callbacks()
    x = jnp.broadcast_to(jnp.asarray(cifar.CIFAR10_MEAN), (2, 32, 32, 3))
    np.testing.assert_allclose(norm.tfm(x), 0.0, atol=1e-6)
    assert augment.batch_transform(x, True, jax.random.key(0)).shape == x.shape
    assert len(cifar.cifar10_callbacks(augment=False)) == 1


def test_small_bn_net_learns_a_learnable_set():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 192).astype(np.int32)
    x = (rng.random((192, 8, 8, 3)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)  # the class is the brightness
    dls = DataLoaders.from_arrays((x[:128], y[:128]), (x[128:], y[128:]), 32, seed=0, drop_last=True)
    learn = Learner(ConvBnNet(layers=(4, 8, 16), n_classes=3), dls, lr=0.1, seed=0, table=False,
                    optimizer=partial(momentum, beta=0.9, lerp=False),
                    callbacks=cifar.cifar10_callbacks())
    before = learn.evaluate()["loss"]
    learn.fit(4)
    after = learn.evaluate()
    assert after["loss"] < 0.5 * before and after["accuracy"] > 0.8


def test_experiment_help_parses():
    spec = importlib.util.spec_from_file_location("experiment_cifar10", ROOT / "experiments" / "cifar10.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0
    args = module.parse_args(["--quick"])
    assert args.epochs == 1 and args.n_train == 1024 and args.rungs == ["simple", "convbn"]
    assert module.parse_args([]).rungs == list(module.RUNGS) and set(module.RUNGS) == {
        "simple", "convnet", "convnet2", "convbn", "deepbn", "resnet2"}
