"""The training-health report: each rule on synthetic streams (fires above its threshold, silent below), the
activation map of models written with plain functions, diagnose() leaving the Learner bitwise as it was, the
report's JSON and figure, HealthCB under the transfer guard, and broken / healthy pairs end to end."""

import dataclasses
import json
from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import makemore as mm, text
from jaxlearn.callbacks import BatchTransformCB, HealthCB, HealthReport, HealthThresholds
from jaxlearn.callbacks.health_probe import ActivationLayer, activation_map
from jaxlearn.callbacks.health_report import PROBLEMS, finding
from jaxlearn.callbacks.health_rules import Observations, diagnose_observations
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu
from jaxlearn.trees import copy_state
from jaxlearn.vision import get_model

T = HealthThresholds()


# ------------------------------------------------------------------------------------- rules on streams

def obs(n: int = 60, loss=None, **kw) -> Observations:
    """A healthy-looking stream of ``n`` probed steps, with what the caller overrides."""
    steps = np.arange(n)
    losses = np.linspace(2.3, 0.8, n) if loss is None else np.asarray(loss, float)
    probes = {"inputs": [{"mean": np.zeros(n), "std": np.ones(n), "min": -np.ones(n) * 2, "max": np.ones(n) * 2}],
              "activations": {}, "params": {}, "grad_norm": np.ones(n), "hidden_grads": {}}
    base = Observations(steps, probes, losses, steps, float(np.log(10)), float(np.log(10)), {}, [])
    return dataclasses.replace(base, **kw)


def problems(o: Observations) -> set:
    return {f.problem for f in diagnose_observations(o, T)[0]}


def with_probes(o: Observations, **probes) -> Observations:
    return dataclasses.replace(o, probes={**o.probes, **probes})


def test_a_healthy_stream_is_silent():
    assert problems(obs()) == set()


@pytest.mark.parametrize("mean, std, found", [(0.1, 1.1, False), (73.0, 90.0, True), (0.0, 0.004, True),
                                              (1.5, 1.0, True)])
def test_input_normalization(mean, std, found):
    n = 60
    o = with_probes(obs(), inputs=[{"mean": np.full(n, mean), "std": np.full(n, std), "min": np.zeros(n),
                                    "max": np.full(n, mean + 3 * std)}])
    assert ("unnormalized_input" in problems(o)) == found


@pytest.mark.parametrize("first, found", [(2.5, False), (3.3, False), (4.0, True), (27.0, True)])
def test_initial_loss_against_chance(first, found):
    loss = np.linspace(first, 0.8, 60)
    assert ("high_initial_loss" in problems(obs(loss=loss))) == found
    critical = [f for f in diagnose_observations(obs(loss=loss), T)[0] if f.problem == "high_initial_loss"]
    assert not found or critical[0].severity == ("critical" if first > 3 * np.log(10) else "warning")


def test_initial_loss_is_only_read_at_init():
    late = obs(loss=np.linspace(27.0, 0.8, 60))
    late = dataclasses.replace(late, loss_steps=late.loss_steps + 500, steps=late.steps + 500)
    assert "high_initial_loss" not in problems(late)


def relu_layer(n: int, units: int, dead: int) -> dict:
    fires = np.full((n, units), 0.5)
    fires[:, :dead] = 0.0
    return {"fires": fires, "saturated": np.zeros((n, units)), "mean": np.ones(n), "std": np.ones(n)}


@pytest.mark.parametrize("dead, found", [(0, False), (5, False), (12, True), (30, True)])
def test_dead_units_are_judged_per_unit(dead, found):
    o = dataclasses.replace(with_probes(obs(), activations={"Dense_0": relu_layer(60, 32, dead)}),
                            activations={"Dense_0": ActivationLayer("relu", "pre")})
    assert ("dead_units" in problems(o)) == found


def test_a_half_silent_relu_layer_is_not_dead():
    """Half of a healthy ReLU layer's activations are zero: judged by unit, that is no dead unit."""
    layer = relu_layer(60, 32, 0)
    layer["fires"][:] = 0.02  # every unit fires rarely, but fires
    o = dataclasses.replace(with_probes(obs(), activations={"Dense_0": layer}),
                            activations={"Dense_0": ActivationLayer("relu", "pre")})
    assert "dead_units" not in problems(o)


def _tanh_layers(shares):
    layers = {f"Tanh_{i}": {"fires": np.ones((60, 8)), "saturated": np.full((60, 8), share), "mean": np.zeros(60),
                            "std": np.full(60, 0.6)} for i, share in enumerate(shares)}
    return dataclasses.replace(with_probes(obs(), activations=layers),
                               activations={n: ActivationLayer("tanh", "post") for n in layers})


