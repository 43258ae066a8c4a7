"""Collaborative filtering and entity-embedding models (fast.ai 2018 lessons 4, 5 and 7) in flax.linen.

Every model takes ``x`` and ``train: bool = False`` and returns one prediction per example, shape (B,), to be
trained with a mean-squared-error loss on the ratings (:func:`jaxlearn.losses.mse`). The
collaborative-filtering models take x int32 (B, 2) ``[user, item]`` indices
(:func:`jaxlearn.collab.movielens.collab_loaders`); :class:`TabularModel` takes the pair ``(cats, conts)``:
int32 categorical codes (B, n_cat) and float32 continuous columns (B, n_cont).

* :class:`EmbeddingDot`: ``r̂ = u·m`` (lesson 5's first model, the Excel sheet's).
* :class:`EmbeddingDotBias`: ``r̂ = σ(u·m + b_u + b_m)·(hi − lo) + lo``.
* :class:`EmbeddingNet`: concatenated embeddings through a small MLP, then the same sigmoid range.
* :class:`TabularModel`: lesson 4's entity embeddings (Rossmann's ``MixedInputModel``): one embedding per
  categorical column, BatchNorm'd continuous columns, Dense→ReLU→BatchNorm→Dropout blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxlearn.nn.init import kaiming_normal
from jaxlearn.nn.layers import Dropout
from jaxlearn.nn.norms import BatchNorm

__all__ = ["sigmoid_range", "uniform_between", "mean_init", "emb_size", "EmbeddingDot", "EmbeddingDotBias",
           "EmbeddingNet", "TabularModel"]


def sigmoid_range(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """``σ(x)·(hi − lo) + lo``: squashes the scores ``x`` into the ratings' range ``(lo, hi)`` (lesson 5: ×4+1
    for 1–5 stars)."""
    return jax.nn.sigmoid(x) * (hi - lo) + lo


def uniform_between(lo: float, hi: float) -> nn.initializers.Initializer:
    """Initializer drawing from U(lo, hi), like PyTorch's ``weight.data.uniform_(lo, hi)``."""
    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, lo, hi)
    return init


def mean_init(mean: float, n_factors: int = 50, spread: float = 0.05) -> tuple[float, float]:
    """``EmbeddingDot(init_bounds=...)`` that start every prediction near ``mean``: factors U(c ± spread) with
    ``c = √(mean / n_factors)``, so ``u·m ≈ n_factors·c² = mean``. With the lesson's U(0, 0.05) an untrained
    user or movie predicts ≈0.03, and a movie rated only in validation keeps that: a squared error of ~12 on
    each such rating of a 0.5–5 star scale."""
    c = (mean / n_factors) ** 0.5
    return c - spread, c + spread


