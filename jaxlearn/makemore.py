"""makemore part 3 (Karpathy, "Activations & Gradients, BatchNorm") in flax.linen, trained by jaxlearn's core.

* :class:`MLP` — the lecture's one-hidden-layer MLP written with its own names (``C``, ``W1``, ``b1``, ``W2``,
  ``b2``, ``bngain``, ``bnbias``; running ``bnmean_running`` / ``bnstd_running``). Every tensor's init scale
  is a field, so each rung of the lecture's ladder is one :class:`MLP` (see :data:`LADDER`).
* :class:`Linear`, :class:`BatchNorm1d`, :class:`Tanh`, :class:`DeepMLP` — the "PyTorch-ified" modules and the
  6-layer net (5 x [Linear, BatchNorm1d, Tanh] + output), with the lecture's explicit inits.
* :func:`lecture_learner` / :func:`train` — the lecture's loop (SGD, batch 32, lr 0.1 → 0.01 at step 100,000,
  minibatches drawn with replacement) on the :class:`~jaxlearn.learner.Learner`, 10,000 steps per compiled call.
* :func:`split_loss` (eval mode: BatchNorm uses its running statistics), :func:`calibrate` (the lecture's
  "calibrate the batch norm at the end of training": statistics of the whole training set), :func:`sample`.
* Diagnostics reduced on the device (nothing larger than a histogram leaves it): :func:`diagnose` gives, for
  one batch, each tanh layer's activation statistics (mean, std, % saturated, histogram), the histogram of the
  gradient of each tanh layer's output (``self.perturb``), each weight's gradient histogram and grad:data
  ratio. The same numbers come out of the training step itself through :class:`DiagnosticsCB`, beside
  :class:`UpdateRatioCB`'s update:data ratio ``log10(std(lr·grad) / std(param))`` of every parameter at every
  step (:func:`run_diagnostics`).
* ``plot_*`` helpers draw the lecture's figures from those reductions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import optim, stats
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Callback, Learner, StepRecorder
from jaxlearn.monitor import SmoothedLossCB
from jaxlearn.step import StepContext, cross_entropy

VOCAB_SIZE = 27
BLOCK_SIZE = 3
LECTURE_SEED = 2147483647  # the lecture's torch.Generator().manual_seed(2147483647)
EXPECTED_INIT_LOSS = -math.log(1 / VOCAB_SIZE)  # 3.2958: uniform prediction over 27 characters
KAIMING_TANH = (5 / 3) / math.sqrt(BLOCK_SIZE * 10)  # (5/3)/sqrt(fan_in) for n_embd 10, block 3
HIST_BINS = 100  # torch.histogram's default, as in the lecture's plots


def _normal(scale: float):
    """``randn(shape) * scale`` — the lecture's explicit init (``scale`` 0 gives exact zeros)."""
    def init(key, shape, dtype=jnp.float32):
        if scale == 0:
            return jnp.zeros(shape, dtype)
        return jax.random.normal(key, shape, dtype) * jnp.asarray(scale, dtype)
    return init


def _const(value: float):
    return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


# ------------------------------------------------------------------------------- one-hidden-layer MLP

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
    def __call__(self, x: jax.Array, train: bool = False, calibrate: bool = False) -> jax.Array:
        C = self.param("C", _normal(1.0), (self.vocab_size, self.n_embd))
        embcat = C[x].reshape(x.shape[0], -1)
        W1 = self.param("W1", _normal(self.w1_scale), (self.n_embd * self.block_size, self.n_hidden))
        hpreact = embcat @ W1
        if self.batchnorm:
            bngain = self.param("bngain", _const(1.0), (1, self.n_hidden))
            bnbias = self.param("bnbias", _const(0.0), (1, self.n_hidden))
            mean_r = self.variable("batch_stats", "bnmean_running", jnp.zeros, (1, self.n_hidden), jnp.float32)
            std_r = self.variable("batch_stats", "bnstd_running", jnp.ones, (1, self.n_hidden), jnp.float32)
            if train or calibrate:
                hpreact, mean, std = lecture_batchnorm(hpreact, bngain, bnbias)
                if not self.is_initializing():
                    m_b, s_b = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(std)
                    if calibrate:
                        mean_r.value, std_r.value = m_b, s_b
                    else:
                        mean_r.value = (1 - self.bn_momentum) * mean_r.value + self.bn_momentum * m_b
                        std_r.value = (1 - self.bn_momentum) * std_r.value + self.bn_momentum * s_b
            else:
                hpreact = bngain * (hpreact - mean_r.value) / std_r.value + bnbias
        else:
            hpreact = hpreact + self.param("b1", _normal(self.b1_scale), (self.n_hidden,))
        h = Tanh(name="Tanh_0")(hpreact)
        W2 = self.param("W2", _normal(self.w2_scale), (self.n_hidden, self.vocab_size))
        b2 = self.param("b2", _normal(self.b2_scale), (self.vocab_size,))
        return h @ W2 + b2