@pytest.mark.parametrize("share, found", [(0.05, False), (0.2, False), (0.5, False), (0.6, True), (0.9, True)])
def test_saturation_of_one_layer(share, found):
    assert ("saturated_units" in problems(_tanh_layers([share]))) == found


@pytest.mark.parametrize("shares, found", [([0.4, 0.4, 0.4], True), ([0.5, 0.05, 0.05], False),
                                           ([0.3, 0.3, 0.3], False), ([0.7, 0.05, 0.05], True)])
def test_saturation_across_a_deep_net(shares, found):
    """Most layers at 35%: the gain is too large (makemore's deep net at gain 3); one first layer at 50%, seeing
    the raw inputs, is not on its own."""
    assert ("saturated_units" in problems(_tanh_layers(shares))) == found


@pytest.mark.parametrize("last_std, found", [(0.8, None), (0.01, "vanishing_activations"),
                                             (50.0, "exploding_activations")])
def test_activation_scale_layer_over_layer(last_std, found):
    stds = [1.0, 0.9, last_std]
    acts = {f"Dense_{i}": {**relu_layer(60, 8, 0), "std": np.full(60, s)} for i, s in enumerate(stds)}
    o = dataclasses.replace(with_probes(obs(), activations=acts),
                            activations={n: ActivationLayer("relu", "post") for n in acts})
    found_now = problems(o) & {"vanishing_activations", "exploding_activations"}
    assert found_now == ({found} if found else set())


def weights(n: int, grad_rms: list[float], update_std: float = 1e-3, finite=True) -> dict:
    return {f"Dense_{i}/kernel": {"grad_rms": np.full(n, g), "rms": np.ones(n), "std": np.ones(n),
                                  "update_std": np.full(n, update_std), "finite": np.full(n, finite)}
            for i, g in enumerate(grad_rms)}


@pytest.mark.parametrize("first_grad, found", [(1e-2, False), (1e-6, True)])
def test_vanishing_gradients(first_grad, found):
    params = weights(60, [first_grad, 1e-2, 1e-2])
    o = dataclasses.replace(with_probes(obs(), params=params), weights=list(params))
    assert ("vanishing_gradients" in problems(o)) == found


@pytest.mark.parametrize("update, found", [(1e-3, None), (0.3, "update_ratio_high"), (1e-7, "update_ratio_low")])
def test_update_to_data_ratio(update, found):
    params = weights(60, [1e-2, 1e-2], update_std=update)
    o = dataclasses.replace(with_probes(obs(), params=params), weights=list(params))
    assert problems(o) & {"update_ratio_high", "update_ratio_low"} == ({found} if found else set())


def test_the_output_layer_may_move_faster():
    """makemore's last layer starts at W2 * 0.01: its update:data ratio runs ~10x the others' while healthy."""
    params = weights(60, [1e-2, 1e-2], update_std=1e-3)
    params["Dense_1/kernel"]["update_std"][:] = 0.03  # log10 ratio -1.5 on the last layer: allowed
    o = dataclasses.replace(with_probes(obs(), params=params), weights=list(params))
    assert "update_ratio_high" not in problems(o)
    params["Dense_0/kernel"]["update_std"][:] = 0.3  # on the first: too high
    assert "update_ratio_high" in problems(o)


def test_the_first_problem_to_show_comes_first():
    """Dated by re-running the rules on the window's prefixes: a bad lr shows before the units it kills."""
    n = 60
    params = weights(n, [1e-2, 1e-2], update_std=1e-3)
    params["Dense_0/kernel"]["update_std"][:] = 0.3
    layer = relu_layer(n, 32, 0)
    layer["fires"][30:, :20] = 0.0  # units die half-way through
    o = dataclasses.replace(with_probes(obs(n), params=params, activations={"Dense_1": layer}), weights=list(params),
                            activations={"Dense_1": ActivationLayer("relu", "pre")})
    report = HealthReport(diagnose_observations(o, T)[0])
    assert [f.problem for f in report.findings][:2] == ["update_ratio_high", "dead_units"]


def test_exploding_gradients_over_steps_and_through_time():
    norms = np.ones(60)
    norms[40:] = 1e3
    assert "exploding_gradients" in problems(with_probes(obs(), grad_norm=norms))
    grows = np.tile(np.geomspace(100, 1, 8), (60, 1))  # dL/dh_t: 100x larger at t = 0 than at the last step
    flat = np.ones((60, 8))
    assert "exploding_gradients" in problems(with_probes(obs(), hidden_grads={"rnn/h_0": grows}))
    assert "exploding_gradients" not in problems(with_probes(obs(), hidden_grads={"rnn/h_0": flat}))


