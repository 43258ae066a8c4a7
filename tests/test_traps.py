"""What used to go silently wrong for a newcomer: a ready optax chain whose lr cannot be set, a model whose train
flag has another name (its dropout silently off), ``predict`` returning logits instead of a label."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _tiny import tiny_arrays
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.losses import mse
from jaxlearn.optim.hyperparams import MissingHyperparameter
from jaxlearn.predictions import Prediction


@pytest.fixture(scope="module")
def dls():
    x, y = tiny_arrays(64)
    d = DataLoaders.from_arrays((x[:48], y[:48]), (x[48:], y[48:]), 16)
    d.info["classes"] = ("low", "mid", "high")
    return d


class Flat(nn.Module):
    features: int = 3

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(x.reshape(len(x), -1))


# ------------------------------------------------------------------ a ready optax chain

def test_a_ready_chain_trains_but_refuses_an_lr_with_the_fix_in_the_message(dls):
    chain = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    learn = Learner(Flat(), dls, optimizer=chain)
    learn.fit(1)  # trains as it is
    for call in (lambda: learn.fit(1, lr=0.01), lambda: learn.lr_find(plot=False),
                 lambda: learn.fit_one_cycle(1, 0.01)):
        with pytest.raises(MissingHyperparameter, match=r"ready GradientTransformation.*lambda learning_rate: "
                                                        r"optax.chain"):
            call()
    with pytest.raises(MissingHyperparameter, match="lr=0.01 cannot|no injected hyperparameter"):
        Learner(Flat(), dls, optimizer=chain, lr=0.01)


def test_the_chain_written_as_a_factory_gets_its_lr_injected(dls):
    factory = lambda learning_rate: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate))  # noqa
    learn = Learner(Flat(), dls, optimizer=factory, lr=0.02)
    assert learn.get_hyper("learning_rate") == pytest.approx(0.02)
    learn.fit(1, lr=0.005)
    assert learn.get_hyper("learning_rate") == pytest.approx(0.005)


def test_a_ready_transformation_with_an_injected_lr_takes_the_learners_lr(dls):
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))
    learn = Learner(Flat(), dls, optimizer=tx, lr=0.03)
    assert learn.get_hyper("learning_rate") == pytest.approx(0.03)


# ------------------------------------------------------------------ the train flag under other names

class KerasStyle(nn.Module):
    """Dropout p=1 while training: the training loss is then the loss of all-zero features."""
    @nn.compact
    def __call__(self, x, training: bool = False):
        h = nn.Dropout(1.0, deterministic=not training)(x.reshape(len(x), -1).astype(jnp.float32))
        return nn.Dense(3)(h)


class FlaxStyle(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = nn.Dropout(1.0, deterministic=deterministic)(x.reshape(len(x), -1).astype(jnp.float32))
        return nn.Dense(3)(h)


@pytest.mark.parametrize("model", [KerasStyle(), FlaxStyle()], ids=["training", "deterministic"])
def test_training_and_deterministic_flags_are_passed(dls, model):
    learn = Learner(model, dls, lr=0.1)
    assert learn.state.train_flag == ("training" if isinstance(model, KerasStyle) else "deterministic")
    seen = {}  # what the model computes when told it trains, and when not
    variables = learn.state.variables()
    x = jnp.ones((2, 4, 4, 1))
    rngs = {"dropout": jax.random.key(0)}
    seen["train"] = learn.state.apply(variables, x, True, rngs=rngs)
    seen["eval"] = learn.state.apply(variables, x, False)
    bias = variables["params"]["Dense_0"]["bias"]
    np.testing.assert_allclose(seen["train"], np.broadcast_to(bias, (2, 3)), atol=1e-6)  # all dropped
    assert not np.allclose(seen["eval"], seen["train"])


class UnknownFlag(nn.Module):
    @nn.compact
    def __call__(self, x, is_train: bool = False):
        return nn.Dense(3)(x.reshape(len(x), -1))


def test_a_boolean_flag_of_another_name_is_warned_about(dls):
    with pytest.warns(UserWarning, match=r"UnknownFlag.__call__ takes 'is_train' but none of train, training"):
        Learner(UnknownFlag(), dls)


# ------------------------------------------------------------------ predict decodes

def test_predict_returns_label_index_and_probabilities(dls):
    learn = Learner(Flat(), dls, lr=0.1)
    learn.fit(2)
    x = np.asarray(dls.valid.x)
    logits = learn.predict(x, raw=True)
    batch = learn.predict(x)
    assert isinstance(batch, Prediction)
    np.testing.assert_array_equal(batch.index, logits.argmax(-1))
    np.testing.assert_allclose(batch.probs, jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
    assert list(batch.label) == [("low", "mid", "high")[i] for i in logits.argmax(-1)]
    label, index, probs = learn.predict(x[0])  # one example: fastai's triple
    assert label == ("low", "mid", "high")[index] and isinstance(index, int) and probs.shape == (3,)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_a_regression_predicts_its_outputs(dls):
    x, _ = tiny_arrays(32)
    y = x.reshape(32, -1).mean(1, keepdims=True).astype(np.float32) / 255
    reg = DataLoaders.from_arrays((x[:24], y[:24]), (x[24:], y[24:]), 8)
    learn = Learner(Flat(1), reg, loss_fn=mse, lr=0.01)
    out = learn.predict(x[:5])
    assert isinstance(out, np.ndarray) and out.shape == (5, 1)


# ------------------------------------------------------------------ datasets entering later, metrics' shapes

def test_labels_are_checked_wherever_a_dataset_enters(dls):
    from jaxlearn.data import ArrayDataset
    learn = Learner(Flat(), dls, lr=0.1, table=False)
    x = np.asarray(dls.valid.x)
    bad = ArrayDataset(x, np.full(len(x), 3, np.int32), 16)  # class 3 of 3: one-hot to zeros, loss 0.0
    with pytest.raises(ValueError, match=r"evaluated labels span 3..3 but the model has 3 outputs"):
        learn.evaluate(bad)
    learn.dls.valid = bad  # replaced after construction
    with pytest.raises(ValueError, match=r"valid labels span 3..3"):
        learn.fit(1)


def test_a_metric_must_return_one_value_per_example(dls):
    def probabilities(preds, y):  # forgot the argmax: (B, C)
        return jax.nn.softmax(preds)

    with pytest.raises(ValueError, match=r"metric 'probabilities' must return one value per example, shape "
                                         r"\(2,\).*got shape \(2, 3\)"):
        Learner(Flat(), dls, metrics=[probabilities])
