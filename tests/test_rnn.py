"""Character RNNs of fast.ai 2018 lessons 6–7 (jaxlearn.text): models, cells vs flax, the stateful carry,
diagnostics, sampling and a short training run."""

import os
from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import text as T
from jaxlearn.text import cells as text_cells, models as text_models
from jaxlearn.losses import cross_entropy
from jaxlearn.step import CARRY

V, F, H, B, BPTT = 20, 6, 12, 3, 5  # tiny: vocab, n_fac, n_hidden, batch, bptt
# RBG keys: XLA's own bit generator compiles in a fraction of threefry's time on CPU (these tests are
# compile-bound); the models see ordinary PRNG keys either way.
KEY = jax.random.key(0, impl="unsafe_rbg")
VOCAB = T.CharVocab.from_text("abcdefghijklmnopqrs")  # 19 characters + padding = V


def _ids(seed, shape):
    return np.random.default_rng(seed).integers(1, V, shape, dtype=np.int32)


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------- models

@pytest.mark.parametrize("model, t, out", [
    (T.Char3Model(V, F, H), 3, (B, V)),
    (T.CharLoopModel(V, F, H), 8, (B, V)),
    (T.CharLoopModel(V, F, H, concat=True), 8, (B, V)),
    (T.CharRnn(V, F, H), 8, (B, V)),
    (T.CharSeqRnn(V, F, H), 8, (B, 8, V)),
    (T.StatefulCharRnn(V, "rnn", F, H), BPTT, (B, BPTT, V)),
    (T.StatefulCharRnn(V, "gru", F, H), BPTT, (B, BPTT, V)),
    (T.StatefulCharRnn(V, "lstm", F, H, n_layers=2, dropout=0.5), BPTT, (B, BPTT, V)),
])
def test_output_shapes(model, t, out):
    x = jax.ShapeDtypeStruct((B, t), jnp.int32)  # shapes only: abstract evaluation, nothing is compiled
    variables = jax.eval_shape(lambda x: model.init({"params": KEY, "dropout": KEY}, x), x)
    assert set(variables) <= {"params", CARRY}  # no gates / perturbations collections leak into init
    assert jax.eval_shape(model.apply, variables, x).shape == out
    logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": KEY},
                                                        mutable=[CARRY]), variables, x)
    assert logits.shape == out


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_lesson6_models_are_the_lesson_equations():
    x = np.asarray(_ids(0, (B, 8)))
    char3, loop, cat = T.Char3Model(V, F, H), T.CharLoopModel(V, F, H), T.CharLoopModel(V, F, H, concat=True)
    p3 = char3.init(KEY, x[:, :3])["params"]
    p_cat = cat.init(KEY, x)["params"]
    assert p_cat["l_in"]["kernel"].shape == (H + F, H) and p3["l_in"]["kernel"].shape == (F, H)

    @jax.jit
    def outputs(p3, p_cat):
        return (char3.apply({"params": p3}, x[:, :3]), loop.apply({"params": p3}, x[:, :3]),
                loop.apply({"params": p3}, x), cat.apply({"params": p_cat}, x))
    out3, loop3, loop8, cat8 = outputs(p3, p_cat)

    def lin(p, name, v):
        return v @ p[name]["kernel"] + p[name]["bias"]

    def reference(p, n, concat=False):  # the lesson's forward, in numpy
        p, h = _np(p), np.zeros((B, H))
        for t in range(n):
            e = p["e"]["embedding"][x[:, t]]
            if concat:
                h = np.tanh(lin(p, "l_hidden", np.maximum(lin(p, "l_in", np.concatenate([h, e], 1)), 0)))
            else:
                h = np.tanh(lin(p, "l_hidden", h + np.maximum(lin(p, "l_in", e), 0)))
        return lin(p, "l_out", h)
    np.testing.assert_allclose(out3, reference(p3, 3), atol=1e-5)
    np.testing.assert_allclose(loop3, out3, atol=1e-6)  # Char3Model is the loop unrolled: shared weights
    np.testing.assert_allclose(loop8, reference(p3, 8), atol=1e-5)
    np.testing.assert_allclose(cat8, reference(p_cat, 8, concat=True), atol=1e-5)
    with pytest.raises(ValueError, match="3 characters"):
        jax.eval_shape(lambda: char3.init(KEY, x[:, :4]))