def test_diverged_names_the_step_and_the_layer():
    loss = np.linspace(2.3, 1.0, 60)
    loss[30:] = np.nan
    params = weights(60, [1e-2, 1e-2, 1e-2])
    params["Dense_2/kernel"]["finite"][28:] = False  # one layer first, two steps before the loss
    o = dataclasses.replace(with_probes(obs(loss=loss), params=params), weights=list(params))
    found = [f for f in diagnose_observations(o, T)[0] if f.problem == "diverged"]
    assert found and found[0].step == 28 and found[0].layer == "Dense_2/kernel" and found[0].severity == "critical"


def test_outputs_that_are_already_probabilities():
    n = 60
    probs = {"min": np.zeros(n), "max": np.full(n, 0.9), "sum_error": np.full(n, 1e-7)}
    logits = {"min": np.full(n, -4.0), "max": np.full(n, 6.0), "sum_error": np.full(n, 3.0)}
    assert "outputs_are_probabilities" in problems(with_probes(obs(), outputs=probs))
    assert "outputs_are_probabilities" not in problems(with_probes(obs(), outputs=logits))
    assert "outputs_are_probabilities" not in problems(dataclasses.replace(with_probes(obs(), outputs=probs),
                                                                          classification=False))


def test_not_learning_and_oscillating():
    assert "not_learning" in problems(obs(loss=np.full(60, 2.3) + 0.01 * np.sin(np.arange(60))))
    assert "not_learning" not in problems(obs())
    dip = np.concatenate([np.linspace(2.3, 0.5, 30), np.linspace(0.5, 2.0, 30)])  # falls, then climbs back
    assert "oscillating_loss" in problems(obs(loss=dip))
    noisy = np.linspace(2.3, 0.4, 60) + 0.02 * np.random.default_rng(0).normal(size=60)  # batch-to-batch noise
    assert "oscillating_loss" not in problems(obs(loss=noisy))


def test_overfitting_at_epoch_ends():
    rising = [{"epoch": i, "train_loss": t, "valid_loss": v} for i, (t, v) in
              enumerate([(1.0, 0.9), (0.6, 0.8), (0.4, 0.85), (0.3, 0.95)])]
    assert "overfitting" in problems(obs(epochs=rising))
    falling = [{"epoch": i, "train_loss": t, "valid_loss": t + 0.05} for i, t in enumerate([1.0, 0.7, 0.5, 0.4])]
    assert "overfitting" not in problems(obs(epochs=falling))


def test_what_cannot_be_seen_is_said():
    _, not_checked = diagnose_observations(dataclasses.replace(obs(), chance=None, prior_chance=None), T)
    text_ = " ".join(not_checked)
    assert "no activation found" in text_ and "chance level" in text_ and "overfitting" in text_


# ------------------------------------------------------------------------------------------ the report

def test_report_round_trips_through_json_and_draws(tmp_path):
    f = finding("dead_units", "critical", "Dense_1", {"dead_units": 0.8, "units": 32})
    report = HealthReport([finding("not_learning", "warning", None, {"loss_now": float("nan")}), f],
                          ["overfitting: no epochs"], {"steps": 10, "loss": {"step": [0, 1], "value": [2.3, 2.2]},
                                                       "dead_units": {"Dense_0": 0.0, "Dense_1": 0.8}})
    assert report.findings[0] is f  # critical first
    assert report.problems == {"dead_units", "not_learning"} and not report.healthy
    data = json.loads(report.to_json())  # strict JSON: the NaN is null, recorded
    assert data["findings"][1]["evidence"]["loss_now"] is None
    back = HealthReport.from_json(report.to_json())
    assert back.problems == report.problems and back.findings[0] == f and back.not_checked == report.not_checked
    assert "[critical] dead_units in Dense_1" in str(report) and "try: " in str(report)
    report.plot(tmp_path / "health.png")
    assert (tmp_path / "health.png").stat().st_size > 0
    assert set(PROBLEMS) >= {"unnormalized_input", "high_initial_loss", "dead_units", "saturated_units",
                             "outputs_are_probabilities",
                             "vanishing_activations", "exploding_activations", "vanishing_gradients",
                             "exploding_gradients", "update_ratio_high", "update_ratio_low", "diverged",
                             "not_learning", "oscillating_loss", "overfitting"}
    with pytest.raises(ValueError, match="unknown problem"):
        finding("bad_vibes", "warning", None, {})


# ----------------------------------------------------------------------------------- reading a model

class PlainFunctions(nn.Module):
    """A user's own model: activations as plain functions, no activation modules."""
    @nn.compact
    def __call__(self, x):
        x = x.reshape(len(x), -1)
        x = nn.relu(nn.Dense(16)(x))
        x = jnp.tanh(nn.Dense(16)(x))
        x = jax.nn.sigmoid(nn.Dense(8)(x))
        return nn.Dense(3)(x)