@dataclass(frozen=True)
class Rung:
    """One step of the lecture's ladder: a model, whether to score it with calibrated BatchNorm statistics,
    and the lecture's numbers."""
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


# --------------------------------------------------------------------------- PyTorch-ified modules

class Linear(nn.Module):
    """The lecture's ``Linear(fan_in, fan_out, bias)``: weight (fan_in, fan_out) ``randn / sqrt(fan_in) * gain``
    (``fan_in_scaling=False``: ``randn * gain``), bias zeros."""
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
    does (``x.var(0)``). ``gamma_scale`` is the init of ``gamma`` (the lecture's ``gamma *= 0.1`` on the last
    layer). ``calibrate=True`` normalizes with the statistics of the whole input and stores them as the
    running ones (momentum 1).
    """
    eps: float = 1e-5
    momentum: float = 0.1
    gamma_scale: float = 1.0
    unbiased_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, calibrate: bool = False) -> jax.Array:
        dim = x.shape[-1]
        gamma = self.param("gamma", _const(self.gamma_scale), (dim,))
        beta = self.param("beta", _const(0.0), (dim,))
        running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (dim,), jnp.float32)
        running_var = self.variable("batch_stats", "running_var", jnp.ones, (dim,), jnp.float32)
        if train or calibrate:
            n = x.shape[0]
            mean = x.mean(0)
            var = x.var(0)  # biased, as torch normalizes
            var_unbiased = var * (n / max(n - 1, 1))
            if self.unbiased_norm:
                var = var_unbiased
            if not self.is_initializing():
                m_b, v_b = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var_unbiased)
                mom = 1.0 if calibrate else self.momentum
                running_mean.value = (1 - mom) * running_mean.value + mom * m_b
                running_var.value = (1 - mom) * running_var.value + mom * v_b
        else:
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
    def __call__(self, x: jax.Array, train: bool = False, calibrate: bool = False) -> jax.Array:
        C = self.param("C", _normal(1.0), (self.vocab_size, self.n_embd))
        h = C[x].reshape(x.shape[0], -1)
        bn = self.batchnorm
        for i in range(self.n_layers):
            h = Linear(self.n_hidden, bias=not bn, gain=self.gain, fan_in_scaling=self.fan_in_scaling,
                       name=f"Linear_{i}")(h)
            if bn:
                h = BatchNorm1d(name=f"BatchNorm1d_{i}")(h, train, calibrate)
            h = Tanh(linear=self.linear_only, name=f"Tanh_{i}")(h)
        if bn:
            logits = Linear(self.vocab_size, bias=False, gain=1.0, fan_in_scaling=self.fan_in_scaling,
                            name=f"Linear_{self.n_layers}")(h)
            return BatchNorm1d(gamma_scale=self.last_scale, name=f"BatchNorm1d_{self.n_layers}")(
                logits, train, calibrate)
        return Linear(self.vocab_size, bias=True, gain=self.last_scale, fan_in_scaling=self.fan_in_scaling,
                      name=f"Linear_{self.n_layers}")(h)


# ------------------------------------------------------------------------------------------ helpers

def init(model: nn.Module, seed: int | jax.Array = LECTURE_SEED, block_size: int | None = None) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` from the model's explicit inits (``batch_stats`` may be empty)."""
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    bs = block_size or getattr(model, "block_size", BLOCK_SIZE)
    variables = model.init(key, jnp.zeros((2, bs), jnp.int32))  # eager: cheaper than compiling an init
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def count_params(variables_or_params: Mapping) -> int:
    """Number of trainable scalars (``batch_stats`` buffers are not parameters, as in the lecture)."""
    params = variables_or_params.get("params", variables_or_params)
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def lecture_lr(step: jax.Array, lr: float = 0.1, decay_step: int = 100_000, decay_to: float = 0.01) -> jax.Array:
    """The lecture's learning rate: ``lr = 0.1 if i < 100000 else 0.01``."""
    return jnp.where(step < decay_step, jnp.float32(lr), jnp.float32(decay_to))


