"""Data augmentation inside the compiled step, and test-time augmentation (fast.ai 2018 lesson 2, course22
lesson 14, DLVU "Bag of tricks").

Every augmentation is a pure function ``tfm(x, key) -> x`` on a batch of NHWC images (float, any range),
drawing its own random numbers *per image* from ``key``; nothing leaves the device and nothing is
recompiled from batch to batch. :class:`AugmentCB` chains them as a Learner ``batch_transform`` that acts
on training batches only, with the per-step key the train step derives from the train state's seed and
step, so a run is reproducible from its seed::

    learn = Learner(model, dls, callbacks=[AugmentCB(flip(), pad_crop(4)),
                                           BatchTransformCB(normalize(0.28, 0.35))])

``AugmentCB`` has ``order = -1``: it runs before the normalisation ``BatchTransformCB`` (order 0), on
pixels in [0, 1], so ``pad_crop``'s zero padding is the black Fashion-MNIST background.

:func:`tta` averages the model's class probabilities over the original images, their mirror images and
``n`` randomly augmented copies (fast.ai's ``learn.TTA()``), in one jitted function per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.data import ArrayDataset
from jaxlearn.callback import Callback, LearnerLike
from jaxlearn.step import EVAL_SEED

__all__ = ["Augmentation", "flip", "pad_crop", "random_erase", "noise", "compose", "AugmentCB", "tta",
           "tta_accuracy"]

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]  # (x NHWC, key) -> x
"""An augmentation: ``tfm(x, key) -> x`` on a batch of NHWC images, drawing per-image random numbers from
``key``."""


def _check_images(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects a batch of NHWC images, got shape {x.shape}")


def _check_p(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p must be in [0, 1], got {p}")


def flip(p: float = 0.5) -> Augmentation:
    """Random horizontal flip: each image is mirrored left-right with probability ``p``."""
    _check_p(p, "flip")

    def tfm(x: jax.Array, key: jax.Array) -> jax.Array:
        _check_images(x, "flip")
        do = jax.random.bernoulli(key, p, (x.shape[0], 1, 1, 1))
        return jnp.where(do, x[:, :, ::-1, :], x)
    return tfm


def pad_crop(pad: int = 4, mode: str = "constant", value: float = 0.0) -> Augmentation:
    """Pad each side by ``pad`` pixels, then crop a random window of the original size per image
    (torchvision's ``RandomCrop(28, padding=4)``): a random shift by up to ``pad`` pixels each way.

    ``mode`` is ``jnp.pad``'s (``'constant'`` with ``value``, ``'edge'``, ``'reflect'``).
    """
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad_crop: pad must be a non-negative integer, got {pad!r}")

    def tfm(x: jax.Array, key: jax.Array) -> jax.Array:
        _check_images(x, "pad_crop")
        if pad == 0:
            return x
        n, h, w, c = x.shape
        widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
        padded = jnp.pad(x, widths, mode=mode, constant_values=value) if mode == "constant" \
            else jnp.pad(x, widths, mode=mode)
        ky, kx = jax.random.split(key)
        dy = jax.random.randint(ky, (n,), 0, 2 * pad + 1)
        dx = jax.random.randint(kx, (n,), 0, 2 * pad + 1)
        crop = lambda img, oy, ox: jax.lax.dynamic_slice(img, (oy, ox, 0), (h, w, c))
        return jax.vmap(crop)(padded, dy, dx)
    return tfm


def random_erase(p: float = 0.5, scale: tuple[float, float] = (0.02, 0.25), ratio: tuple[float, float] = (0.3, 3.3),
                 max_num: int = 1, fill: str | float = "noise") -> Augmentation:
    """Random erasing (Zhong et al. 2017; course22's ``RandErase``): with probability ``p`` per image and
    rectangle, up to ``max_num`` rectangles covering a ``scale`` fraction of the image with aspect ratio in
    ``ratio`` (log-uniform) are replaced by ``fill``: ``'noise'`` (normal noise with the batch's mean and
    std, as in the course), ``'mean'`` (the batch mean) or a constant (0.0 is cutout)."""
    _check_p(p, "random_erase")
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1] or max_num < 1:
        raise ValueError(f"random_erase: need 0 < scale[0] <= scale[1] <= 1, 0 < ratio[0] <= ratio[1] and "
                         f"max_num >= 1, got scale={scale}, ratio={ratio}, max_num={max_num}")
    if isinstance(fill, str) and fill not in ("noise", "mean"):
        raise ValueError(f"random_erase: fill must be 'noise', 'mean' or a number, got {fill!r}")

    def tfm(x: jax.Array, key: jax.Array) -> jax.Array:
        _check_images(x, "random_erase")
        n, h, w, _ = x.shape
        mean, std = x.mean(), x.std()
        ys, xs = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
        for k in jax.random.split(key, max_num):
            kp, ka, kr, ky, kx, kn = jax.random.split(k, 6)
            area = jax.random.uniform(ka, (n,), minval=scale[0], maxval=scale[1]) * h * w
            aspect = jnp.exp(jax.random.uniform(kr, (n,), minval=np.log(ratio[0]), maxval=np.log(ratio[1])))
            eh = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, h).astype(jnp.int32)
            ew = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, w).astype(jnp.int32)
            y0 = (jax.random.uniform(ky, (n,)) * (h - eh + 1)).astype(jnp.int32)
            x0 = (jax.random.uniform(kx, (n,)) * (w - ew + 1)).astype(jnp.int32)
            inside = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
                      & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
            mask = (inside & jax.random.bernoulli(kp, p, (n, 1, 1)))[..., None]
            if fill == "noise":
                value = mean + std * jax.random.normal(kn, x.shape, x.dtype)
            elif fill == "mean":
                value = jnp.broadcast_to(mean, x.shape)
            else:
                value = jnp.full(x.shape, fill, x.dtype)
            x = jnp.where(mask, value.astype(x.dtype), x)
        return x
    return tfm


def noise(std: float = 0.05) -> Augmentation:
    """Add Gaussian noise of standard deviation ``std`` to every pixel."""
    if std < 0:
        raise ValueError(f"noise: std must be non-negative, got {std}")

    def tfm(x: jax.Array, key: jax.Array) -> jax.Array:
        return x + std * jax.random.normal(key, x.shape, x.dtype)
    return tfm


def compose(*tfms: Augmentation) -> Augmentation:
    """Apply ``tfms`` in order, each with its own key (``fold_in(key, i)``)."""
    def tfm(x: jax.Array, key: jax.Array) -> jax.Array:
        for i, t in enumerate(tfms):
            x = t(x, jax.random.fold_in(key, i))
        return x
    return tfm


class AugmentCB(Callback):
    """Random augmentations of the training batches, inside the compiled step: ``AugmentCB(flip(), pad_crop(4))``.

    The key is the per-step key the Learner passes to ``batch_transform`` (derived from the train state's
    seed and step), so runs are reproducible. ``tfms`` are applied in order (:func:`compose`) to the training
    batches (unless ``on_train=False``); validation / prediction inputs pass unchanged unless ``on_val=True``.
    """
    order = -1  # before BatchTransformCB(normalize(...)) (order 0): augment pixels in [0, 1]

    def __init__(self, *tfms: Augmentation, on_train: bool = True, on_val: bool = False):
        if not tfms:
            raise ValueError("AugmentCB needs at least one augmentation")
        self.tfms, self.on_train, self.on_val = tfms, on_train, on_val
        self.tfm = compose(*tfms)

    @property
    def signature(self) -> tuple:
        """The augmentations and where they apply: equal ones share a compilation."""
        return (type(self), self.tfms, self.on_train, self.on_val)

    def batch_transform(self, x: jax.Array, training: bool, key: jax.Array) -> jax.Array:
        """The images ``x`` augmented with ``key`` in a training batch (``training``), else unchanged unless
        ``on_val``."""
        return self.tfm(x, key) if (self.on_train if training else self.on_val) else x


# ------------------------------------------------------------------------------------ test-time augmentation

def _tta_augmentations(learn: LearnerLike) -> Augmentation:
    augs = [cb.tfm for cb in learn.callbacks if isinstance(cb, AugmentCB)]
    return compose(*augs) if augs else compose(flip(), pad_crop(4))


def tta(learn: LearnerLike, data: ArrayDataset | jax.Array | np.ndarray, n: int = 0, flip_view: bool = True,
        augment: Augmentation | None = None, batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """Test-time augmentation: class probabilities averaged over the versions of each image.

    Versions: the original, its mirror image (``flip_view``) and ``n`` random augmentations (``augment``;
    default: the transforms of the learner's :class:`AugmentCB`, else ``flip`` + ``pad_crop(4)``). Each is
    then passed through the learner's evaluation transforms (normalisation) and ``learn.state.apply_fn``
    in eval mode (running BatchNorm statistics, no dropout). ``data`` is an :class:`ArrayDataset` (its
    ``transform`` is applied, e.g. uint8 → [0, 1]) or raw inputs ``x`` (the validation set's transform is
    applied). The batches of ``batch_size`` images draw their augmentations from ``seed``. Returns
    (N, n_classes) probabilities.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"tta: n must be a non-negative integer, got {n!r}")
    if isinstance(data, ArrayDataset):
        x, to_input = data.x, data.transform
    else:
        x, to_input = data, learn.dls.valid.transform
    augment = augment if augment is not None else _tta_augmentations(learn)
    transform = learn.batch_transform()
    n_views = 1 + int(flip_view) + n

    @jax.jit
    def batch_probs(state, xb, key):
        xb = to_input(xb)
        views = [xb] + ([xb[:, :, ::-1, :]] if flip_view else [])
        views += [augment(xb, jax.random.fold_in(key, i)) for i in range(n)]
        total = 0.0
        for v in views:
            logits = state.apply(state.variables(), transform(v, False, jax.random.key(EVAL_SEED)), False)
            total = total + jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return total / n_views

    key = jax.random.key(seed)
    outs = [batch_probs(learn.state, jnp.asarray(x[i:i + batch_size]), jax.random.fold_in(key, i))
            for i in range(0, len(x), batch_size)]
    return np.concatenate(jax.device_get(outs))


def tta_accuracy(learn: LearnerLike, ds: ArrayDataset | None = None, n: int = 0, **kwargs) -> float:
    """Accuracy of :func:`tta`'s averaged predictions of ``learn`` on ``ds`` (default: the validation set), with
    ``n`` augmented copies; ``kwargs`` go to :func:`tta`."""
    ds = ds if ds is not None else learn.dls.valid
    probs = tta(learn, ds, n=n, **kwargs)
    return float((probs.argmax(-1) == np.asarray(ds.y)).mean())