def _simple_rnn_reference(p, x, h):
    """``h_t = tanh(W_i e(c_t) + b + W_h h_{t-1})`` in numpy; returns every h_t, (B, T, H)."""
    p, hs = _np(p), []
    w_i, w_h = p["rnn"]["cell"]["i"], p["rnn"]["cell"]["h"]
    for t in range(x.shape[1]):
        h = np.tanh(p["e"]["embedding"][x[:, t]] @ w_i["kernel"] + w_i["bias"] + h @ w_h["kernel"])
        hs.append(h)
    return np.stack(hs, 1)


def test_char_rnn_and_char_seq_rnn_are_the_loop_through_flax_rnn():
    x = np.asarray(_ids(0, (B, 8)))
    char_rnn, seq = T.CharRnn(V, F, H), T.CharSeqRnn(V, F, H)
    p = char_rnn.init(KEY, x)["params"]
    assert jax.tree.structure(p) == jax.tree.structure(seq.init(KEY, x)["params"])
    hs = _simple_rnn_reference(p, x, np.zeros((B, H)))
    out = _np(p)["l_out"]
    last, every = jax.jit(lambda p: (char_rnn.apply({"params": p}, x), seq.apply({"params": p}, x)))(p)
    np.testing.assert_allclose(last, hs[:, -1] @ out["kernel"] + out["bias"], atol=1e-5)  # h0 = 0, last output
    np.testing.assert_allclose(every, hs @ out["kernel"] + out["bias"], atol=1e-5)  # an output at every step


def test_identity_init_is_the_identity():
    x = _ids(0, (B, 8))
    p = T.CharSeqRnn(V, F, H, identity_init=True).init(KEY, x)["params"]
    chex.assert_trees_all_equal(p["rnn"]["cell"]["h"]["kernel"], jnp.eye(H))
    p0 = T.CharSeqRnn(V, F, H).init(KEY, x)["params"]
    assert not np.allclose(p0["rnn"]["cell"]["h"]["kernel"], np.eye(H))
    np.testing.assert_array_equal(T.identity_init(KEY, (H, H)), np.eye(H))


# ---------------------------------------------------------------------------------------------- cells

@pytest.mark.parametrize("ours, theirs", [(T.RNNCell, nn.SimpleCell), (T.GRUCell, nn.GRUCell),
                                          (T.LSTMCell, nn.LSTMCell)])
def test_cells_equal_flax(ours, theirs):
    xs = _normal(1, (4, B, F))  # 4 random steps
    ref, mine = theirs(H), ours(H)
    carry = ref.initialize_carry(KEY, (B, F))
    chex.assert_trees_all_equal(carry, mine.initialize_carry(KEY, (B, F)))
    carry = jax.tree.map(lambda c: _normal(2, c.shape), carry)  # a random starting state
    params = ref.init(KEY, carry, xs[0])
    # the same names, shapes and init (flax folds the key by parameter path)
    chex.assert_trees_all_close(mine.init(KEY, carry, xs[0]), params, atol=1e-6)
    seq = jnp.swapaxes(xs, 0, 1)
    wrapped = {"params": {"cell": params["params"]}}

    @jax.jit
    def run(params):
        c_ref, c_mine, steps = carry, carry, []
        for x in xs:
            c_ref, y_ref = ref.apply(params, c_ref, x)
            c_mine, y_mine = mine.apply(params, c_mine, x)
            steps.append((c_ref, y_ref, c_mine, y_mine))
        # and over the whole sequence inside flax's RNN
        return steps, (nn.RNN(ours(H)).apply(wrapped, seq, initial_carry=carry),
                       nn.RNN(theirs(H)).apply(wrapped, seq, initial_carry=carry))
    steps, (seq_mine, seq_ref) = run(params)
    for c_ref, y_ref, c_mine, y_mine in steps:
        chex.assert_trees_all_close(y_mine, y_ref, atol=1e-5)
        chex.assert_trees_all_close(c_mine, c_ref, atol=1e-5)
    chex.assert_trees_all_close(seq_mine, seq_ref, atol=1e-5)
    assert not np.allclose(steps[-1][1], steps[0][1])  # the steps really moved