def mean_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``F.cross_entropy``: the mean of the core's per-example cross-entropy."""
    return cross_entropy(logits, y).mean()


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _named_leaves(tree) -> dict[str, jax.Array]:
    return {_path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _signed_hist(x: jax.Array, bins: int = HIST_BINS, limit: jax.Array | None = None) -> dict[str, jax.Array]:
    """Histogram of x over [-r, r] (r = max|x| unless given), plus mean and std — all on the device."""
    x = x.astype(jnp.float32)
    r = jnp.max(jnp.abs(x)) if limit is None else jnp.asarray(limit, jnp.float32)
    r = jnp.maximum(r, 1e-30)
    return {"mean": x.mean(), "std": x.std(), "hist": stats.histogram(x, bins, (-r, r)), "range": r}


# -------------------------------------------------------------------------------------- diagnostics

def _diag_loss_and_grads(model: nn.Module, variables: Mapping, xb: jax.Array, yb: jax.Array):
    """Forward in train mode capturing every Tanh output; gradients w.r.t. params and each Tanh's output."""
    params, batch_stats = variables["params"], variables.get("batch_stats", {})

    def shapes():
        _, mut = model.apply({"params": params, "batch_stats": batch_stats}, xb, train=True,
                             mutable=["perturbations", "batch_stats"])
        return mut["perturbations"]
    perturbations = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))

    def loss_fn(p, pert):
        logits, mut = model.apply({"params": p, "batch_stats": batch_stats, "perturbations": pert}, xb,
                                  train=True, mutable=["batch_stats", "intermediates"],
                                  capture_intermediates=stats.module_filter(Tanh))
        return mean_cross_entropy(logits, yb), (mut["batch_stats"], mut["intermediates"])

    (loss, (new_bs, inter)), (g_params, g_pert) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, perturbations)
    acts = stats.flatten_intermediates(inter)
    out_grads = {k.rsplit("/out", 1)[0]: v for k, v in _named_leaves(g_pert).items()}
    return loss, new_bs, g_params, acts, out_grads


def _reduce_diagnostics(params, grads, acts, out_grads, bins: int = HIST_BINS) -> dict:
    """The lecture's numbers, reduced on the device: activations, output gradients, weight gradients."""
    act_stats = {}
    for name, a in acts.items():
        s = stats.summarize(a)
        act_stats[name] = {"mean": s["mean"], "std": s["std"], "saturated": s["saturated"],
                           **{k: v for k, v in _signed_hist(a, bins).items() if k in ("hist", "range")}}
    grad_stats = {name: _signed_hist(g, bins) for name, g in out_grads.items()}
    named_p, named_g = _named_leaves(params), _named_leaves(grads)
    weight_stats = {}
    for name, p in named_p.items():
        if p.ndim == 2 and min(p.shape) > 1:  # the lecture plots the 2-D parameters (C and the weights)
            g = named_g[name]
            weight_stats[name] = {**_signed_hist(g, bins), "shape": jnp.asarray(p.shape),
                                  "grad_data": stats.grad_data_ratio(g, p)}
    return {"activations": act_stats, "out_grads": grad_stats, "weight_grads": weight_stats}


