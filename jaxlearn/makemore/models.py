"""makemore part 3 (Karpathy, "Activations & Gradients, BatchNorm"): the lecture's models in flax.linen.

* :class:`MLP` — the lecture's one-hidden-layer MLP written with its own names (``C``, ``W1``, ``b1``, ``W2``,
  ``b2``, ``bngain``, ``bnbias``; running ``bnmean_running`` / ``bnstd_running``). Every tensor's init scale
  is a field, so each rung of the lecture's ladder is one :class:`MLP` (see :data:`LADDER`).
* :class:`Linear`, :class:`BatchNorm1d`, :class:`Tanh`, :class:`DeepMLP` — the "PyTorch-ified" modules and the
  6-layer net (5 x [Linear, BatchNorm1d, Tanh] + output), with the lecture's explicit inits.

Their BatchNorms are calibrated ("calibrate the batch norm at the end of training") by
:func:`jaxlearn.nn.calibrate_batchnorm` like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.nn.calibrate import sow_moments


VOCAB_SIZE = 27
"""The characters: '.' and a-z."""

BLOCK_SIZE = 3
"""The context: characters read to predict the next one."""

LECTURE_SEED = 2147483647  # the lecture's torch.Generator().manual_seed(2147483647)
"""The lecture's seed, ``torch.Generator().manual_seed(2147483647)``."""

EXPECTED_INIT_LOSS = -math.log(1 / VOCAB_SIZE)  # 3.2958: uniform prediction over 27 characters
"""``-log(1/27)`` = 3.2958: the loss of a uniform prediction, what a well-initialized model starts at."""

KAIMING_TANH = (5 / 3) / math.sqrt(BLOCK_SIZE * 10)  # (5/3)/sqrt(fan_in) for n_embd 10, block 3
"""Kaiming's scale for a tanh layer, ``(5/3) / sqrt(fan_in)``, for the MLP's ``W1`` (fan_in 30: n_embd 10 ×
block 3)."""


def _normal(scale: float):
    """``randn(shape) * scale`` — the lecture's explicit init (``scale`` 0 gives exact zeros)."""
    def init(key, shape, dtype=jnp.float32):
        if scale == 0:
            return jnp.zeros(shape, dtype)
        return jax.random.normal(key, shape, dtype) * jnp.asarray(scale, dtype)
    return init


def _const(value: float):
    return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


@jax.custom_vjp
def lecture_batchnorm(x: jax.Array, gain: jax.Array, bias: jax.Array):
    """The lecture's hand-written BatchNorm on a batch: ``gain * (x - mean) / std + bias`` with the batch mean
    and the *unbiased* batch std (``x.std(0)``, no epsilon). Returns ``(out, mean, std)``; mean and std are for
    the running statistics and carry no gradient (the lecture updates those under ``torch.no_grad``).

    The backward pass is the closed form of makemore part 4 ("backprop ninja"):
    ``dx = gain / std * (dout - mean(dout) - xhat * sum(dout * xhat) / (n - 1))``: two reductions instead of
    the handful autodiff makes, which matters when a step costs a few dozen microseconds.
    """
    return _lecture_bn_fwd(x, gain, bias)[0]


def _lecture_bn_fwd(x, gain, bias):
    mean = x.mean(0, keepdims=True)
    std = x.std(0, ddof=1, keepdims=True)
    xhat = (x - mean) / std
    return (gain * xhat + bias, mean, std), (xhat, std, gain)


def _lecture_bn_bwd(res, cts):
    xhat, std, gain = res
    dout = cts[0]  # mean and std carry no gradient
    n = xhat.shape[0]
    sum_d = dout.sum(0, keepdims=True)
    sum_dx = (dout * xhat).sum(0, keepdims=True)
    dx = (gain / std) * (dout - sum_d / n - xhat * sum_dx / (n - 1))
    return dx, sum_dx.reshape(gain.shape), sum_d.reshape(gain.shape)


lecture_batchnorm.defvjp(_lecture_bn_fwd, _lecture_bn_bwd)


