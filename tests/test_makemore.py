"""makemore part 3 (jaxlearn.makemore): modules, init, training on the core Learner, sampling, diagnostics."""

import os
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.trees import named_leaves
from jaxlearn import data, optim
from jaxlearn import makemore as mm
from jaxlearn.data import ArrayDataset
from jaxlearn.nn import calibrate_batchnorm
from jaxlearn.trees import copy_state


@pytest.fixture(scope="module")
def splits():
    path = os.environ.get(data.NAMES_ENV)
    if path is None and not (data.cache_dir() / "names.txt").is_file():
        pytest.skip(f"makemore's names.txt not available: set {data.NAMES_ENV} to its path")
    vocab, sp = data.names_splits(data.load_names(path))
    return vocab, sp


def split_loss(learn, X, Y) -> float:
    """A whole split's mean loss in eval mode (BatchNorm with its running statistics)."""
    return learn.evaluate(ArrayDataset(X, Y, 4096))["loss"]


def untrained(model):
    """A Learner at the model's init (the lecture's seed), no fit."""
    return mm.lecture_learner(model, data.names_loaders(32, batches_per_epoch=1))


def _np_hist(x, bins, r):
    return np.histogram(np.asarray(x, np.float64).ravel(), bins=bins, range=(-r, r))[0]


# ------------------------------------------------------------------------------------------ modules

def test_parameter_counts():
    assert mm.count_params(mm.init(mm.MLP())) == 11_897
    assert mm.count_params(mm.init(mm.MLP(batchnorm=True))) == 12_097
    assert mm.count_params(mm.init(mm.DeepMLP())) == 46_497
    assert mm.count_params(mm.init(mm.DeepMLP(batchnorm=True))) == 47_024
    v = mm.init(mm.DeepMLP(batchnorm=True))
    assert "bias" not in v["params"]["Linear_0"]  # no bias before BatchNorm
    chex.assert_trees_all_equal(v["params"]["BatchNorm1d_5"]["gamma"], jnp.full((27,), 0.1))  # gamma *= 0.1


def test_explicit_inits():
    v = mm.init(mm.LADDER[3].model)["params"]
    assert abs(float(v["W1"].std()) - mm.KAIMING_TANH) < 0.1 * mm.KAIMING_TANH
    chex.assert_trees_all_equal(v["b2"], jnp.zeros(27))
    assert abs(float(v["W2"].std()) - 0.01) < 0.002
    deep = mm.init(mm.DeepMLP())["params"]
    assert abs(float(deep["Linear_1"]["weight"].std()) - (5 / 3) / 10) < 0.01  # randn / sqrt(100) * 5/3
    assert abs(float(deep["Linear_5"]["weight"].std()) - 0.1 / 10) < 0.001   # last layer * 0.1


def test_initial_loss(splits):
    _, sp = splits
    X, Y = (a[:20_000] for a in sp["train"])
    fixed = mm.LADDER[1].model  # W2 * 0.01, b2 * 0
    assert abs(split_loss(untrained(fixed), X, Y) - mm.EXPECTED_INIT_LOSS) < 0.05
    kaiming = mm.LADDER[3].model
    assert abs(split_loss(untrained(kaiming), X, Y) - mm.EXPECTED_INIT_LOSS) < 0.05
    original = mm.LADDER[0].model  # randn everywhere: confidently wrong, the lecture's 27
    assert split_loss(untrained(original), X, Y) > 15


def test_batchnorm1d_torch_semantics():
    x = np.random.default_rng(0).normal(2.0, 3.0, (32, 5)).astype(np.float32)
    bn = mm.BatchNorm1d()
    v = bn.init(jax.random.key(0), x)
    y, mut = bn.apply(v, x, train=True, mutable=["batch_stats"])
    var_b, var_u = x.var(0), x.var(0, ddof=1)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(var_b + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mut["batch_stats"]["running_mean"], 0.1 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(mut["batch_stats"]["running_var"], 0.9 + 0.1 * var_u, rtol=1e-5)
    y_eval = bn.apply({"params": v["params"], **mut}, x, train=False)
    rm, rv = 0.1 * x.mean(0), 0.9 + 0.1 * var_u
    np.testing.assert_allclose(y_eval, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)


def test_deep_net_calibrates_like_every_batchnorm():
    """calibrate_batchnorm fills BatchNorm1d's PyTorch layout: each layer's running mean and *unbiased* var
    are those of its whole input, computed with the layers before it already calibrated."""
    model = mm.DeepMLP(batchnorm=True, n_layers=2, n_hidden=16)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 27, (500, 3)), jnp.int32)
    variables = mm.init(model)
    cal = calibrate_batchnorm(model, variables, [x[:300], x[300:]], train=False)  # two batches, merged exactly
    p = cal["params"]
    h = np.asarray(p["C"])[np.asarray(x)].reshape(len(x), -1) @ np.asarray(p["Linear_0"]["weight"])
    np.testing.assert_allclose(cal["batch_stats"]["BatchNorm1d_0"]["running_mean"], h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cal["batch_stats"]["BatchNorm1d_0"]["running_var"], h.var(0, ddof=1), rtol=1e-4)
    bn0 = cal["batch_stats"]["BatchNorm1d_0"]
    g, b = np.asarray(p["BatchNorm1d_0"]["gamma"]), np.asarray(p["BatchNorm1d_0"]["beta"])
    h1 = np.tanh(g * (h - bn0["running_mean"]) / np.sqrt(bn0["running_var"] + 1e-5) + b) @ np.asarray(
        p["Linear_1"]["weight"])
    np.testing.assert_allclose(cal["batch_stats"]["BatchNorm1d_1"]["running_var"], h1.var(0, ddof=1), rtol=1e-3)


