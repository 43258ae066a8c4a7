"""The collaborative-filtering and entity-embedding models (jaxlearn.collab): shapes, the sigmoid range,
the embedding-size rule, the unknown-category row, dropout only in training, and short training runs whose
MSE falls (plain jitted optax.adam loops on a synthetic low-rank ratings matrix)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.collab import (EmbeddingDot, EmbeddingDotBias, EmbeddingNet, TabularModel, emb_size, mean_init,
                             sigmoid_range)

N_USERS, N_ITEMS = 60, 40
CARDINALITIES = (N_USERS, N_ITEMS, 3)  # [user, item, a 3-valued category]
DOT = EmbeddingDot(N_USERS, N_ITEMS, n_factors=5)
DOT_BIAS = EmbeddingDotBias(N_USERS, N_ITEMS, n_factors=5, y_range=(1.0, 5.0))
NET = EmbeddingNet(N_USERS, N_ITEMS, n_factors=6, p1=0.5, p2=0.5)
TABULAR = TabularModel(CARDINALITIES, n_cont=2, layers=(16, 8), ps=(0.1, 0.1))


def batch(model, n: int = 32, seed: int = 0) -> jax.Array:
    """int32 [user, item] pairs; for TabularModel the pair (cats, conts): those and a 3-valued code, with 2
    continuous columns, whose first 6 rows differ only in that code: 0, 1, 2 and the unknown 3 (= the
    cardinality), -1, 99."""
    rng = np.random.default_rng(seed)
    cats = np.stack([rng.integers(0, card, n) for card in CARDINALITIES], 1)
    if not isinstance(model, TabularModel):
        return jnp.asarray(cats[:, :2], jnp.int32)
    conts = rng.normal(size=(n, 2))
    cats[:6], conts[:6] = cats[0], conts[0]
    cats[:6, 2] = [0, 1, 2, 3, -1, 99]
    return jnp.asarray(cats, jnp.int32), jnp.asarray(conts, jnp.float32)


@functools.cache
def outputs(model) -> dict:
    """The model's variables and outputs on ``batch(model)`` in eval mode and in train mode, with the
    batch_stats each mode leaves: one compile per model."""
    @jax.jit
    def run(x):
        variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
        evaluated, eval_vars = model.apply(variables, x, mutable=["batch_stats"])  # no dropout rng given
        trained, train_vars = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                                          mutable=["batch_stats"])
        return dict(variables=variables, eval=evaluated, eval_vars=eval_vars, train=trained,
                    train_vars=train_vars)
    return run(batch(model))


@pytest.mark.parametrize("model", [DOT, DOT_BIAS, NET, TABULAR], ids=["dot", "dot_bias", "net", "tabular"])
def test_output_is_one_prediction_per_example(model):
    out = outputs(model)
    chex.assert_shape([out["eval"], out["train"]], (32,))
    chex.assert_tree_all_finite([out["eval"], out["train"]])


def test_tabular_embeddings_have_an_unknown_row_and_the_rule_width():
    params = outputs(TABULAR)["variables"]["params"]
    shapes = [params[f"embedding_{j}"]["embedding"].shape for j in range(3)]
    assert shapes == [(61, 30), (41, 20), (4, 2)]  # cardinality + 1 rows, emb_size columns


def test_sigmoid_range_is_the_formula_and_stays_inside():
    x = jnp.linspace(-10.0, 10.0, 101)
    lo, hi = 0.5, 5.0
    y = sigmoid_range(x, lo, hi)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.asarray(x))) * (hi - lo) + lo, rtol=1e-6)
    assert bool(((y > lo) & (y < hi)).all())
    assert float(sigmoid_range(0.0, 1.0, 5.0)) == 3.0  # the middle of 1..5 stars


def test_predictions_are_the_lessons_formulas():
    x = batch(DOT)
    users, items = x[:, 0], x[:, 1]
    out = outputs(DOT_BIAS)
    p = {name: table["embedding"] for name, table in out["variables"]["params"].items()}
    score = (p["user_factors"][users] * p["item_factors"][items]).sum(-1) \
        + p["user_bias"][users, 0] + p["item_bias"][items, 0]
    np.testing.assert_allclose(out["eval"], jax.nn.sigmoid(score) * 4 + 1, rtol=1e-6)  # y_range (1, 5)
    assert bool(((out["eval"] > 1) & (out["eval"] < 5)).all())
    assert float(jnp.abs(p["user_bias"]).max()) <= 0.01  # the notebook's U(-0.01, 0.01)

    out = outputs(DOT)
    u, m = (out["variables"]["params"][name]["embedding"] for name in ("user_factors", "item_factors"))
    assert 0 <= float(u.min()) and float(u.max()) < 0.05  # U(0, 0.05)
    np.testing.assert_allclose(out["eval"], (u[users] * m[items]).sum(-1), rtol=1e-6)


def test_dropout_only_in_training():
    out = outputs(NET)  # eval ran without a dropout rng, which dropout would have needed
    assert not np.allclose(out["train"], out["eval"])


def test_tabular_batchnorm_updates_running_stats_only_in_training():
    out = outputs(TABULAR)
    assert not np.allclose(out["train_vars"]["batch_stats"]["cont_norm"]["mean"], 0.0)
    chex.assert_trees_all_equal(out["eval_vars"]["batch_stats"], out["variables"]["batch_stats"])


@pytest.mark.parametrize("cardinality,size", [(1, 1), (2, 1), (3, 2), (7, 4), (12, 6), (98, 49), (99, 50),
                                              (943, 50), (1682, 50)])
def test_emb_size_rule(cardinality, size):
    assert emb_size(cardinality) == size


def test_unknown_codes_use_the_extra_row():
    preds = np.asarray(outputs(TABULAR)["eval"][:6])  # codes 0, 1, 2, 3, -1, 99 in a 4-row table
    assert preds[3] == preds[4] == preds[5]
    assert len(set(preds[:4].tolist())) == 4  # not clipped to a known row


def test_tabular_inputs_are_a_pair_of_columns():
    cats, conts = batch(TABULAR)
    with pytest.raises(ValueError, match=r"takes the pair \(cats, conts\)"):
        TABULAR.init(jax.random.key(0), jnp.concatenate([cats.astype(jnp.float32), conts], 1))
    with pytest.raises(ValueError, match="2 categorical and 2 continuous columns, expected 3 and 2"):
        TABULAR.init(jax.random.key(0), (cats[:, :2], conts))


# ------------------------------------------------------------------------------------------ training

def low_rank_ratings(n: int = 3000, rank: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` observed cells of a rank-``rank`` user × item matrix squashed into 1..5 stars, with a little noise."""
    rng = np.random.default_rng(seed)
    u, m = rng.normal(size=(N_USERS, rank)), rng.normal(size=(N_ITEMS, rank))
    users, items = rng.integers(0, N_USERS, n), rng.integers(0, N_ITEMS, n)
    scores = (u[users] * m[items]).sum(1) + 0.1 * rng.normal(size=n)
    return np.stack([users, items], 1).astype(np.int32), (1 / (1 + np.exp(-scores)) * 4 + 1).astype(np.float32)