def emb_size(cardinality: int) -> int:
    """The lesson-4 notebook's embedding width for a column of ``cardinality`` levels:
    ``min(50, (cardinality + 1) // 2)``."""
    return min(50, (cardinality + 1) // 2)


class EmbeddingDot(nn.Module):
    """Lesson 5's ``EmbeddingDot``: ``r̂ = u·m``, a user's factors dotted with a movie's.

    Factors are initialized U(0, 0.05) as in the lesson (small, so the dot products start small, near 0 rather
    than near the ratings' mean). ``n_users`` and ``n_items`` rows of ``n_factors`` factors each; ``init_bounds``: the
    factors start U(lo, hi) for ``init_bounds = (lo, hi)``: :func:`mean_init` starts every dot product near a mean.
    """
    n_users: int
    n_items: int
    n_factors: int = 50
    init_bounds: tuple[float, float] = (0.0, 0.05)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        init = uniform_between(*self.init_bounds)
        u = nn.Embed(self.n_users, self.n_factors, embedding_init=init, name="user_factors")(x[:, 0])
        m = nn.Embed(self.n_items, self.n_factors, embedding_init=init, name="item_factors")(x[:, 1])
        return (u * m).sum(-1)


class EmbeddingDotBias(nn.Module):
    """Lesson 5's ``EmbeddingDotBias``: ``r̂ = σ(u·m + b_u + b_m)·(hi − lo) + lo``.

    A bias per user (generous raters) and per movie (generally liked), and the sigmoid range
    ``y_range = (lo, hi)``. As the notebook's ``get_emb``, every embedding starts U(−0.01, 0.01) by default.

    Args:
        n_users: users (``dls.info['n_users']``): user indices are 0..n_users−1.
        n_items: items, e.g. movies (``dls.info['n_items']``).
        n_factors: the latent factors per user and per item.
        y_range: ``(lo, hi)`` of the predictions; a little beyond the ratings' range (0–5.5 for 0.5–5 stars)
            so the extremes are reachable.
        init_range: every embedding starts U(−init_range, init_range): 0.01 the notebook's ``get_emb``, 0.05
            fastai 0.7's ``CollabFilterLearner``.
    """
    n_users: int
    n_items: int
    n_factors: int = 50
    y_range: tuple[float, float] = (0.0, 5.5)
    init_range: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        users, items = x[:, 0], x[:, 1]
        init = uniform_between(-self.init_range, self.init_range)
        u = nn.Embed(self.n_users, self.n_factors, embedding_init=init, name="user_factors")(users)
        m = nn.Embed(self.n_items, self.n_factors, embedding_init=init, name="item_factors")(items)
        b_u = nn.Embed(self.n_users, 1, embedding_init=init, name="user_bias")(users)[:, 0]
        b_m = nn.Embed(self.n_items, 1, embedding_init=init, name="item_bias")(items)[:, 0]
        return sigmoid_range((u * m).sum(-1) + b_u + b_m, *self.y_range)


class EmbeddingNet(nn.Module):
    """Lesson 5's ``EmbeddingNet`` with lesson 7's fix (dropout only while training):
    ``r̂ = σ(W₂·drop_p2(relu(W₁·drop_p1([u, m]) + c₁)) + c₂)·(hi − lo) + lo``.

    The Dense layers' biases take the place of the separate user / movie biases. Embeddings start
    U(−0.01, 0.01) as the notebook's ``get_emb``; ``p1=0.05, p2=0.5`` are the notebook's. ``n_users``,
    ``n_items``, ``n_factors`` and ``y_range`` as :class:`EmbeddingDotBias`'s; ``n_hidden`` units in the hidden
    layer.
    """
    n_users: int
    n_items: int
    n_factors: int = 50
    n_hidden: int = 10
    p1: float = 0.05
    p2: float = 0.5
    y_range: tuple[float, float] = (0.0, 5.5)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        init = uniform_between(-0.01, 0.01)
        u = nn.Embed(self.n_users, self.n_factors, embedding_init=init, name="user_factors")(x[:, 0])
        m = nn.Embed(self.n_items, self.n_factors, embedding_init=init, name="item_factors")(x[:, 1])
        h = Dropout(self.p1)(jnp.concatenate([u, m], axis=-1), train)
        h = Dropout(self.p2)(nn.relu(nn.Dense(self.n_hidden)(h)), train)
        return sigmoid_range(nn.Dense(1)(h)[:, 0], *self.y_range)


class TabularModel(nn.Module):
    """Lesson 4's entity-embedding model (fastai 0.7's ``MixedInputModel``) for inputs ``(cats, conts)``:
    int32 categorical codes (B, n_cat) and float32 continuous columns (B, n_cont).

    * column j's code goes through an embedding of ``cardinalities[j] + 1`` rows and :func:`emb_size` columns;
      the extra last row is "unknown" and takes every code outside 0..cardinality−1 (e.g. −1). Embeddings
      start U(−2/(d+1), 2/(d+1)) for width d (fastai 0.7's ``emb_init``), then ``Dropout(emb_drop)``;
    * the ``n_cont`` continuous columns go through BatchNorm;
    * both, concatenated, through ``Dense(n) → ReLU → BatchNorm → Dropout(p)`` for each ``n, p`` in
      ``layers, ps`` (Kaiming-normal weights; ``use_bn=False`` drops the BatchNorms);
    * then ``Dense(n_out)``: one output (squeezed) for a regression, squashed by :func:`sigmoid_range` when
      ``y_range`` is given; ``n_out`` > 1 gives a classifier's logits (``len(dls.info['classes'])``).

    BatchNorm uses batch statistics and updates its running ones when ``train=True`` (collection
    ``batch_stats``, which must then be mutable), and the running ones otherwise.
    """
    cardinalities: Sequence[int]
    n_cont: int
    layers: Sequence[int] = (1000, 500)
    ps: Sequence[float] = (0.001, 0.01)
    emb_drop: float = 0.04
    y_range: tuple[float, float] | None = None
    use_bn: bool = True
    n_out: int = 1

    @nn.compact
    def __call__(self, x: tuple[jax.Array, jax.Array], train: bool = False) -> jax.Array:
        if len(self.layers) != len(self.ps):
            raise ValueError(f"TabularModel: {len(self.layers)} layers but {len(self.ps)} dropout ps")
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError("TabularModel takes the pair (cats, conts): int32 categorical codes (B, n_cat) and "
                             "float32 continuous columns (B, n_cont)")
        cats, conts = x
        n_cat = len(self.cardinalities)
        if cats.shape[-1] != n_cat or conts.shape[-1] != self.n_cont:
            raise ValueError(f"TabularModel: inputs have {cats.shape[-1]} categorical and {conts.shape[-1]} "
                             f"continuous columns, expected {n_cat} and {self.n_cont}")
        cats = cats.astype(jnp.int32)
        parts = []
        for j, card in enumerate(self.cardinalities):
            width = emb_size(card)
            scale = 2 / (width + 1)
            codes = jnp.where((cats[:, j] >= 0) & (cats[:, j] < card), cats[:, j], card)
            parts.append(nn.Embed(card + 1, width, embedding_init=uniform_between(-scale, scale),
                                  name=f"embedding_{j}")(codes))
        h = Dropout(self.emb_drop)(jnp.concatenate(parts, axis=-1), train) if parts else None
        if self.n_cont:
            conts = BatchNorm(name="cont_norm")(conts, use_running_average=not train)
            h = conts if h is None else jnp.concatenate([h, conts], axis=-1)
        for n, p in zip(self.layers, self.ps):
            h = nn.relu(nn.Dense(n, kernel_init=kaiming_normal())(h))
            if self.use_bn:
                h = BatchNorm()(h, use_running_average=not train)
            h = Dropout(p)(h, train)
        out = nn.Dense(self.n_out, kernel_init=kaiming_normal())(h)
        if self.n_out > 1:
            return out
        return out[:, 0] if self.y_range is None else sigmoid_range(out[:, 0], *self.y_range)