def test_gru_reset_before_is_the_lesson_formula():
    x, h = _normal(3, (B, F)), _normal(4, (B, H))
    cell = T.GRUCell(H, reset_after=False)
    p = cell.init(KEY, h, x)["params"]
    sig = jax.nn.sigmoid

    def lin(name, v):
        return v @ p[name]["kernel"] + p[name].get("bias", 0.0)
    r = sig(lin("ir", x) + lin("hr", h))
    z = 1 - sig(lin("iz", x) + lin("hz", h))
    h_tilde = jnp.tanh(lin("in", x) + lin("hn", r * h))  # U(r ⊙ h)
    chex.assert_trees_all_close(cell.apply({"params": p}, h, x)[0], (1 - z) * h + z * h_tilde, atol=1e-5)
    assert not np.allclose(T.GRUCell(H).apply({"params": p}, h, x)[0], (1 - z) * h + z * h_tilde, atol=1e-5)


# ------------------------------------------------------------------------------------- stateful carry

@pytest.mark.parametrize("cell, n_layers", [("rnn", 1), ("lstm", 2)])  # the GRU's carry is the RNN's
def test_carry_continues_across_batches_and_cuts_the_gradient(cell, n_layers):
    model = T.StatefulCharRnn(V, cell, F, H, n_layers=n_layers)
    xk, xk1 = _ids(3, (B, BPTT)), _ids(4, (B, BPTT))
    variables = model.init(KEY, xk)
    params = variables["params"]
    chex.assert_trees_all_equal(variables[CARRY]["h"], model.zero_state(B))
    state = ((B, H), (B, H)) if cell == "lstm" else (B, H)  # (c, h) for the LSTM
    assert jax.tree.map(jnp.shape, variables[CARRY]["h"]) == (state,) * n_layers
    h_rand = jax.tree.map(lambda a: _normal(5, a.shape), model.zero_state(B))

    def loss_k1(params_k, h_k):  # batch k+1's loss, batch k run with its own params copy and initial state
        _, carried = model.apply({"params": params_k, CARRY: {"h": h_k}}, xk, mutable=[CARRY])
        logits = model.apply({"params": params, **carried}, xk1)
        return cross_entropy(logits, xk).mean()

    def loss_uncut(h_k):  # the second half of one 2·bptt window: no cut in between
        logits = model.apply({"params": params, CARRY: {"h": h_k}}, jnp.concatenate([xk, xk1], 1))
        return cross_entropy(logits[:, BPTT:], xk).mean()

    @jax.jit  # one compiled program for all the numbers below
    def run(variables):
        r = {}
        r["out_k"], upd = model.apply(variables, xk, mutable=[CARRY])
        r["out_k1"], r["upd1"] = model.apply({"params": params, **upd}, xk1, mutable=[CARRY])
        r["whole"], r["upd_whole"] = model.apply(variables, jnp.concatenate([xk, xk1], 1), mutable=[CARRY])
        r["fresh_k1"] = model.apply(variables, xk1)
        r["read_k1"] = model.apply({"params": params, **upd}, xk1)  # plain apply: reads, does not write
        r["params_only_k"] = model.apply({"params": params}, xk)  # no carry in the variables: zeros
        r["other_size"] = model.apply({"params": params, **upd}, xk1[:2])  # batch size changed: zeros
        r["other_size_fresh"] = model.apply(variables, xk1[:2])
        r["g_params"], r["g_h"] = jax.grad(loss_k1, argnums=(0, 1))(params, h_rand)
        r["g_uncut"] = jax.grad(loss_uncut)(h_rand)
        return r

    r = run(variables)
    # batch k, then batch k+1 from the stored state == the 2·bptt sequence in one go
    chex.assert_trees_all_close(jnp.concatenate([r["out_k"], r["out_k1"]], 1), r["whole"], atol=1e-5)
    chex.assert_trees_all_close(r["upd1"], r["upd_whole"], atol=1e-5)
    assert not np.allclose(r["out_k1"], r["fresh_k1"], atol=1e-3)  # the carried state did matter
    chex.assert_trees_all_close(r["read_k1"], r["out_k1"], atol=1e-6)
    chex.assert_trees_all_close(r["params_only_k"], r["out_k"], atol=1e-6)
    chex.assert_trees_all_close(r["other_size"], r["other_size_fresh"], atol=1e-6)
    # the gradient of batch k+1's loss w.r.t. everything batch k used is zero: backprop is cut
    chex.assert_trees_all_equal(r["g_params"], jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(r["g_h"], jax.tree.map(jnp.zeros_like, h_rand))
    # ... while without the cut the second half's loss does reach batch k's state
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(r["g_uncut"])) > 1e-4