class MLP(nn.Module):
    """The lecture's MLP: ``C[X] → ·W1 (+b1 | BatchNorm) → tanh → ·W2 + b2``.

    Each weight is ``randn(shape) * scale`` with the scale a field, exactly as the lecture's cells:
    the original init is all scales 1 (initial loss ≈ 27); the "fix" rungs change them (see :data:`LADDER`).
    ``batchnorm=True`` drops ``b1`` and inserts the lecture's hand-written BatchNorm: batch mean and *unbiased*
    std (``hpreact.std(0)``, no epsilon), ``bngain``/``bnbias`` of shape (1, n_hidden), running mean and std
    updated with momentum 0.001 (``0.999 * running + 0.001 * batch``) in collection ``batch_stats``.
    Parameter counts (n_embd 10, n_hidden 200, block 3): 11,897; with BatchNorm 12,097.

    Args:
        vocab_size: the characters (27).
        block_size: the context characters per example (3).
        n_embd: the embedding size of each character (``C``'s columns).
        n_hidden: the hidden layer's units.
        w1_scale: init scale of ``W1`` (1: the original; 0.2, or :data:`KAIMING_TANH`: the fixes).
        b1_scale: init scale of ``b1`` (without BatchNorm).
        w2_scale: init scale of ``W2`` (0.01: "fix softmax confidently wrong").
        b2_scale: init scale of ``b2`` (0: zeros).
        batchnorm: the lecture's BatchNorm after ``W1``, in place of ``b1``.
        bn_momentum: the running statistics' momentum (the lecture's 0.001).
    """
    vocab_size: int = VOCAB_SIZE
    block_size: int = BLOCK_SIZE
    n_embd: int = 10
    n_hidden: int = 200
    w1_scale: float = 1.0
    b1_scale: float = 1.0
    w2_scale: float = 1.0
    b2_scale: float = 1.0
    batchnorm: bool = False
    bn_momentum: float = 0.001

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        C = self.param("C", _normal(1.0), (self.vocab_size, self.n_embd))
        embcat = C[x].reshape(x.shape[0], -1)
        W1 = self.param("W1", _normal(self.w1_scale), (self.n_embd * self.block_size, self.n_hidden))
        hpreact = embcat @ W1
        if self.batchnorm:
            bngain = self.param("bngain", _const(1.0), (1, self.n_hidden))
            bnbias = self.param("bnbias", _const(0.0), (1, self.n_hidden))
            mean_r = self.variable("batch_stats", "bnmean_running", jnp.zeros, (1, self.n_hidden), jnp.float32)
            std_r = self.variable("batch_stats", "bnstd_running", jnp.ones, (1, self.n_hidden), jnp.float32)
            if train:
                hpreact, mean, std = lecture_batchnorm(hpreact, bngain, bnbias)
                if not self.is_initializing():
                    m_b, s_b = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(std)
                    mean_r.value = (1 - self.bn_momentum) * mean_r.value + self.bn_momentum * m_b
                    std_r.value = (1 - self.bn_momentum) * std_r.value + self.bn_momentum * s_b
            else:
                sow_moments(self, hpreact)  # when calibrating (jaxlearn.nn.calibrate)
                hpreact = bngain * (hpreact - mean_r.value) / std_r.value + bnbias
        else:
            hpreact = hpreact + self.param("b1", _normal(self.b1_scale), (self.n_hidden,))
        h = Tanh(name="Tanh_0")(hpreact)
        W2 = self.param("W2", _normal(self.w2_scale), (self.n_hidden, self.vocab_size))
        b2 = self.param("b2", _normal(self.b2_scale), (self.vocab_size,))
        return h @ W2 + b2


@dataclass(frozen=True)
class Rung:
    """One step of the lecture's ladder (:data:`LADDER`): its ``name``, the ``model``, whether to score it with
    ``calibrated`` BatchNorm statistics, and the lecture's numbers: final train and validation losses
    (``lecture_train``, ``lecture_val``) and, where it quotes one, the loss at step 0 (``lecture_init_loss``)."""
    name: str
    model: MLP
    lecture_train: float
    lecture_val: float
    calibrated: bool = False  # score with calibrate() statistics instead of the running ones (same training)
    lecture_init_loss: float | None = None


LADDER: tuple[Rung, ...] = (
    Rung("original init (loss 27 at step 0)", MLP(), 2.1245, 2.1682, lecture_init_loss=27.8817),
    Rung("fix softmax confidently wrong (W2*0.01, b2*0)", MLP(w2_scale=0.01, b2_scale=0.0), 2.07, 2.13,
         lecture_init_loss=3.3221),
    Rung("fix tanh saturation (W1*0.2, b1*0.01)",
         MLP(w1_scale=0.2, b1_scale=0.01, w2_scale=0.01, b2_scale=0.0), 2.0356, 2.1027),
    Rung("Kaiming init W1*(5/3)/sqrt(30)",
         MLP(w1_scale=KAIMING_TANH, b1_scale=0.01, w2_scale=0.01, b2_scale=0.0), 2.0377, 2.1070),
    Rung("BatchNorm (running statistics)",
         MLP(w1_scale=KAIMING_TANH, w2_scale=0.01, b2_scale=0.0, batchnorm=True), 2.0668, 2.1048),
    Rung("BatchNorm (calibrated statistics)",
         MLP(w1_scale=KAIMING_TANH, w2_scale=0.01, b2_scale=0.0, batchnorm=True), 2.0674, 2.1057,
         calibrated=True),
)
"""The lecture's ladder of fixes, rung by rung: the original init, the fixed output layer, the fixed tanh
saturation, Kaiming init, BatchNorm scored with its running and with calibrated statistics."""


class Linear(nn.Module):
    """The lecture's ``Linear(fan_in, fan_out, bias)``: weight (fan_in, fan_out) ``randn / sqrt(fan_in) * gain``
    (``fan_in_scaling=False``: ``randn * gain``), bias zeros (``bias=False``: none). ``fan_in`` is read from the
    input."""
    fan_out: int
    bias: bool = True
    gain: float = 1.0
    fan_in_scaling: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        scale = self.gain / math.sqrt(fan_in) if self.fan_in_scaling else self.gain
        out = x @ self.param("weight", _normal(scale), (fan_in, self.fan_out))
        if self.bias:
            out = out + self.param("bias", _const(0.0), (self.fan_out,))
        return out