def train_mse(model, x, y, steps: int = 300, lr: float = 0.03) -> tuple[float, float]:
    """MSE before and after ``steps`` full-batch Adam steps (train-mode forward: dropout and BatchNorm on).

    Init, the loop and both evaluations are one jitted function: one compile per model.
    """
    tx = optax.adam(lr)

    def mse(variables):
        return jnp.mean((model.apply(variables, x) - y) ** 2)

    def step(i, carry):
        params, opt_state, state = carry

        def loss(params):
            preds, new_state = model.apply({"params": params, **state}, x, train=True,
                                           rngs={"dropout": jax.random.key(i)}, mutable=list(state))
            return jnp.mean((preds - y) ** 2), new_state

        grads, state = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state

    @jax.jit
    def run():
        variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                               jax.tree.map(lambda a: a[:2], x))
        params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
        params, _, state = jax.lax.fori_loop(0, steps, step, (params, tx.init(params), state))
        return mse(variables), mse({"params": params, **state})

    return tuple(map(float, run()))


@pytest.mark.parametrize("make_model", [
    lambda: EmbeddingDotBias(N_USERS, N_ITEMS, n_factors=5, y_range=(1.0, 5.0)),
    lambda: EmbeddingNet(N_USERS, N_ITEMS, n_factors=5, n_hidden=16, p1=0.0, p2=0.1, y_range=(1.0, 5.0)),
], ids=["dot_bias", "net"])
def test_collab_models_learn_a_low_rank_matrix(make_model):
    x, y = low_rank_ratings()
    before, after = train_mse(make_model(), jnp.asarray(x), jnp.asarray(y))
    assert after < 0.25 * before and after < 0.3, (before, after)


def test_tabular_model_learns_a_low_rank_matrix():
    x, y = low_rank_ratings()
    pair = (jnp.asarray(x), jnp.zeros((len(x), 1)))  # one constant continuous column: BatchNorm must cope
    model = TabularModel((N_USERS, N_ITEMS), n_cont=1, layers=(16,), ps=(0.0,), emb_drop=0.0,
                         y_range=(1.0, 5.0))
    before, after = train_mse(model, pair, jnp.asarray(y), lr=0.01)
    assert after < 0.25 * before and after < 0.3, (before, after)


def test_mean_init_starts_every_prediction_near_the_mean():
    x = jnp.stack([jnp.arange(200) % 30, jnp.arange(200) % 70], axis=1)
    lesson = EmbeddingDot(30, 70, 50)
    started = EmbeddingDot(30, 70, 50, init_bounds=mean_init(3.5, 50))
    at_init = [m.apply(m.init(jax.random.key(0), x), x) for m in (lesson, started)]
    assert float(at_init[0].max()) < 0.1  # the lesson's U(0, 0.05): every rating predicted ≈0.03
    np.testing.assert_allclose(float(at_init[1].mean()), 3.5 + 50 * 0.05 ** 2 / 3, rtol=0.02)  # E[u_k m_k] = c² + 0
    assert float(at_init[1].std()) < 0.3