def _shapes_of_init(model, x, **kw):
    """The model's variables as shapes (activation_map reads a trace: nothing is computed)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kw))


def test_activations_are_read_from_the_model_not_its_class_names():
    x = jnp.ones((2, 4, 4, 1))
    found = activation_map(PlainFunctions().apply, _shapes_of_init(PlainFunctions(), x), x)
    assert found == {"Dense_0": ActivationLayer("relu", "pre"), "Dense_1": ActivationLayer("tanh", "pre"),
                     "Dense_2": ActivationLayer("sigmoid", "pre")}
    cnn, x = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm), jnp.ones((2, 28, 28, 1))
    found = activation_map(cnn.apply, _shapes_of_init(cnn, x, train=False), x, train=False)
    assert set(found) == {f"ConvBlock_{i}/BatchNorm_0" for i in range(4)}  # what GeneralRelu's leaky ReLU takes
    mlp, ids = mm.MLP(), jnp.zeros((2, 3), jnp.int32)
    assert activation_map(mlp.apply, _shapes_of_init(mlp, ids), ids) == {"Tanh_0": ActivationLayer("tanh", "post")}
    rnn, ids = text.StatefulCharRnn(10, "lstm", 4, 8), jnp.zeros((2, 4), jnp.int32)
    assert activation_map(rnn.apply, _shapes_of_init(rnn, ids), ids) == {}  # inside lax.scan: not seen


# -------------------------------------------------------------------------------------- end to end

def learnable(n: int = 512, seed: int = 0):
    """Images whose class (of 3) is readable from their mean brightness."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = (rng.random((n, 4, 4, 1)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)
    return x, y


def learner(model=None, lr=0.05, transform=None, cbs=(), **kw) -> Learner:
    (x, y), (xv, yv) = learnable(), learnable(256, 1)
    dls = DataLoaders.from_arrays((x, y), (xv, yv), 32, **({"transform": transform} if transform else {}))
    return Learner(model or PlainFunctions(), dls, optimizer=partial(optax.sgd, momentum=0.9), lr=lr,
                   callbacks=[BatchTransformCB(normalize(0.5, 0.3)), *cbs], **kw)


def test_diagnose_finds_the_broken_twin_and_not_the_healthy_one():
    healthy = learner().diagnose(60)
    assert healthy.healthy, str(healthy)
    raw = learner(transform=lambda a: a.astype(jnp.float32)).diagnose(60)  # 0..255 floats, normalized as [0, 1]
    assert "unnormalized_input" in raw.problems
    slow = learner(lr=1e-7).diagnose(60)
    assert slow.problems & {"update_ratio_low", "not_learning"}
    fast = learner(lr=50.0).diagnose(60)
    assert fast.problems & {"update_ratio_high", "diverged", "oscillating_loss", "exploding_gradients"}


def test_diagnose_puts_the_learner_back_bitwise():
    learn = learner()
    learn.fit(1)
    before = copy_state(learn.state)
    epochs, callbacks = learn.epochs_done, list(learn.callbacks)
    report = learn.diagnose(20)
    assert report.seen["steps"] == 20
    chex.assert_trees_all_equal(jax.random.key_data(learn.state.rng), jax.random.key_data(before.rng))
    chex.assert_trees_all_equal((learn.state.params, learn.state.opt_state, learn.state.step),
                                (before.params, before.opt_state, before.step))
    assert learn.epochs_done == epochs and learn.callbacks == callbacks


def test_health_cb_checks_during_a_fit_without_a_transfer_per_step():
    cb = HealthCB(every=5, first=5, check_after=20)
    learn = learner(lr=1e-7, cbs=[cb])
    with jax.transfer_guard("disallow"):
        learn.fit(3)
    assert cb.report.problems & {"update_ratio_low", "not_learning"}
    keys = [(f.problem, f.layer) for f in cb.findings]
    assert len(keys) == len(set(keys))  # each finding reported once, though checked at every epoch end


def test_health_cb_can_stop_the_fit_at_a_critical_finding():
    cb = HealthCB(every=1, first=5, check_after=10, stop_on_critical=True, verbose=False)
    learn = learner(transform=lambda a: a.astype(jnp.float32), cbs=[cb])
    learn.fit(5)
    assert learn.epochs_done < 5 and any(f.severity == "critical" for f in cb.findings)


def test_a_second_fit_checked_between_probed_steps_runs_the_loss_rules_only():
    """HealthCB probes the first 10 steps of the run and then every 25th: a second fit's early check dates its
    findings on windows that may hold no probed step, which must not fail."""
    cb = HealthCB(every=25, first=10, check_after=None, verbose=False)
    learn = learner(cbs=[cb])
    learn.fit(2)  # 32 steps: the next fit starts at step 32; its first 10-step window has no probed step (50)
    learn.fit(2)
    report = cb.report
    assert report.seen["steps"] == 32 and report.seen["probed_steps"] == 1