def test_batchnorm1d_matches_torch():
    torch = pytest.importorskip("torch", reason="torch (the bench extra) is not installed")
    x = np.random.default_rng(0).normal(2.0, 3.0, (32, 5)).astype(np.float32)
    bn = mm.BatchNorm1d()
    v = bn.init(jax.random.key(0), x)
    y, mut = bn.apply(v, x, train=True, mutable=["batch_stats"])
    tbn = torch.nn.BatchNorm1d(5)
    ty = tbn(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mut["batch_stats"]["running_var"], tbn.running_var.numpy(), rtol=1e-5)


# ------------------------------------------------------------------------------------------ training

def test_short_training_lowers_loss_and_steps_per_call_do_not_matter(splits):
    _, sp = splits
    model = mm.LADDER[3].model
    dls = data.names_loaders(32, batches_per_epoch=500)
    a, b = mm.lecture_learner(model, dls, seed=1, steps_per_call=500), mm.lecture_learner(model, dls, seed=1,
                                                                                       steps_per_call=250)
    before = split_loss(a, *sp["valid"])
    la, lb = mm.train(a, 1000), mm.train(b, 1000)
    chex.assert_trees_all_close(a.state.params, b.state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    assert la.shape == (1000,) and int(a.state.step) == 1000
    after = split_loss(a, *sp["valid"])
    assert after < before - 0.5, (before, after)
    assert la[-100:].mean() < la[:10].mean() - 0.5
    with pytest.raises(ValueError, match="multiple of the batches per epoch"):
        mm.train(a, 750)


def test_lecture_lr_schedule():
    np.testing.assert_allclose(mm.lecture_lr(jnp.array([0, 99_999, 100_000, 150_000])), [0.1, 0.1, 0.01, 0.01],
                               rtol=1e-6)
    tx = mm.lecture_learner(mm.LADDER[3].model, data.names_loaders(32, batches_per_epoch=2)).state.tx
    p, g = {"w": jnp.ones(3)}, {"w": jnp.ones(3)}
    for count, lr in ((0, 0.1), (99_999, 0.1), (100_000, 0.01), (150_000, 0.01)):
        state = jax.tree.map(lambda s: jnp.asarray(count, s.dtype) if jnp.ndim(s) == 0 else s, tx.init(p))
        np.testing.assert_allclose(tx.update(g, state, p)[0]["w"], -lr, rtol=1e-6)  # the step counter picks it


def test_batchnorm_running_stats_approach_calibrated(splits):
    _, sp = splits
    Xtr, Ytr = sp["train"]
    # the lecture's hand-written BatchNorm; momentum 0.01 rather than its 0.001 so that 3,000 steps suffice
    model = mm.MLP(w1_scale=mm.KAIMING_TANH, w2_scale=0.01, b2_scale=0.0, batchnorm=True, bn_momentum=0.01)
    learn = mm.lecture_learner(model, data.names_loaders(32, batches_per_epoch=3000), seed=2, steps_per_call=3000)
    mm.train(learn, 3000)
    variables = mm.variables_of(learn)
    running = variables["batch_stats"]
    cal = calibrate_batchnorm(model, variables, [Xtr], train=False)["batch_stats"]
    emb = np.asarray(variables["params"]["C"])[Xtr].reshape(len(Xtr), -1)
    hpre = emb @ np.asarray(variables["params"]["W1"])
    np.testing.assert_allclose(cal["bnmean_running"][0], hpre.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(cal["bnstd_running"][0], hpre.std(0, ddof=1), rtol=1e-3)
    start_err = np.abs(np.asarray(cal["bnstd_running"]) - 1.0).mean()  # running std starts at 1
    err_std = np.abs(np.asarray(running["bnstd_running"]) - np.asarray(cal["bnstd_running"])).mean()
    err_mean = np.abs(np.asarray(running["bnmean_running"]) - np.asarray(cal["bnmean_running"])).mean()
    scale = np.asarray(cal["bnstd_running"]).mean()
    assert err_std < 0.1 * scale and err_mean < 0.1 * scale and err_std < 0.2 * start_err, (err_std, err_mean)
    l_run = split_loss(learn, *sp["valid"])
    learn.replace_state(model_state={"batch_stats": cal})
    l_cal = split_loss(learn, *sp["valid"])
    assert abs(l_run - l_cal) < 0.02, (l_run, l_cal)


def test_sampling_is_deterministic(splits):
    vocab, _ = splits
    model = mm.LADDER[3].model
    v = mm.init(model)
    a = mm.sample(model, v, vocab, n=10, seed=3)
    b = mm.sample(model, v, vocab, n=10, seed=3)
    c = mm.sample(model, v, vocab, n=10, seed=4)
    assert a == b and a != c and len(a) == 10
    assert all("." not in s and set(s) <= set(vocab.itos[1:]) for s in a)


# -------------------------------------------------------------------------------------- diagnostics

@pytest.mark.parametrize("batchnorm", [False, True])
def test_diagnostics_equal_numpy(batchnorm):
    model = mm.DeepMLP(n_hidden=16, n_layers=2, batchnorm=batchnorm)
    v = mm.init(model, 0)
    rng = np.random.default_rng(0)
    xb = jnp.asarray(rng.integers(0, 27, (32, 3)), jnp.int32)
    yb = jnp.asarray(rng.integers(0, 27, (32,)), jnp.int32)
    d = mm.diagnose(model, v, xb, yb, return_tensors=True)
    t = jax.device_get(d["tensors"])
    assert sorted(d["activations"]) == ["Tanh_0", "Tanh_1"] == sorted(d["out_grads"])
    for name, s in d["activations"].items():
        a = np.asarray(t["acts"][name], np.float64)
        np.testing.assert_allclose(s["mean"], a.mean(), atol=1e-6)
        np.testing.assert_allclose(s["std"], a.std(), rtol=1e-5)
        np.testing.assert_allclose(s["saturated"], (np.abs(a) > 0.97).mean(), atol=1e-7)
        r = np.abs(a).max()
        np.testing.assert_allclose(s["range"], r, rtol=1e-6)
        np.testing.assert_allclose(s["hist"], _np_hist(a, mm.HIST_BINS, float(s["range"])), atol=1)
        assert s["hist"].sum() == a.size
    for name, s in d["out_grads"].items():
        g = np.asarray(t["out_grads"][name], np.float64)
        np.testing.assert_allclose(s["std"], g.std(), rtol=1e-5)
        np.testing.assert_allclose(s["hist"], _np_hist(g, mm.HIST_BINS, float(s["range"])), atol=1)
    named_p = {"C": v["params"]["C"], **{f"Linear_{i}/weight": v["params"][f"Linear_{i}"]["weight"]
                                         for i in range(3)}}
    assert sorted(d["weight_grads"]) == sorted(named_p)
    grads = t["grads"]
    for name, s in d["weight_grads"].items():
        g = np.asarray(grads["C"] if name == "C" else grads[name.split("/")[0]]["weight"], np.float64)
        p = np.asarray(named_p[name], np.float64)
        np.testing.assert_allclose(s["grad_data"], g.std() / p.std(), rtol=1e-4)
        np.testing.assert_allclose(s["std"], g.std(), rtol=1e-5)

    # the perturbation gradients are the gradients of the layer outputs; they leave the weight gradients alone
    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, xb, train=True,
                                mutable=["batch_stats"])
        return mm.mean_cross_entropy(logits, yb)
    chex.assert_trees_all_close(grads, jax.grad(loss)(v["params"]), rtol=1e-5, atol=1e-7)
    if not batchnorm:  # d loss / d h_last = (softmax - onehot) / B @ W_out^T
        h = np.asarray(t["acts"]["Tanh_1"], np.float64)
        w, b = (np.asarray(v["params"]["Linear_2"][k], np.float64) for k in ("weight", "bias"))
        logits = h @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(32), np.asarray(yb)] -= 1
        np.testing.assert_allclose(t["out_grads"]["Tanh_1"], p / 32 @ w.T, rtol=1e-4, atol=1e-8)


