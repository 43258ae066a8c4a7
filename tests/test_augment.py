import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.callbacks import BatchTransformCB
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.vision import AugmentCB, compose, flip, noise, pad_crop, random_erase, tta, tta_accuracy

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(42), (16, 12, 10, 2))


ALL = {"flip": flip(), "pad_crop": pad_crop(4), "pad_crop_edge": pad_crop(3, mode="edge"),
       "erase": random_erase(p=1.0, max_num=2), "cutout": random_erase(fill=0.0), "noise": noise(0.1),
       "compose": compose(flip(), pad_crop(2), random_erase())}


@pytest.mark.parametrize("name", list(ALL))
def test_shape_dtype_and_determinism(images, name):
    tfm = ALL[name]
    out = jax.jit(tfm)(images, KEY)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_allclose(out, tfm(images, KEY), atol=1e-6)  # same key, same output (jit or not)
    assert not np.array_equal(out, tfm(images, jax.random.key(1)))


def test_flip_twice_is_identity_and_p1_mirrors(images):
    f = flip()
    np.testing.assert_array_equal(f(f(images, KEY), KEY), images)
    np.testing.assert_array_equal(flip(1.0)(images, KEY), images[:, :, ::-1, :])
    np.testing.assert_array_equal(flip(0.0)(images, KEY), images)
    out = np.asarray(f(images, KEY))
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(images))]
    same = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images))]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)  # per image


def test_crop_is_a_window_of_the_padded_image(images):
    pad = 4
    out = np.asarray(pad_crop(pad)(images, KEY))
    padded = np.pad(np.asarray(images), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = images.shape[1:3]
    offsets = []
    for o, p in zip(out, padded):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if np.array_equal(p[dy:dy + h, dx:dx + w], o)]
        assert hits, "every crop must equal a window of the zero-padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 3  # offsets drawn per image
    np.testing.assert_array_equal(pad_crop(0)(images, KEY), images)


def test_random_erase_replaces_one_rectangle(images):
    out = np.asarray(random_erase(p=1.0, fill=-1.0, scale=(0.1, 0.3))(images, KEY))
    for o in out:
        rows, cols = np.nonzero((o == -1.0).all(-1))
        assert rows.size > 0
        box = o[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == -1.0).all()  # a filled rectangle
        assert 0.1 * 120 * 0.5 <= rows.size <= 0.3 * 120 * 1.5
    np.testing.assert_array_equal(random_erase(p=0.0)(images, KEY), images)


def test_noise_std(images):
    big = jnp.zeros((64, 32, 32, 1))
    assert abs(float(noise(0.2)(big, KEY).std()) - 0.2) < 0.005


def test_augment_cb_only_on_training():
    cb = AugmentCB(flip(1.0))
    x = jnp.arange(24.0).reshape(1, 2, 4, 3)
    np.testing.assert_array_equal(cb.batch_transform(x, False, KEY), x)
    np.testing.assert_array_equal(cb.batch_transform(x, True, KEY), x[:, :, ::-1])
    with pytest.raises(ValueError):
        AugmentCB()


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3))(x)
        return nn.Dense(3)(nn.relu(x).reshape(x.shape[0], -1))


class FirstInput(Callback):
    def in_step(self, ctx):
        return ctx.x[0]

    def before_fit(self, learn):
        self.xs = []

    def after_batch(self, learn):
        if learn.training:
            self.xs.append(np.asarray(learn.step_outputs[self][0]))


@pytest.fixture(scope="module")
def learner():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64).astype(np.int32)
    x = (rng.random((64, 6, 6, 1)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    first = FirstInput()
    learn = Learner(Net(), dls, optimizer=optax.sgd, lr=0.05,
                    callbacks=[AugmentCB(flip(1.0)), BatchTransformCB(normalize(0.5, 0.25)), first])
    learn.fit(1)
    return learn, first


def test_augmentation_runs_inside_the_step_before_normalisation():
    img = np.arange(36, dtype=np.uint8).reshape(1, 6, 6, 1) * 7  # every example the same, asymmetric image
    x, y = np.repeat(img, 32, axis=0), np.arange(32, dtype=np.int32) % 3
    first = FirstInput()
    learn = Learner(Net(), DataLoaders.from_arrays((x, y), (x, y), 16), optimizer=optax.sgd, lr=0.05,
                    callbacks=[AugmentCB(flip(1.0)), BatchTransformCB(normalize(0.5, 0.25)), first])
    learn.fit(1, valid=False)
    expected = (img[0, :, ::-1].astype(np.float32) / 255 - 0.5) / 0.25  # flipped in [0, 1], then normalised
    for seen in first.xs:
        np.testing.assert_allclose(seen, expected, atol=1e-5)


def test_tta_averages_original_and_mirror(learner):
    learn, _ = learner
    x = np.asarray(learn.dls.valid.x[:20])
    p_orig = jax.nn.softmax(learn.predict(x, raw=True))
    p_flip = jax.nn.softmax(learn.predict(x[:, :, ::-1], raw=True))
    np.testing.assert_allclose(tta(learn, x, flip_view=False), p_orig, atol=1e-5)
    np.testing.assert_allclose(tta(learn, x), (p_orig + p_flip) / 2, atol=1e-5)
    probs = tta(learn, learn.dls.valid, n=3, batch_size=24)  # ragged last batch, random views
    assert probs.shape == (64, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs, tta(learn, learn.dls.valid, n=3, batch_size=24))  # seeded
    assert 0.0 <= tta_accuracy(learn, n=1) <= 1.0