class BatchNorm1d(nn.Module):
    """``BatchNorm1d(dim, eps=1e-5, momentum=0.1)`` with torch semantics.

    Training: normalize with the batch mean and the *biased* batch variance (``torch.nn.BatchNorm1d``), and
    update ``running_mean`` / ``running_var`` (collection ``batch_stats``) with ``momentum`` towards the batch
    mean and the *unbiased* batch variance. Eval: normalize with the running statistics.
    ``unbiased_norm=True`` normalizes with the unbiased variance instead, as the lecture's hand-written class
    does (``x.var(0)``); ``eps`` is added to the variance. ``gamma_scale`` is the init of ``gamma`` (the
    lecture's ``gamma *= 0.1`` on the last layer). Calibrated like every BatchNorm here, by
    :func:`jaxlearn.nn.calibrate.calibrate_batchnorm`.
    """
    eps: float = 1e-5
    momentum: float = 0.1
    gamma_scale: float = 1.0
    unbiased_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dim = x.shape[-1]
        gamma = self.param("gamma", _const(self.gamma_scale), (dim,))
        beta = self.param("beta", _const(0.0), (dim,))
        running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (dim,), jnp.float32)
        running_var = self.variable("batch_stats", "running_var", jnp.ones, (dim,), jnp.float32)
        if train:
            n = x.shape[0]
            mean = x.mean(0)
            var = x.var(0)  # biased, as torch normalizes
            var_unbiased = var * (n / max(n - 1, 1))
            if self.unbiased_norm:
                var = var_unbiased
            if not self.is_initializing():
                m_b, v_b = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var_unbiased)
                running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * m_b
                running_var.value = (1 - self.momentum) * running_var.value + self.momentum * v_b
        else:
            sow_moments(self, x)  # when calibrating (jaxlearn.nn.calibrate)
            mean, var = running_mean.value, running_var.value
        return gamma * (x - mean) / jnp.sqrt(var + self.eps) + beta


class Tanh(nn.Module):
    """``tanh`` whose output can be captured (``capture_intermediates``) and differentiated (``perturb 'out'``).

    ``linear=True`` makes it the identity: the lecture's "linear sandwich" (only Linear layers).
    """
    linear: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = x if self.linear else jnp.tanh(x)
        return self.perturb("out", out)


class DeepMLP(nn.Module):
    """The lecture's deep net: embedding, ``n_layers`` x [Linear, (BatchNorm1d), Tanh], output Linear (+ BatchNorm1d).

    Hidden Linear weights are ``randn/sqrt(fan_in) * gain`` (gain 5/3 for tanh); the last layer's weight is
    ``randn/sqrt(fan_in) * last_scale`` (0.1: "make the last layer less confident") or, with BatchNorm, the
    last BatchNorm's gamma is ``last_scale``. With BatchNorm the Linear layers have no bias.
    46,497 parameters without BatchNorm, 47,024 with (n_embd 10, n_hidden 100, 5 hidden layers).
    ``vocab_size``, ``block_size``, ``n_embd`` and ``n_hidden`` as :class:`MLP`'s; ``batchnorm`` adds the
    BatchNorm1d layers; ``fan_in_scaling=False`` drops the ``1/sqrt(fan_in)`` (:class:`Linear`);
    ``linear_only`` makes every Tanh the identity (the lecture's "linear sandwich").
    """
    vocab_size: int = VOCAB_SIZE
    block_size: int = BLOCK_SIZE
    n_embd: int = 10
    n_hidden: int = 100
    n_layers: int = 5
    batchnorm: bool = False
    gain: float = 5 / 3
    last_scale: float = 0.1
    fan_in_scaling: bool = True
    linear_only: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        C = self.param("C", _normal(1.0), (self.vocab_size, self.n_embd))
        h = C[x].reshape(x.shape[0], -1)
        bn = self.batchnorm
        for i in range(self.n_layers):
            h = Linear(self.n_hidden, bias=not bn, gain=self.gain, fan_in_scaling=self.fan_in_scaling,
                       name=f"Linear_{i}")(h)
            if bn:
                h = BatchNorm1d(name=f"BatchNorm1d_{i}")(h, train)
            h = Tanh(linear=self.linear_only, name=f"Tanh_{i}")(h)
        if bn:
            logits = Linear(self.vocab_size, bias=False, gain=1.0, fan_in_scaling=self.fan_in_scaling,
                            name=f"Linear_{self.n_layers}")(h)
            return BatchNorm1d(gamma_scale=self.last_scale, name=f"BatchNorm1d_{self.n_layers}")(
                logits, train)
        return Linear(self.vocab_size, bias=True, gain=self.last_scale, fan_in_scaling=self.fan_in_scaling,
                      name=f"Linear_{self.n_layers}")(h)