def test_update_ratios_and_diagnostics_inside_the_training_step(splits):
    _, sp = splits
    Xtr, Ytr = (a[:96] for a in sp["train"])
    model = mm.DeepMLP(n_hidden=16, n_layers=2)
    lr = 0.1
    ds = data.ArrayDataset(Xtr, Ytr, 32)  # unshuffled: step 0 trains on the first 32 examples
    learn = mm.lecture_learner(model, data.DataLoaders(ds, ds), seed=5, steps_per_call=3,
                               optimizer=partial(optim.sgd, learning_rate=lr))
    v0 = copy_state(learn.state.params)
    ratios, diag = mm.UpdateRatioCB(), mm.DiagnosticsCB()
    learn.fit(1, valid=False, callbacks=[ratios, diag])
    # recompute step 0 by hand: the same minibatch, plain jax.grad, p - lr * g
    xb, yb = jnp.asarray(Xtr[:32]), jnp.asarray(Ytr[:32])

    def loss(params):
        return mm.mean_cross_entropy(model.apply({"params": params}, xb, train=True), yb)
    l0, g = jax.value_and_grad(loss)(v0)
    d0 = diag.at(0)
    np.testing.assert_allclose(d0["loss"], l0, rtol=1e-5)
    reference = mm.diagnose(model, {"params": v0, "batch_stats": {}}, xb, yb)  # the standalone function
    # a value within an ulp of a bin edge may land in the neighbouring bin (two programs, two roundings), and a
    # gradient that is zero up to rounding (the rows of C no example used) on either side of the edge at 0: the
    # histograms must hold the same counts up to such moves; every other number must match
    hists = lambda tree: {k: v for k, v in named_leaves(tree).items() if k.endswith("hist")}  # noqa: E731
    others = lambda tree: {k: v for k, v in named_leaves(tree).items() if not k.endswith("hist")}  # noqa: E731
    chex.assert_trees_all_close(others(d0), others(reference), rtol=1e-4, atol=1e-6)
    for name, h in hists(d0).items():
        got, ref = (np.asarray(a, np.float64) for a in (h, hists(reference)[name]))
        middle = len(ref) // 2  # the bins [-w, 0) and [0, w) taken as one
        got, ref = (np.concatenate([a[:middle - 1], [a[middle - 1] + a[middle]], a[middle + 1:]]) for a in (got, ref))
        assert got.sum() == ref.sum() and np.abs(np.cumsum(got) - np.cumsum(ref)).max() <= 2, name
    p1 = jax.tree.map(lambda p, g_: p - lr * g_, v0, g)
    for name, (u, p) in {"C": (lr * g["C"], p1["C"]),
                         "Linear_1/weight": (lr * g["Linear_1"]["weight"], p1["Linear_1"]["weight"])}.items():
        expected = np.log10(np.asarray(u, np.float64).std() / np.asarray(p, np.float64).std())
        np.testing.assert_allclose(ratios.ratios[name][0], expected, rtol=1e-4)
    gd = d0["weight_grads"]["Linear_1/weight"]["grad_data"]
    np.testing.assert_allclose(gd, np.std(np.asarray(g["Linear_1"]["weight"])) /
                               np.std(np.asarray(v0["Linear_1"]["weight"])), rtol=1e-4)
    assert all(np.isfinite(r).all() and r.shape == (3,) for r in ratios.ratios.values())