@functools.partial(jax.jit, static_argnames=("model", "return_tensors"))
def diagnose(model: nn.Module, variables: Mapping, xb: jax.Array, yb: jax.Array,
             return_tensors: bool = False) -> dict:
    """The lecture's diagnostics on one training batch (train-mode forward and backward), reduced on device.

    Returns ``{'loss', 'activations': {layer: mean, std, saturated, hist, range}, 'out_grads': {layer: mean,
    std, hist, range}, 'weight_grads': {param: mean, std, hist, range, shape, grad_data}}``; histograms have
    :data:`HIST_BINS` bins over ``[-range, range]``. ``return_tensors=True`` also returns the raw tensors
    (``'tensors'``: acts, out_grads, grads) — for tests only.
    """
    loss, _, grads, acts, out_grads = _diag_loss_and_grads(model, variables, xb, yb)
    out = {"loss": loss, **_reduce_diagnostics(variables["params"], grads, acts, out_grads)}
    if return_tensors:
        out["tensors"] = {"acts": acts, "out_grads": out_grads, "grads": grads}
    return out


# ------------------------------------------------------------------------------------------ training

# XLA:CPU's YNNPACK library calls cost more than they save on matrices this small (batch 32 × 200 hidden):
# without them the lecture's step took 51.7 instead of 59.5 CPU-µs (alternating blocks in one process).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def lecture_learner(model: nn.Module, dls: DataLoaders, seed: int = LECTURE_SEED, steps_per_call: int = 10_000,
                    optimizer: Callable[..., optax.GradientTransformation] | None = None,
                    callbacks: Sequence[Callback] = ()) -> Learner:
    """The lecture's training setup on jaxlearn's one core: SGD with :func:`lecture_lr` (0.1 → 0.01 at step
    100,000, counted by the optimizer so it carries across fits), cross-entropy, ``steps_per_call`` steps per
    compiled call (a ``lax.scan``). ``dls`` from ``names_loaders(32, batches_per_epoch=...)`` draws each batch
    with replacement, like the lecture's ``torch.randint``. On the CPU the calls compile with
    :data:`CPU_COMPILER_OPTIONS`.

    The schedule is built into the transform (``optim.sgd(lecture_lr)``) rather than injected
    (``inject_hyperparams`` of a schedule cost 64 vs 46 CPU-µs per step here)."""
    return Learner(model, dls, optimizer=optimizer or optim.sgd(lecture_lr),
                   metrics=[], seed=seed, steps_per_call=steps_per_call, callbacks=callbacks,
                   compiler_options=CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None)