def test_unrolling_the_window_is_the_same_function():
    x, y = _ids(6, (B, 2 * BPTT)), _ids(7, (B, 2 * BPTT))  # 10 steps: unroll 4 leaves a remainder of 2
    models = [T.StatefulCharRnn(V, "lstm", F, H, n_layers=2, unroll=u) for u in (1, 4)]
    variables = models[0].init(KEY, x)

    def loss(model, params):
        return cross_entropy(model.apply({**variables, "params": params}, x), y).mean()

    (l1, g1), (l4, g4) = [jax.jit(jax.value_and_grad(partial(loss, m)))(variables["params"]) for m in models]
    np.testing.assert_allclose(l1, l4, rtol=1e-6)
    chex.assert_trees_all_close(g1, g4, atol=1e-6)
    with pytest.raises(ValueError, match="unroll must be a positive integer"):
        T.StatefulCharRnn(V, "lstm", unroll=0).init(KEY, x)


def _compiled_cost(fn, *args) -> dict[str, float]:
    """XLA's own count of the work in the compiled ``fn`` (``Compiled.cost_analysis``): flops and bytes."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)


def _lstm_grad_cost(ids, targets) -> dict[str, float]:
    model = T.StatefulCharRnn(V, "lstm", F, H, n_layers=2, unroll=BPTT)
    variables = model.init(KEY, ids)

    def loss(params):
        return cross_entropy(model.apply({**variables, "params": params}, ids), targets).mean()

    return _compiled_cost(jax.grad(loss), variables["params"])


def test_fusion_fence_is_exact():
    x = _normal(8, (B, H))
    chex.assert_trees_all_equal(jax.jit(T.fusion_fence)(x), x)
    chex.assert_trees_all_equal(jax.grad(lambda v: (T.fusion_fence(v) ** 2).sum())(x), 2 * x)


@pytest.mark.compiler_specific
def test_fusion_fence_stops_the_recomputed_chain(monkeypatch):
    """The property the fence is for: less work. Unrolled over the window, the LSTM's c chain is elementwise
    from step to step; without the fence XLA copies it into each step's consumers, recomputing it. XLA's own
    cost count of the compiled gradient (not its HLO text) shows the extra work."""
    if jax.default_backend() != "cpu":
        pytest.skip("measured on XLA:CPU")
    ids, targets = _ids(9, (B, BPTT)), _ids(10, (B, BPTT))
    fenced = _lstm_grad_cost(ids, targets)
    monkeypatch.setattr(text_cells, "fusion_fence", lambda v: v)
    unfenced = _lstm_grad_cost(ids, targets)
    assert fenced["flops"] < 0.95 * unfenced["flops"], (fenced, unfenced)
    assert fenced["bytes accessed"] < 0.9 * unfenced["bytes accessed"], (fenced, unfenced)


@pytest.mark.compiler_specific
def test_parameter_fence_sums_each_window_gradient_once(monkeypatch):
    """Fenced on their way into the window loop, each loop weight's gradient (a sum over the window's steps)
    is added up once, not again inside each Adam moment that reads it: less work in the compiled step."""
    if jax.default_backend() != "cpu":
        pytest.skip("measured on XLA:CPU")
    ids = _ids(11, (B, BPTT))
    opt = optax.adam(1e-3)

    def adam_step_cost() -> dict[str, float]:
        model = T.StatefulCharRnn(V, "lstm", F, H, n_layers=2, unroll=BPTT)
        variables = model.init(KEY, ids)

        def step(params, state):
            grads = jax.grad(lambda p: model.apply({**variables, "params": p}, ids).mean())(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return _compiled_cost(step, variables["params"], opt.init(variables["params"]))

    fenced = adam_step_cost()
    monkeypatch.setattr(text_models, "fusion_fence", lambda v: v)  # the cells keep theirs
    unfenced = adam_step_cost()
    assert fenced["flops"] < unfenced["flops"] and fenced["bytes accessed"] < unfenced["bytes accessed"], \
        (fenced, unfenced)


def test_unknown_cell_is_rejected():
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        T.StatefulCharRnn(V, "transformer").init(KEY, _ids(0, (B, BPTT)))


def test_cross_entropy_of_a_sequence_is_per_example():
    logits = _normal(6, (B, BPTT, V)).astype(np.float64)
    y = np.asarray(_ids(0, (B, BPTT)))
    seq, flat = jax.jit(lambda z, y: (cross_entropy(z, y),
                                      cross_entropy(z[:, 0], y[:, 0])))(logits, y)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]  # (B, T)
    assert seq.shape == flat.shape == (B,)
    np.testing.assert_allclose(seq, nll.mean(1), rtol=1e-5)
    np.testing.assert_allclose(flat, nll[:, 0], rtol=1e-5)
    # the lesson's nll_loss_seq (the mean over all B·T) is the mean of these
    np.testing.assert_allclose(seq.mean(), nll.mean(), rtol=1e-5)


# ---------------------------------------------------------------------------------------- diagnostics

def test_hidden_grad_norms():
    model = T.StatefulCharRnn(V, "gru", F, H, n_layers=2)
    x, y = _ids(0, (B, BPTT)), _ids(5, (B, BPTT))
    variables = model.init(KEY, x)
    norms = T.hidden_grad_norms(model, variables, x, y)
    chex.assert_shape(norms, (2, BPTT))
    assert bool((norms > 0).all())
    # the last step's top state only feeds the last logits: ∂L/∂h_{T-1} = (softmax − onehot) W_outᵀ / (B·T)
    logits = model.apply(variables, x)
    w_out = variables["params"]["l_out"]["kernel"]
    direct = (jax.nn.softmax(logits[:, -1]) - jax.nn.one_hot(y[:, -1], V)) @ w_out.T / (B * BPTT)
    np.testing.assert_allclose(norms[1, -1], jnp.linalg.norm(direct), rtol=1e-4)


def test_gate_saturation():
    x = _ids(0, (B, BPTT))
    expected = {"rnn": ["tanh"], "gru": ["r", "z"], "lstm": ["f", "i", "o"]}
    input_biases = {"rnn": ["i"], "gru": ["ir", "iz"], "lstm": ["hi", "hf", "ho"]}
    for cell, gates in expected.items():
        model = T.StatefulCharRnn(V, cell, F, H, n_layers=2)
        variables = model.init(KEY, x)
        sat = T.gate_saturation(model, variables, x)
        assert sorted(sat) == sorted(f"layer_{layer}/{g}" for layer in range(2) for g in gates)
        assert all(0.0 <= float(v) < 0.5 for v in sat.values())  # a fresh init is not saturated
        # push the gates' biases far out: every tanh unit and every sigmoid gate saturates
        for layer in variables["params"]["rnn"].values():
            for b in input_biases[cell]:
                layer[b]["bias"] = jnp.full((H,), 50.0, jnp.float32)
        assert all(float(v) == 1.0 for v in T.gate_saturation(model, variables, x).values())


# -------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("model, t", [(T.Char3Model(V, F, H), 3),  # the window models share one path
                                      (T.CharSeqRnn(V, F, H), 8), (T.StatefulCharRnn(V, "lstm", F, H), BPTT)])
def test_sample_text(model, t):
    variables = model.init(KEY, _ids(0, (B, t)))
    prefix = "abcdefghij"
    text = T.sample_text(model, variables, VOCAB, prefix, 30, seed=KEY)
    assert len(text) == 30 and set(text) <= set(VOCAB.itos[1:])  # never the padding character
    assert text == T.sample_text(model, variables, VOCAB, prefix, 30, seed=KEY)
    # a tiny temperature draws the argmax: the first character is the model's prediction after the prefix
    ids = jnp.asarray(VOCAB.encode(prefix))
    if isinstance(model, (T.CharSeqRnn, T.StatefulCharRnn)):
        logits = model.apply({"params": variables["params"]}, ids[None])[0, -1]  # the whole prefix from h = 0
    else:
        logits = model.apply(variables, ids[None, -t:])[0]  # the last window
    greedy = T.sample_text(model, variables, VOCAB, prefix, 30, temperature=1e-4, seed=KEY)
    assert greedy[0] == VOCAB.itos[1 + int(logits[1:].argmax())]


def test_sample_text_pads_short_prefixes_and_checks_arguments():
    model = T.Char3Model(V, F, H)
    variables = model.init(KEY, _ids(0, (B, 3)))
    text = T.sample_text(model, variables, VOCAB, "a", 5, seed=KEY)  # the window: [pad, pad, 'a']
    assert len(text) == 5 and set(text) <= set(VOCAB.itos[1:])
    with pytest.raises(ValueError, match="non-empty"):
        T.sample_text(model, variables, VOCAB, "", 5)
    with pytest.raises(ValueError, match="temperature"):
        T.sample_text(model, variables, VOCAB, "ab", 5, temperature=0.0)


# ------------------------------------------------------------------------------------------- training

def test_short_training_run_on_the_text():
    path = os.environ.get(T.NIETZSCHE_ENV)
    if path is None:
        pytest.skip(f"nietzsche.txt not available: set {T.NIETZSCHE_ENV} to its path")
    vocab, train_ids, _ = T.nietzsche_splits(path)
    bs, bptt = 16, 8
    x, y = T.stream_batches(train_ids[:20_000], bs, bptt)  # 156 batches of 16 streams
    n_batches = len(x) // bs
    xb, yb = jnp.asarray(x).reshape(n_batches, bs, bptt), jnp.asarray(y).reshape(n_batches, bs, bptt)
    model = T.StatefulCharRnn(len(vocab), "gru", n_fac=16, n_hidden=64)
    variables = model.init(KEY, xb[0])
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, carry, xb, yb):
        def loss_fn(p):
            logits, new = model.apply({"params": p, CARRY: carry}, xb, train=True, mutable=[CARRY])
            return cross_entropy(logits, yb).mean(), new[CARRY]
        (loss, carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, carry, loss

    params, opt_state, carry = variables["params"], tx.init(variables["params"]), variables[CARRY]
    losses = []
    for i in range(200):
        k = i % n_batches
        if k == 0:  # a new epoch starts from a zero state
            carry = {"h": model.zero_state(bs)}
        params, opt_state, carry, loss = step(params, opt_state, carry, xb[k], yb[k])
        losses.append(float(loss))
    first, last = np.mean(losses[:5]), np.mean(losses[-20:])
    assert abs(first - np.log(len(vocab))) < 0.3  # ≈ ln 85 = 4.44 at init
    assert last < 2.7 < first, (first, last)