def test_run_diagnostics_keeps_the_first_and_last_step():
    res = mm.run_diagnostics(mm.DeepMLP(n_hidden=16, n_layers=2), data.names_loaders(32), steps=3, lr=0.1, seed=5)
    assert res.diagnostic_steps == [0, 2] and len(res.losses) == 3 and len(res.diagnostics) == 2
    assert sorted(res.diagnostics[-1]["activations"]) == ["Tanh_0", "Tanh_1"]


def test_lecture_batchnorm_closed_form_backward():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(1.0, 2.0, (32, 7)), jnp.float32)
    gain = jnp.asarray(rng.normal(1.0, 0.3, (1, 7)), jnp.float32)
    bias = jnp.asarray(rng.normal(0.0, 0.3, (1, 7)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(32, 7)), jnp.float32)

    def plain(x, g, b):
        return g * (x - x.mean(0, keepdims=True)) / x.std(0, ddof=1, keepdims=True) + b
    out, mean, std = mm.lecture_batchnorm(x, gain, bias)
    np.testing.assert_allclose(out, plain(x, gain, bias), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[0], np.asarray(x).std(0, ddof=1), rtol=1e-5)
    g_ours = jax.grad(lambda *a: (jnp.tanh(mm.lecture_batchnorm(*a)[0]) * w).sum(), argnums=(0, 1, 2))(x, gain, bias)
    g_auto = jax.grad(lambda *a: (jnp.tanh(plain(*a)) * w).sum(), argnums=(0, 1, 2))(x, gain, bias)
    chex.assert_trees_all_close(g_ours, g_auto, rtol=1e-4, atol=1e-5)
