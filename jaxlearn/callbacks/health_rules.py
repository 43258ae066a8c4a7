"""The training-health rules: the courses' diagnoses as thresholds on what the compiled step measured
(:mod:`jaxlearn.callbacks.health_probe`), each turning a stream of numbers into :class:`Finding`\\ s.

Thresholds are :class:`HealthThresholds`' fields, each with its source; they were tuned on the healthy controls
of ``benchmarks/health.py`` (the lesson-17 BatchNorm CNN, the makemore BatchNorm MLP, the default LSTM, ...)
so that a healthy run is silent. A rule that needs what was not measured says so in ``not_checked``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jaxlearn.callbacks.health_probe import ActivationLayer
from jaxlearn.callbacks.health_report import Finding, finding


@dataclass(frozen=True)
class HealthThresholds:
    """Where each rule fires. ``*_critical`` is the level past which a warning becomes critical."""
    input_mean: float = 1.0            # |mean| of a float input above this: not centred
    input_std: tuple[float, float] = (0.1, 3.0)  # a float input's std outside this range: not scaled
    input_max_critical: float = 50.0   # values this large: a 0..255 range fed as floats
    initial_loss: float = 1.5          # initial loss above this x chance (log C, classification)
    initial_loss_critical: float = 3.0
    initial_mse: float = 3.0           # the same for a regression, against the mean predictor's loss
    initial_mse_critical: float = 6.0
    dead_fire: float = 0.01            # a unit firing on less than 1% of its positions over the window is dead
    dead_share: float = 0.3            # a layer with this share of dead units (SageMaker flags 50%)
    dead_share_critical: float = 0.7
    saturated_share: float = 0.35      # tanh / sigmoid layers with this share of saturated activations, when the
    #                                   median layer of 3+ has it (makemore: ~5% healthy, the first ~20% at gain 5/3)
    saturated_layer: float = 0.55      # ... one layer alone (a first layer runs higher: it sees the raw inputs)
    saturated_share_critical: float = 0.6
    activation_ratio: float = 5.0      # std of an activation layer vs the first: shrunk / grown this much
    grad_ratio: float = 1e-3           # first weight's gradient RMS / the last's below this (AutoTrainer's ratio)
    grad_norm_growth: float = 100.0    # the gradient norm this many times its first value
    time_growth: float = 10.0          # an RNN's ||dL/dh_0|| / ||dL/dh_{T-1}||: the gradient grows back in time
    update_ratio_high: float = -1.0    # median log10(std(update) / std(weight)) above (makemore: about -3)
    update_ratio_high_critical: float = -0.3
    last_layer_allowance: float = 1.0  # the output layer starts small on purpose (makemore: W2 * 0.01): its
    #                                   ratio runs ~10x the others' (the lecture's plot), so it gets this much more
    update_ratio_low: float = -5.0     # ... below
    update_ratio_first: float = -0.5   # the first steps' updates a third of the weights' size or more (not the
    weight_growth: float = 3.0         # output layer's), and the weights' RMS this many times its start: the lr
    weight_shrink: float = 0.1         # the weights' RMS down to this share of its start: the weight decay
    lookup_allowance: float = 1.0      # embedding tables start small (fastai: N(0, 0.01)) and grow fast when healthy
    learning_drop: float = 0.05        # the loss fell less than 5% of the way from its start to zero, and
    chance_margin: float = 0.95        # ... stays above 95% of chance
    min_steps: int = 30                # the loss-stream rules need this many steps
    oscillation: float = 0.3           # the smoothed loss climbs back more than 30% of what it had fallen
    oscillation_level: float = 0.3     # ... and to more than 1.3x its lowest level
    overfit_gap: float = 0.1           # (valid - train) / train above this, with the valid loss rising
    probability_sum: float = 1e-3      # classification outputs in [0, 1] summing to 1 this closely: probabilities
    window: int = 20                   # probes per window for per-unit rules (dead, saturated)


@dataclass
class Observations:
    """What the step measured, on the host, and what the rules need to know about the run."""
    steps: np.ndarray                       # (N,) the probed optimizer steps
    probes: dict                            # :func:`~jaxlearn.callbacks.health_probe.measure`'s, stacked (N, ...)
    losses: np.ndarray                      # every training step's loss
    loss_steps: np.ndarray                  # ... and its optimizer step
    chance: float | None                    # loss of the uniform prediction (log C) or of the mean predictor
    prior_chance: float | None              # loss of predicting the label frequencies (classification)
    activations: dict[str, ActivationLayer]  # forward order
    weights: list[str]                      # the >= 2-D parameters, forward order
    epochs: list[dict] = field(default_factory=list)  # {'epoch', 'train_loss', 'valid_loss'} at epoch ends
    integer_inputs: bool = False
    classification: bool = True
    lookups: set[str] = field(default_factory=set)  # the weights that are embedding tables (rows looked up)


def _smooth(values: np.ndarray, beta: float = 0.9) -> np.ndarray:
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def check_inputs(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """``unnormalized_input`` for each input whose first probes have ``|mean| > t.input_mean`` or a std outside
    ``t.input_std``; critical when its max reaches ``t.input_max_critical`` (0..255 pixels fed as floats) or its std
    is below a tenth of ``t.input_std``'s lower end. The remedy: normalize with those statistics (fast.ai 2022
    lesson 17)."""
    out = []
    for i, s in enumerate(obs.probes.get("inputs", [])):
        mean, std = float(np.mean(s["mean"][:5])), float(np.mean(s["std"][:5]))
        lo, hi = float(np.min(s["min"][:5])), float(np.max(s["max"][:5]))
        if abs(mean) > t.input_mean or not t.input_std[0] <= std <= t.input_std[1]:
            critical = hi >= t.input_max_critical or std < t.input_std[0] / 10
            out.append(finding("unnormalized_input", "critical" if critical else "warning",
                               None if len(obs.probes["inputs"]) == 1 else f"input {i}",
                               {"mean": mean, "std": std, "range": [lo, hi],
                                "threshold": f"|mean| <= {t.input_mean}, std in {list(t.input_std)}"},
                               remedy=f"BatchTransformCB(normalize({mean:.3g}, {std:.3g})): the statistics of "
                                      f"these inputs (better: the whole training set's)"))
    return out


def check_initial_loss(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """``high_initial_loss`` when the first batch's loss (step 0, before any update) is more than
    ``t.initial_loss`` x chance (``log C`` for a classification; ``t.initial_mse`` x the mean predictor's loss for
    a regression), critical past the ``*_critical`` level (makemore part 3: 27 at init against log 27 = 3.29)."""
    if obs.chance is None or not len(obs.losses) or obs.loss_steps[0] != 0:
        return []  # only a run seen from its very first step (the model at init)
    first = float(obs.losses[0])  # the first batch's loss, computed before any update
    ratio = first / max(obs.chance, 1e-12)
    warn, critical = (t.initial_loss, t.initial_loss_critical) if obs.classification else \
        (t.initial_mse, t.initial_mse_critical)
    if not math.isfinite(first) or ratio <= warn:
        return []
    evidence = {"initial_loss": first, "chance": obs.chance, "ratio": ratio, "threshold": f"{warn} x chance"}
    severity = "critical" if ratio > critical else "warning"
    if obs.classification:
        return [finding("high_initial_loss", severity, obs.weights[-1] if obs.weights else None, evidence,
                        step=int(obs.loss_steps[0]))]
    return [finding("high_initial_loss", severity, None, evidence, step=int(obs.loss_steps[0]),
                    remedy="squash the output into the targets' range (collab.sigmoid_range with y_range) and give "
                           "the model biases, so it starts near the mean (fast.ai 2018 lesson 5)")]


def _window(a: np.ndarray, n: int) -> np.ndarray:
    return a[-n:]


def check_activations(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """Over the last ``t.window`` probes: ``dead_units`` (a ReLU layer whose share of units firing on under
    ``t.dead_fire`` of positions reaches ``t.dead_share``), ``saturated_units`` (a tanh / sigmoid layer saturated
    ``t.saturated_layer`` of the time, or ``t.saturated_share`` when the median of 3+ such layers is), and
    ``vanishing_`` / ``exploding_activations`` (a layer's std ``t.activation_ratio`` x below / above the first
    layer of its kind, 3+ layers). Fast.ai 2022 lesson 17 (dead_chart), makemore part 3 (tanh saturation)."""
    out = []
    acts = obs.probes.get("activations", {})
    saturation = {name: float(_window(acts[name]["saturated"], t.window).mean())
                  for name, layer in obs.activations.items() if name in acts and layer.kind != "relu"}
    network_wide = len(saturation) >= 3 and float(np.median(list(saturation.values()))) >= t.saturated_share
    stds = []
    for name, layer in obs.activations.items():
        if name not in acts:
            continue
        s = acts[name]
        fires = _window(s["fires"], t.window).mean(0)  # per unit, over the window
        stds.append((name, float(np.median(_window(s["std"], t.window)))))
        if layer.kind == "relu":
            dead = float(np.mean(fires < t.dead_fire))
            if dead >= t.dead_share:
                out.append(finding("dead_units", "critical" if dead >= t.dead_share_critical else "warning", name,
                                   {"dead_units": dead, "units": int(len(fires)),
                                    "threshold": f"{t.dead_share:.0%} of units firing < {t.dead_fire:.0%}"}))
        else:
            saturated = saturation[name]
            if saturated >= t.saturated_layer or (network_wide and saturated >= t.saturated_share):
                remedy = None if layer.kind == "tanh" else (
                    "ReLU / GeneralRelu instead of sigmoid in the hidden layers (its slope is at most 0.25), "
                    "kaiming_normal init")
                out.append(finding("saturated_units",
                                   "critical" if saturated >= t.saturated_share_critical else "warning", name,
                                   {"saturated": saturated, "activation": layer.kind,
                                    "threshold": f"{t.saturated_share:.0%} of activations in most layers" if
                                    network_wide else f"{t.saturated_layer:.0%} of activations"}, remedy=remedy))
    for kind in ("relu", "tanh", "sigmoid"):  # layer over layer: only layers of one kind compare
        same = [(n, s) for n, s in stds if obs.activations[n].kind == kind]
        if len(same) < 3 or same[0][1] <= 0:
            continue
        ratios = [(n, s / same[0][1]) for n, s in same]
        shrunk = next(((n, r) for n, r in ratios if r < 1 / t.activation_ratio), None)
        grown = next(((n, r) for n, r in ratios if r > t.activation_ratio), None)
        evidence = {"std_by_layer": [s for _, s in same], "threshold": f"x{t.activation_ratio} of the first {kind} "
                                                                         f"layer's"}
        if shrunk:
            out.append(finding("vanishing_activations", "warning", shrunk[0],
                               {"ratio_to_first": shrunk[1], **evidence}))
        if grown:
            out.append(finding("exploding_activations", "warning", grown[0], {"ratio_to_first": grown[1], **evidence}))
    return out


def check_gradients(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """``vanishing_gradients`` (first weight's gradient RMS / the last's below ``t.grad_ratio``),
    ``exploding_gradients`` (the gradient norm ``t.grad_norm_growth`` x its start, or an RNN's
    ``||dL/dh_0|| / ||dL/dh_{T-1}||`` above ``t.time_growth``), and the update:data ratio per weight, the median
    ``log10(std(update) / std(weight))`` over the later half of the probes (makemore part 3: about -3):
    ``update_ratio_high`` above ``t.update_ratio_high`` (the output layer gets ``t.last_layer_allowance`` more; also
    critical when the first steps' ratio passes ``t.update_ratio_first`` and the weights grew
    ``t.weight_growth`` x), ``update_ratio_low`` below ``t.update_ratio_low``."""
    out = []
    params = obs.probes.get("params", {})
    weights = [w for w in obs.weights if w in params]
    if len(weights) >= 3:
        first, last = (float(np.median(params[w]["grad_rms"][:t.window])) for w in (weights[0], weights[-1]))
        if last > 0 and first / last < t.grad_ratio:
            out.append(finding("vanishing_gradients", "warning", weights[0],
                               {"grad_rms_first": first, "grad_rms_last": last, "ratio": first / last,
                                "threshold": t.grad_ratio}))
    norms = obs.probes.get("grad_norm")
    if norms is not None and len(norms) > 1 and np.all(np.isfinite(norms)):
        base = float(np.median(norms[: max(1, min(5, len(norms) // 4))]))
        peak = int(np.argmax(norms))
        if base > 0 and norms[peak] / base > t.grad_norm_growth:
            out.append(finding("exploding_gradients", "warning", None,
                               {"grad_norm_start": base, "grad_norm_peak": float(norms[peak]),
                                "threshold": f"x{t.grad_norm_growth}"}, step=int(obs.steps[peak])))
    for name, g in obs.probes.get("hidden_grads", {}).items():
        g = _window(np.asarray(g), t.window)
        growth = float(np.median(g[:, 0] / np.maximum(g[:, -1], 1e-30)))
        if growth > t.time_growth:
            out.append(finding("exploding_gradients", "warning", name,
                               {"dL/dh_0 / dL/dh_last": growth, "threshold": f"x{t.time_growth}"},
                               remedy="the hidden-to-hidden matrix at gain 1 (text.identity_init, or flax's "
                                      "orthogonal), or an LSTM / GRU; optax.clip_by_global_norm(1.0) and a smaller "
                                      "bptt against single spikes"))
    weights = [w for w in weights if params[w]["rms"][0] > 1e-6]  # a weight that starts at zero has no scale
    inner = weights[:-1] or weights  # the output layer starts small on purpose (see last_layer_allowance)
    matrices, tables = [w for w in inner if w not in obs.lookups], [w for w in inner if w in obs.lookups]
    for group, limit in ((matrices, t.update_ratio_first), (tables, t.update_ratio_first + t.lookup_allowance)):
        if not group or len(obs.steps) < 5:
            continue
        first = float(np.median([np.max(np.log10(np.maximum(params[w]["update_std"][:5], 1e-30)
                                                 / np.maximum(params[w]["std"][:5], 1e-30))) for w in group]))
        growth = float(np.median([params[w]["rms"][-1] / max(params[w]["rms"][0], 1e-30) for w in group]))
        if first > limit and growth > t.weight_growth:
            out.append(finding("update_ratio_high", "critical", None,
                               {"log10_update_data_first_steps": first, "weights_grew": growth,
                                "threshold": f"> {limit} and x{t.weight_growth}"}))
            break
    for w in weights:  # over the later half: the first steps from a small init are large relative to it
        p = params[w]
        half = max(1, len(p["std"]) // 2)
        std = _window(p["std"], half)
        ratio = np.log10(np.maximum(_window(p["update_std"], half), 1e-30) / np.maximum(std, 1e-30))
        med = float(np.median(ratio))
        allowance = t.last_layer_allowance if w == weights[-1] else 0.0
        if med > t.update_ratio_high + allowance:
            critical = med > t.update_ratio_high_critical + allowance
            shrink = float(p["rms"][-1] / max(p["rms"][0], 1e-30))
            decay = shrink < t.weight_shrink  # the steps shrink the weights away: the weight decay
            out.append(finding("update_ratio_high", "critical" if critical else "warning",
                               w, {"log10_update_data": med, "threshold": t.update_ratio_high + allowance,
                                   "weights_now_x_start": shrink,
                                   "likely_cause": "weight decay" if decay else "lr too high"},
                               remedy=f"a much smaller weight decay: the weights shrank to {shrink:.2g}x their start "
                                      f"(p <- p (1 - lr wd) each step)" if decay else None))
        elif med < t.update_ratio_low and np.median(std) > 0:
            out.append(finding("update_ratio_low", "warning", w,
                               {"log10_update_data": med, "threshold": t.update_ratio_low}))
    return out


def first_non_finite(obs: Observations) -> int | None:
    """The optimizer step of the first NaN / infinite loss, gradient or weight (None: all finite)."""
    bad_loss = np.flatnonzero(~np.isfinite(obs.losses))
    finite = [np.asarray(p["finite"], bool) for p in obs.probes.get("params", {}).values()]
    bad_probe = np.flatnonzero(~np.all(finite, axis=0)) if finite else []
    steps = ([int(obs.loss_steps[bad_loss[0]])] if len(bad_loss) else []) + \
        ([int(obs.steps[bad_probe[0]])] if len(bad_probe) else [])
    return min(steps) if steps else None


def check_finite(obs: Observations) -> list[Finding]:
    """``diverged`` (critical) at the first step with a NaN / infinite loss, gradient or weight, naming the layer
    when at most half the layers went non-finite (more at once points at the learning rate), with the losses
    just before."""
    step = first_non_finite(obs)
    if step is None:
        return []
    params = obs.probes.get("params", {})
    at = np.flatnonzero(obs.steps == step)
    bad = [n for n, p in params.items() if len(at) and not p["finite"][at[0]]]
    # a single layer names the culprit; most of the model at once is the learning rate, not a layer
    layer = bad[0] if bad and len(bad) <= max(1, len(params) // 2) else None
    return [finding("diverged", "critical", layer,
                    {"step": step, "weights_non_finite": f"{len(bad)} of {len(params)}" if len(at) else "not probed",
                     "loss_before": [float(v) for v in obs.losses[obs.loss_steps < step][-3:]]}, step=step)]


def before(obs: Observations, step: int) -> Observations:
    """``obs`` up to (not including) optimizer step ``step``: what led to a divergence."""
    keep, keep_loss = obs.steps < step, obs.loss_steps < step
    return dataclasses.replace(obs, steps=obs.steps[keep], probes=_rows(obs.probes, keep),
                               losses=obs.losses[keep_loss], loss_steps=obs.loss_steps[keep_loss])


def _rows(tree, keep: np.ndarray):
    """Rows ``keep`` of every array of a nested dict / list of probes."""
    if isinstance(tree, dict):
        return {k: _rows(v, keep) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rows(v, keep) for v in tree]
    return np.asarray(tree)[keep]


def median_update_ratio(obs: Observations) -> float | None:
    """The median log10 update:data over the weights and the later half of the window (None: not measured)."""
    params = obs.probes.get("params", {})
    ratios = [np.log10(np.maximum(params[w]["update_std"], 1e-30) / np.maximum(params[w]["std"], 1e-30))
              [len(params[w]["std"]) // 2:] for w in obs.weights if w in params]
    return float(np.median(np.concatenate(ratios))) if ratios else None


def check_outputs(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """``outputs_are_probabilities`` (critical) when a classifier's outputs all lie in [0, 1] and sum to 1 within
    ``t.probability_sum``: a softmax before ``cross_entropy``, which takes logits."""
    out = obs.probes.get("outputs")
    if not obs.classification or out is None or not len(out["min"]):
        return []
    lo, hi, err = float(np.min(out["min"])), float(np.max(out["max"])), float(np.median(out["sum_error"]))
    if lo >= 0 and hi <= 1 and err < t.probability_sum:
        return [finding("outputs_are_probabilities", "critical", None,
                        {"outputs_range": [lo, hi], "mean |sum - 1|": err,
                         "threshold": f"in [0, 1], summing to 1 within {t.probability_sum}"}, step=int(obs.steps[0]))]
    return []


def check_loss(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """On at least ``t.min_steps`` finite losses, smoothed by a debiased moving average (beta 0.9):
    ``not_learning`` when the loss stays above ``t.chance_margin`` x chance (the label frequencies' loss when
    known) and has fallen less than ``t.learning_drop`` of the way to zero; else ``oscillating_loss`` when it climbs
    back more than ``t.oscillation`` of its fall and above ``1 + t.oscillation_level`` x its lowest level."""
    losses = obs.losses[np.isfinite(obs.losses)]
    if len(losses) < t.min_steps:
        return []
    out = []
    smooth = _smooth(losses)
    start, end = float(np.mean(losses[:3])), float(np.mean(smooth[-max(3, len(smooth) // 10):]))
    chance = obs.prior_chance if obs.prior_chance is not None else obs.chance
    if chance is not None and end > t.chance_margin * chance and end > (1 - t.learning_drop) * start:
        ratio = median_update_ratio(obs)
        slow = ratio is not None and ratio < t.update_ratio_low + 1
        evidence = {"loss_start": start, "loss_now": end, "chance": chance,
                    "threshold": f"above {t.chance_margin:.0%} of chance and < {t.learning_drop:.0%} fallen",
                    "log10_update_data": ratio, "likely_cause": "lr too low" if slow else "labels or loss"}
        remedy = None if slow else ("the weights do move: check that each label belongs to its input (not "
                                    "shuffled apart) and that the loss gets logits (no softmax before cross_entropy)")
        out.append(finding("not_learning", "warning", None, evidence, remedy=remedy))
        return out
    low = np.minimum.accumulate(smooth)
    fallen = smooth[0] - low
    rise = smooth - low
    worst = int(np.argmax(rise))
    if fallen[worst] > 0 and rise[worst] > t.oscillation * fallen[worst] and rise[worst] > t.oscillation_level * \
            low[worst] and worst > len(smooth) // 10:
        out.append(finding("oscillating_loss", "warning", None,
                           {"smoothed_low": float(low[worst]), "climbed_to": float(smooth[worst]),
                            "threshold": f"climbs back > {t.oscillation:.0%} of the fall"},
                           step=int(obs.loss_steps[np.isfinite(obs.losses)][worst])))
    return out


def check_overfitting(obs: Observations, t: HealthThresholds) -> list[Finding]:
    """``overfitting`` over the last three epochs with a validation pass: the valid loss rose twice, the training
    loss fell, and ``(valid - train) / train`` exceeds ``t.overfit_gap``."""
    rows = [r for r in obs.epochs if "valid_loss" in r and "train_loss" in r]
    if len(rows) < 3:
        return []
    a, b, c = rows[-3:]
    rising = c["valid_loss"] > b["valid_loss"] > a["valid_loss"]
    falling = c["train_loss"] < a["train_loss"]
    gap = (c["valid_loss"] - c["train_loss"]) / max(abs(c["train_loss"]), 1e-12)
    if rising and falling and gap > t.overfit_gap:
        return [finding("overfitting", "warning", None,
                        {"valid_loss": [a["valid_loss"], b["valid_loss"], c["valid_loss"]],
                         "train_loss": [a["train_loss"], b["train_loss"], c["train_loss"]], "gap": gap,
                         "threshold": f"valid rising 2 epochs, gap > {t.overfit_gap:.0%}"})]
    return []


def diagnose_observations(obs: Observations, thresholds: HealthThresholds | None = None
                          ) -> tuple[list[Finding], list[str]]:
    """Every rule on ``obs``: the findings, and what could not be checked."""
    t = thresholds or HealthThresholds()
    not_checked = []
    if obs.integer_inputs and not obs.probes.get("inputs"):
        not_checked.append("input normalization: the inputs are integers (ids, codes)")
    if not obs.activations:
        not_checked.append("dead / saturated units and activation scale: no activation found among the model's "
                           "module outputs (e.g. inside lax.scan)")
    if obs.chance is None:
        not_checked.append("initial loss and learning: no chance level for this loss")
    if not obs.epochs:
        not_checked.append("overfitting: no finished epoch with a validation pass")
    findings = _rules(obs, t)
    if len(obs.losses) >= 2 * PREFIX:  # when each problem first showed: the earliest is the likely cause
        start = int(obs.loss_steps[0])
        first: dict = {}
        for n in range(PREFIX, len(obs.losses), PREFIX):
            for f in _rules(before(obs, start + n), t):
                first.setdefault((f.problem, f.layer), start + n - 1)
        findings = [f if f.step is not None else dataclasses.replace(f, step=first.get((f.problem, f.layer)))
                    for f in findings]
    return findings, not_checked


PREFIX = 10  # steps: the windows on which the rules are run again to date each finding


def _rules(obs: Observations, t: HealthThresholds) -> list[Finding]:
    findings = check_finite(obs)
    if findings:  # after NaNs the numbers mean nothing: look at the steps that led there
        obs = before(obs, findings[0].step)
    # a window between two probed steps (HealthCB measures every 25th) has only losses to go by
    probed = (check_inputs, check_outputs, check_activations, check_gradients) if len(obs.steps) else ()
    for rule in (*probed, check_initial_loss, check_loss, check_overfitting):
        findings += rule(obs, t)
    return findings


def unique(findings: Sequence[Finding], seen: set) -> list[Finding]:
    """The findings whose (problem, layer) is not in ``seen`` (which is updated): each reported once."""
    new = [f for f in findings if (f.problem, f.layer) not in seen]
    seen.update((f.problem, f.layer) for f in new)
    return new