def train(learn: Learner, steps: int) -> np.ndarray:
    """Train ``steps`` steps (whole epochs of ``learn.dls.train``) without validation passes; returns every
    step's training loss."""
    per_epoch = learn.dls.train.n_batches
    if steps % per_epoch:
        raise ValueError(f"steps ({steps}) must be a multiple of the batches per epoch ({per_epoch})")
    losses = SmoothedLossCB()
    learn.fit(steps // per_epoch, valid=False, callbacks=[losses])
    return losses.raw


def variables_of(learn: Learner) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` of a Learner's model (``batch_stats`` may be empty)."""
    return {"params": learn.state.params, "batch_stats": learn.state.model_state.get("batch_stats", {})}


class UpdateRatioCB(StepRecorder):
    """makemore's update:data ratio of every parameter at every step, ``log10(std(lr·grad) / std(param))``
    after the update, reduced inside the compiled step (``ratios``: ``{param: (steps,)}``)."""

    @property
    def signature(self) -> tuple:
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        return stats.update_ratio(ctx.updates, ctx.new_params)

    @property
    def ratios(self) -> dict[str, np.ndarray]:
        return dict(self.recorded or {})


class DiagnosticsCB(StepRecorder):
    """The lecture's per-layer diagnostics of every training step, reduced inside the compiled step: each tanh
    layer's activations (mean, std, % saturated, histogram), the gradient of each tanh output
    (``self.perturb``) and each 2-D weight's gradient histogram and grad:data ratio — measured on the step's
    batch before its update. ``at(i)`` is step i's, as host numbers (``diagnose``'s layout)."""
    capture = staticmethod(stats.module_filter(Tanh))
    perturb = True

    @property
    def signature(self) -> tuple:
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        out_grads = {k.rsplit("/out", 1)[0]: v for k, v in ctx.out_grads.items()}
        return {"loss": ctx.loss, **_reduce_diagnostics(ctx.params, ctx.grads, ctx.intermediates, out_grads)}

    def at(self, i: int) -> dict:
        return jax.tree.map(lambda a: a[i], self.recorded)


@dataclass
class DiagnosticRun:
    """What :func:`run_diagnostics` returns: trained variables, per-step losses and update:data ratios, and the
    full diagnostics of the first and the last step."""
    variables: dict
    losses: np.ndarray
    update_ratios: dict[str, np.ndarray]
    diagnostics: list[dict]
    diagnostic_steps: list[int]


def run_diagnostics(model: nn.Module, dls: DataLoaders, steps: int = 1000, lr: float = 0.1,
                    seed: int = LECTURE_SEED) -> DiagnosticRun:
    """The lecture's debugging run of the deep net: ``steps`` SGD steps at a constant ``lr`` in one compiled
    call, with :class:`UpdateRatioCB` and :class:`DiagnosticsCB` in the step; ``diagnostics[0]`` is at init
    (the first batch, before its update), ``diagnostics[-1]`` the last batch's."""
    dls = DataLoaders(dataclasses.replace(dls.train, batches_per_epoch=steps), dls.valid, dls.info)
    ratios, diag = UpdateRatioCB(), DiagnosticsCB()
    learn = lecture_learner(model, dls, seed, steps_per_call=steps,
                            optimizer=functools.partial(optim.sgd, learning_rate=lr))
    learn.fit(1, valid=False, callbacks=[ratios, diag])
    last = [steps - 1] if steps > 1 else []
    return DiagnosticRun(variables_of(learn), diag.recorded["loss"], ratios.ratios,
                         [diag.at(i) for i in [0, *last]], [0, *last])


# ------------------------------------------------------------------------------------ eval & sampling

@functools.partial(jax.jit, static_argnames=("model",))
def _eval_loss(model, variables, X, Y):
    logits = model.apply(variables, X, train=False)
    return mean_cross_entropy(logits, Y)


def split_loss(model: nn.Module, variables: Mapping, X, Y) -> float:
    """Mean cross-entropy on a whole split in eval mode (BatchNorm uses its running statistics)."""
    v = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    return float(_eval_loss(model, v, jnp.asarray(X, jnp.int32), jnp.asarray(Y, jnp.int32)))


@functools.partial(jax.jit, static_argnames=("model",))
def _calibrate(model, variables, X):
    _, mut = model.apply(variables, X, train=False, calibrate=True, mutable=["batch_stats"])
    return mut["batch_stats"]


def calibrate(model: nn.Module, variables: Mapping, X) -> dict:
    """The lecture's "calibrate the batch norm at the end of training": every BatchNorm's statistics measured
    on all of ``X`` (one forward pass, each layer normalized with the full-data statistics of its input) and
    stored as its running statistics. Returns new variables."""
    bs = _calibrate(model, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},
                    jnp.asarray(X, jnp.int32))
    return {"params": variables["params"], "batch_stats": bs}


@functools.partial(jax.jit, static_argnames=("model", "n", "max_len", "block_size"))
def _sample_ids(model, variables, key, n: int, max_len: int, block_size: int):
    def body(carry, k):
        context, done = carry
        logits = model.apply(variables, context, train=False)
        ix = jax.random.categorical(k, logits).astype(jnp.int32)
        ix = jnp.where(done, 0, ix)
        context = jnp.concatenate([context[:, 1:], ix[:, None]], axis=1)
        return (context, done | (ix == 0)), ix
    init_carry = (jnp.zeros((n, block_size), jnp.int32), jnp.zeros((n,), bool))
    _, ids = jax.lax.scan(body, init_carry, jax.random.split(key, max_len))
    return ids.T


def sample(model: nn.Module, variables: Mapping, vocab, n: int = 20, seed: int | jax.Array = LECTURE_SEED + 10,
           max_len: int = 50) -> list[str]:
    """``n`` names sampled from the model in eval mode, each stopped at its first '.' (deterministic per seed).

    All ``n`` names are drawn in parallel in one compiled ``lax.scan``; a name still going after ``max_len``
    characters is cut there.
    """
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    bs = getattr(model, "block_size", BLOCK_SIZE)
    v = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    ids = np.asarray(_sample_ids(model, v, key, n, max_len, bs))
    names = []
    for row in ids:
        row = list(row)
        row = row[:row.index(0)] if 0 in row else row
        names.append(vocab.decode(row))
    return names


# ------------------------------------------------------------------------------------------ plotting

def _layer_label(name: str) -> str:
    return name.replace("Tanh_", "layer ")


def plot_activations(ax, act_stats: Mapping, title: str = "activation distribution"):
    """Per-layer histogram of the tanh outputs with mean, std and % saturated in the legend (lecture cell 1)."""
    for name, s in act_stats.items():
        r = float(s["range"])
        edges = np.linspace(-r, r, len(s["hist"]) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        dens = np.asarray(s["hist"]) / max(np.sum(s["hist"]) * (edges[1] - edges[0]), 1e-30)
        ax.plot(centers, dens, label=f"{_layer_label(name)}: mean {float(s['mean']):+.2f}, "
                                      f"std {float(s['std']):.2f}, sat {100 * float(s['saturated']):.1f}%")
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)


def plot_grad_hists(ax, grad_stats: Mapping, title: str, ratio_key: str | None = None):
    """Per-layer (or per-weight) histogram of gradients, std (and grad:data ratio) in the legend."""
    for name, s in grad_stats.items():
        r = float(s["range"])
        edges = np.linspace(-r, r, len(s["hist"]) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        dens = np.asarray(s["hist"]) / max(np.sum(s["hist"]) * (edges[1] - edges[0]), 1e-30)
        label = f"{_layer_label(name)}: std {float(s['std']):.2e}"
        if ratio_key:
            label += f", grad:data {float(s[ratio_key]):.2e}"
        ax.plot(centers, dens, label=label)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)


def plot_update_ratios(ax, ratios: Mapping[str, np.ndarray], title: str = "update:data ratio (log10)"):
    """The lecture's ud plot: log10(std(lr·grad)/std(param)) per 2-D parameter over training, guideline −3."""
    for name, r in ratios.items():
        ax.plot(np.asarray(r), label=name, lw=0.8)
    ax.axhline(-3, color="k", ls="--", lw=1, label="-3 guideline")
    ax.legend(fontsize=6, ncol=2)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=9)


def weight_ratio_names(params: Mapping) -> list[str]:
    """Names of the 2-D parameters (C and the Linear weights), the ones the lecture plots."""
    return [k for k, v in _named_leaves(params).items() if np.ndim(v) == 2 and min(np.shape(v)) > 1]


def plot_diagnostics(result: DiagnosticRun, title: str, path=None):
    """One figure: activations / activation gradients / weight gradients at the first and the last diagnosed
    step, and the update:data ratios over the run."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    diags, steps = result.diagnostics, result.diagnostic_steps
    rows = [(diags[0], steps[0])] + ([(diags[-1], steps[-1])] if len(diags) > 1 else [])
    with_ratios = len(result.losses) > 1
    fig = plt.figure(figsize=(16, 4.2 * (len(rows) + with_ratios)))
    gs = fig.add_gridspec(len(rows) + with_ratios, 3)
    for r, (d, s) in enumerate(rows):
        when = "at init (step 0)" if s == 0 else f"at step {s}"
        plot_activations(fig.add_subplot(gs[r, 0]), d["activations"], f"activations {when}")
        plot_grad_hists(fig.add_subplot(gs[r, 1]), d["out_grads"], f"gradients of layer outputs {when}")
        plot_grad_hists(fig.add_subplot(gs[r, 2]), d["weight_grads"], f"weight gradients {when}", "grad_data")
    if with_ratios:
        names = weight_ratio_names(result.variables["params"])
        plot_update_ratios(fig.add_subplot(gs[len(rows), :]), {k: result.update_ratios[k] for k in names})
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig


def summary_table(diag: Mapping) -> list[dict]:
    """Per tanh layer: mean, std, % saturated, output-gradient std — plain floats (for JSON / printing)."""
    rows = []
    for name, s in diag["activations"].items():
        g = diag["out_grads"].get(name, {})
        rows.append({"layer": name, "mean": float(s["mean"]), "std": float(s["std"]),
                     "saturated_pct": 100 * float(s["saturated"]),
                     "grad_std": float(g["std"]) if g else float("nan")})
    return rows
