"""The training-health report, during a fit (:class:`HealthCB`) or as a short trial (:func:`diagnose`).

The compiled step measures what the rules need (:mod:`~jaxlearn.callbacks.health_probe`) on the first
``first`` steps and then every ``every`` steps, inside a ``lax.cond``: the other steps pay only for the branch.
Nothing is read back per step. :class:`HealthCB` reads what was measured once after ``check_after`` steps and
at each epoch's end, runs the rules (:mod:`~jaxlearn.callbacks.health_rules`) and reports each finding once;
``learn.diagnose()`` runs the same on a trial fit of ``n_batches`` batches and puts the Learner back exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.callback import CancelFitException, LearnerLike, StepRecorder
from jaxlearn.callbacks.health_probe import ActivationLayer, activation_map, measure, parameter_uses
from jaxlearn.callbacks.health_report import HealthReport
from jaxlearn.callbacks.health_rules import HealthThresholds, Observations, diagnose_observations, unique
from jaxlearn.losses import is_classification
from jaxlearn.step import CARRY, StepContext
from jaxlearn.trees import named_leaves

_SAMPLE = 8192  # labels read to find the chance level


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def chance_levels(learn: LearnerLike) -> tuple[float | None, float | None, bool]:
    """The loss of a model that knows nothing — uniform logits (``log C`` for cross-entropy) or, for
    regression, the training mean — and of one that knows only the label frequencies, computed with the
    Learner's own loss on up to 8,192 training labels (explicit transfers: no guard is tripped); and whether the
    task is a classification."""
    ds = learn.dls.train
    y = np.asarray(jax.device_get(ds.y))[:_SAMPLE]
    two = jax.tree.map(lambda a: jax.ShapeDtypeStruct((2, *a.shape[1:]), a.dtype), ds.x)
    preds = jax.eval_shape(lambda s, x: s.apply(s.variables(), ds.transform(x), False, mutable=[CARRY])[0],
                           learn.state, two)
    classification = is_classification(preds, y)
    if classification:
        n = preds.shape[-1]
        freq = np.bincount(y.reshape(-1), minlength=n)[:n] / y.size
        guesses = (np.zeros((len(y), *preds.shape[1:]), np.float32),
                   np.broadcast_to(np.log(np.maximum(freq, 1e-12)), (len(y), *preds.shape[1:])).astype(np.float32))
    elif y.shape[1:] == preds.shape[1:] and np.issubdtype(y.dtype, np.floating):
        mean = np.broadcast_to(y.mean(0), y.shape).astype(np.float32)
        guesses = (mean, mean)
    else:
        return None, None, classification
    loss = lambda p: float(jax.device_get(learn.loss_fn(jax.device_put(p), jax.device_put(y)).mean()))  # noqa: E731
    return loss(guesses[0]), loss(guesses[1]), classification


class HealthCB(StepRecorder):
    """Checks a fit's health as it trains: after ``check_after`` steps, then at each epoch's end, and reports each
    finding once (``learn.log``, and ``findings`` / ``report``). ``stop_on_critical`` cancels the fit at the
    first critical finding. See the module docstring for what is measured and when.

    ``first`` (default 10) / ``every`` (default 25): the compiled step measures the first ``first`` optimizer steps,
    then every ``every``-th (positive integers); the other steps only record their loss (every 25th keeps the
    main job's overhead near 2%: a probe re-runs the forward pass). ``check_after``
    (default 100): the steps after which the rules run once early (None: only at epoch ends). ``thresholds``:
    where each rule fires (default :class:`~jaxlearn.callbacks.health_rules.HealthThresholds`). ``verbose``
    (default True): log each new finding through ``learn.log``. ``max_steps``: cancel the fit after this many
    training steps (None, the default: never; :func:`diagnose`'s trial uses it)."""
    order = 5  # after MetricsCB (1): the epoch's metrics are there for the overfitting rule
    perturb = True  # ∂L/∂h_t of models that perturb their hidden states (the stateful RNNs)

    def __init__(self, every: int = 25, first: int = 10, check_after: int | None = 100,
                 thresholds: HealthThresholds | None = None, stop_on_critical: bool = False, verbose: bool = True,
                 max_steps: int | None = None):
        for name, v in (("every", every), ("first", first)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"HealthCB: {name} must be a positive integer, got {v!r}")
        self.every, self.first, self.check_after = every, first, check_after
        self.thresholds = thresholds or HealthThresholds()
        self.stop_on_critical, self.verbose = stop_on_critical, verbose
        self.max_steps = max_steps
        self.activations: dict[str, ActivationLayer] = {}

    @property
    def signature(self) -> tuple:
        return (type(self), self.every, self.first)

    def find_activations(self, learn: LearnerLike) -> None:
        """Read which module outputs are activations from the model (shapes only), before the step is traced."""
        ds = learn.dls.train
        x = jax.tree.map(lambda a: jax.ShapeDtypeStruct((2, *a.shape[1:]), a.dtype), ds.x)
        tfm = learn.batch_transform()
        x = jax.eval_shape(lambda x: tfm(ds.transform(x), True, jax.random.key(0)), x)
        apply = lambda v, x, **kw: learn.state.apply(v, x, False, **kw)  # noqa: E731
        variables = _shapes(learn.state.variables())
        self.activations = activation_map(apply, variables, x)
        shapes = {k: np.shape(v) for k, v in named_leaves(learn.state.params).items()}
        order, self._lookups = parameter_uses(apply, variables, x)
        self._weights = [n for n in order  # makemore's: the matrices (and embedding tables), in order
                         if len(shapes[n]) >= 2 and min(math.prod(shapes[n][:-1]), shapes[n][-1]) > 1]

    # ------------------------------------------------------------------------------------- in the step
    def in_step(self, ctx: StepContext) -> jax.Array:
        """One float32 vector a step: loss, step, whether probed, then the probe's numbers (zeros when not probed).
        One output buffer, not dozens: with a call per step (the CPU's default) each buffer costs dispatch time."""
        probe = (ctx.state.step < self.first) | (ctx.state.step % self.every == 0)
        self._layout = jax.eval_shape(lambda: measure(ctx, self.activations))

        def measured() -> jax.Array:
            leaves = jax.tree.leaves(measure(ctx, self.activations))
            return jnp.concatenate([jnp.ravel(a).astype(jnp.float32) for a in leaves])

        size = sum(math.prod(a.shape) for a in jax.tree.leaves(self._layout))
        numbers = jax.lax.cond(probe, measured, lambda: jnp.zeros(size, jnp.float32))
        head = jnp.stack([ctx.loss.astype(jnp.float32), ctx.state.step.astype(jnp.float32), probe.astype(jnp.float32)])
        return jnp.concatenate([head, numbers])

    # ------------------------------------------------------------------------------------ on the host
    def before_fit(self, learn: LearnerLike) -> None:
        super().before_fit(learn)
        self.findings, self._seen, self._epochs = [], set(), []
        self._losses: list[np.ndarray] = []  # every step's loss and step, read back so far
        self._probes: list[dict] = []         # the probed steps' measurements, read back so far
        self._done, self._checked_early = 0, False
        self.chance, self.prior_chance, self.classification = chance_levels(learn)
        self.integer_inputs = all(np.issubdtype(a.dtype, np.integer) for a in jax.tree.leaves(learn.dls.train.x))
        self.not_checked: list[str] = []
        self.find_activations(learn)

    def after_batch(self, learn: LearnerLike) -> None:
        if not learn.training:
            return
        super().after_batch(learn)
        self._done += learn.n_steps
        if self.check_after is not None and not self._checked_early and self._done >= self.check_after:
            self._checked_early = True
            self.check(learn)
        if self.max_steps is not None and self._done >= self.max_steps:
            raise CancelFitException()

    def after_epoch(self, learn: LearnerLike) -> None:
        """Keep the epoch's losses and run the rules: after a completed training pass, and after the validation
        pass with its valid loss (which the overfitting rule reads)."""
        if learn.training:
            self._train_loss = learn.epoch_metrics.get("loss")
            if learn.epoch_complete:
                self._epochs.append({"epoch": learn.epoch, "train_loss": self._train_loss})
                self.check(learn)
        elif getattr(self, "_train_loss", None) is not None:
            self._epochs.append({"epoch": learn.epoch, "train_loss": self._train_loss,
                                 "valid_loss": learn.epoch_metrics.get("loss")})
            self.check(learn)

    def observations(self) -> Observations:
        """Everything measured so far, on the host (reads what is still on the device)."""
        chunks, self._chunks = getattr(self, "_chunks", []), []
        for c in jax.device_get(chunks):  # kept on the host: the steps' losses, and only the probed rows
            c = np.asarray(c)
            probed = c[:, 2] > 0
            self._losses.append(np.stack([c[:, 0].astype(np.float64), c[:, 1]]))
            if probed.any():
                self._probes.append({"step": c[probed, 1].astype(int), **_unpack(c[probed, 3:], self._layout)})
        losses = np.concatenate(self._losses, axis=1) if self._losses else np.zeros((2, 0))
        probes = jax.tree.map(lambda *xs: np.concatenate(xs), *self._probes) if self._probes else {"step": []}
        steps = np.asarray(probes.pop("step"), int)
        weights = [n for n in self._weights if n in probes.get("params", {})]
        return Observations(steps, probes, losses[0], losses[1].astype(int), self.chance, self.prior_chance,
                            self.activations, weights, list(self._epochs), self.integer_inputs, self.classification,
                            lookups=set(self._lookups) & set(weights))

    def check(self, learn: LearnerLike) -> list:
        """Run the rules on what was measured so far; log and keep the findings not reported before."""
        findings, self.not_checked = diagnose_observations(self.observations(), self.thresholds)
        new = unique(findings, self._seen)
        self.findings += new
        if self.verbose and new:
            getattr(learn, "log", print)(str(HealthReport(new)))
        if self.stop_on_critical and any(f.severity == "critical" for f in new):
            raise CancelFitException("HealthCB: a critical finding")
        return new

    @property
    def report(self) -> HealthReport:
        """Every finding of the fit so far, with what was not checked and what was seen."""
        obs = self.observations()
        return HealthReport(list(self.findings), list(self.not_checked), summarize(obs, self.thresholds))


def summarize(obs: Observations, thresholds: HealthThresholds, max_points: int = 500) -> dict:
    """What the report shows beside its findings: the loss (at most ``max_points``), per-layer numbers, the
    thresholds used."""
    stride = max(1, math.ceil(len(obs.losses) / max_points))
    acts, params = obs.probes.get("activations", {}), obs.probes.get("params", {})
    seen: dict[str, Any] = {"steps": int(len(obs.losses)), "probed_steps": int(len(obs.steps)),
                            "chance": obs.chance, "prior_chance": obs.prior_chance,
                            "loss": {"step": obs.loss_steps[::stride].tolist(), "value": obs.losses[::stride].tolist()},
                            "activations": {n: f"{a.kind} ({a.side}-activation)" for n, a in obs.activations.items()},
                            "thresholds": dataclasses.asdict(thresholds)}
    if acts:
        seen["dead_units"] = {n: float(np.mean(a["fires"][-20:].mean(0) < 0.01)) for n, a in acts.items()
                              if obs.activations[n].kind == "relu"}
        seen["saturated"] = {n: float(a["saturated"][-20:].mean()) for n, a in acts.items()
                             if obs.activations[n].kind != "relu"}
        seen["activation_std"] = {n: float(np.median(a["std"][-20:])) for n, a in acts.items()}
    if params and obs.weights:
        seen["grad_rms"] = {w: float(np.median(params[w]["grad_rms"][-20:])) for w in obs.weights}
        seen["log10_update_data"] = {w: float(np.median(np.log10(np.maximum(params[w]["update_std"][-20:], 1e-30)
                                                                 / np.maximum(params[w]["std"][-20:], 1e-30))))
                                     for w in obs.weights}
    if obs.probes.get("inputs"):
        seen["inputs"] = [{k: float(np.mean(v[:5])) for k, v in s.items()} for s in obs.probes["inputs"]]
    if "grad_norm" in obs.probes:
        seen["grad_norm"] = {"step": obs.steps.tolist()[::stride], "value": obs.probes["grad_norm"].tolist()[::stride]}
    if obs.probes.get("hidden_grads"):
        seen["hidden_grads"] = {n: np.median(g[-20:], 0).tolist() for n, g in obs.probes["hidden_grads"].items()}
    if obs.epochs:
        seen["epochs"] = obs.epochs
    return seen


def _unpack(rows: np.ndarray, layout: Any) -> Any:
    """The probes' pytree (each leaf with a leading row axis) from :meth:`HealthCB.in_step`'s vectors."""
    leaves, out, at = jax.tree.leaves(layout), [], 0
    for leaf in leaves:
        n = math.prod(leaf.shape)
        out.append(rows[:, at:at + n].reshape(len(rows), *leaf.shape).astype(leaf.dtype))
        at += n
    return jax.tree.unflatten(jax.tree.structure(layout), out)


def diagnose(learn: LearnerLike, n_batches: int = 100, thresholds: HealthThresholds | None = None) -> HealthReport:
    """A short trial fit of ``n_batches`` batches, every step measured, then every rule but overfitting (it
    needs epochs): the :class:`~jaxlearn.callbacks.health_report.HealthReport`. The Learner is put back exactly
    (state, epoch counter, callbacks), as ``lr_find`` does; its input transforms take part."""
    if not isinstance(n_batches, int) or n_batches < 2:
        raise ValueError(f"diagnose: n_batches must be an integer >= 2, got {n_batches!r}")
    cb = HealthCB(every=1, first=n_batches, check_after=None, thresholds=thresholds, verbose=False,
                  max_steps=n_batches)
    with learn.trial():
        learn.fit(-(-n_batches // learn.dls.train.n_batches), valid=False, callbacks=[cb])
        cb.check(learn)
    cb._epochs = []  # the trial's epochs have no validation pass
    report = cb.report
    report.not_checked = [n for n in report.not_checked if not n.startswith("overfitting")] + [
        "overfitting: a diagnosis is a short trial without validation (HealthCB checks it during a fit)"]
    return report
