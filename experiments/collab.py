"""Collaborative filtering on MovieLens (fast.ai 2018 lessons 5-6), every model trained by the Learner.

    python experiments/collab.py                 # full: both datasets, every model, the wd-vs-L2 grid
    python experiments/collab.py --docs          # the same, published to docs/collab/
    python experiments/collab.py --quick         # < 1 min: 1 epoch at bs 1024, two strengths in the grid
    python experiments/collab.py --protocol lesson   # lesson 5's models as its notebook trains them -> <out>/lesson

Lesson 5 trains on the ratings alone (user, movie → rating) and validates on a seeded random 20% of the
ratings (the notebook's ``get_cv_idxs``, seed 42, whatever ``--seed`` says: ``--seed`` seeds the init,
shuffles and dropout). Rows:

* ml-latest-small (lesson 5's data): ``EmbeddingDot``, ``EmbeddingDotBias`` with the lesson's recipe (Adam,
  L2 2e-4, bs 64, lr 1e-2 with SGDR cycle_len 1, cycle_mult 2: 3 epochs; fastai 0.776, 0.76 at best) and
  with a tuned one (AdamW, one-cycle), ``EmbeddingNet``;
* ml-100k (the fastai v2 book's data, ≈0.82 for its dot product + bias model): the same models, and lesson
  4's entity-embedding ``TabularModel`` with the side information (age group, gender, occupation, genres,
  release year) next to the user and movie.

The recipes were tuned by hand on the validation set (the lesson's protocol; there is no separate test set):
the settings used are written beside each result. The second table is lesson 5's weight decay vs L2 point:
Adam with L2 in the gradient (the penalty then goes through Adam's 1/√v) against AdamW's decoupled decay,
each at a few strengths.

Writes under ``--out`` (default runs/collab; docs/collab with ``--docs``):
  results.json     list of {dataset, model, valid_mse, lesson_mse, target, settings, seconds, ...}
  wd_vs_l2.json    list of {regularization, strength, valid_mse, train_mse, ...}
  README.md        both tables beside the lessons' numbers, the interpretation, the command
  lr_find.png      the LR range test of the tuned EmbeddingDotBias (ml-latest-small)
  movie_bias.png   its movie biases: best and worst among the most-rated movies (lesson 6)
  movie_pca.png    the first two principal components of its movie factors, with titles (lesson 6)
  side_by_side.md  lesson 5's figures, its recipes under its protocol (and PyTorch's), jaxlearn's, held out
Ratings come from $JAXLEARN_MOVIELENS_DIR (ml-latest-small/ and ml-100k/). A run whose loss turns NaN
stops with exit status 2 and no results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache, partial
from pathlib import Path

import flax.linen as nn
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

from jaxlearn import metrics, optim
from jaxlearn.optim import schedules
from jaxlearn.callbacks import MetricsCB, ParamSchedulerCB, lr_find
from jaxlearn.callbacks.plots import annotate_apart, save
from jaxlearn.collab import (EmbeddingDot, EmbeddingDotBias, EmbeddingNet, TabularModel, collab_loaders, mean_init,
                             tabular_loaders)
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner

import runs

SMALL, ML100K = "ml-latest-small", "ml-100k"
Y_RANGE = (0.0, 5.5)  # a little beyond the 0.5-5 stars, so that the sigmoid can reach the extreme ratings
N_FACTORS = 50        # lesson 5's n_factors
TOP_MOVIES = 3000     # lesson 6 interprets the 3,000 most-rated movies
QUICK = {"epochs": 1, "bs": 1024, "lr": 3e-2}  # the higher lr makes one epoch of 79 steps learn something
TABULAR_LAYERS = (1000, 500)       # lesson 4's Rossmann model
QUICK_TABULAR_LAYERS = (100, 50)   # --quick: a hundredth of the compute, the one slow model otherwise
# Batches per compiled call. These models are tiny, so a call is mostly launch overhead; yet scanning many
# steps per call measured no faster on a 2-core CPU (the embeddings' scatter-add gradients run as slowly
# inside XLA's loop as they save on launches), so one step per call it is.
STEPS_PER_CALL = 1


@dataclass(frozen=True)
class Recipe:
    """One row of the results table: a model, a dataset and how it was trained."""
    dataset: str
    model: str
    recipe: str                # whose settings: "lesson 5" or "tuned"
    regularization: str        # "l2" (Adam + L2 in the gradient) or "decoupled" (AdamW)
    weight_decay: float
    lr: float                  # the peak of the schedule
    epochs: int
    schedule: str              # "sgdr" (cycle_len 1, cycle_mult 2) or "one_cycle"
    lesson_mse: float | None   # what the lesson (or the fastai book) got with this model on this data
    lesson_source: str
    target: float | None       # the number this row should reach
    bs: int = 64
    tabular_layers: tuple[int, ...] = TABULAR_LAYERS  # TabularModel only
    optimizer: str = "adam"    # "adam" (fastai's), "torch_adam" or "sgd_momentum" (torch's SGD, momentum 0.9)
    lr_drops: tuple[tuple[int, float], ...] = ()  # schedule "set_lrs": (epochs, lr) fits, the optimizer carried on
    y_range: tuple[float, float] = Y_RANGE
    init_range: float = 0.01   # EmbeddingDotBias: U(±init_range), 0.05 for fastai 0.7's own model
    mean_init: bool = False    # EmbeddingDot: factors that start every prediction at the mean training rating
    notebook_mse: float | None = None  # what the lesson's notebook printed for this recipe, where it differs


LESSON5_FASTAI = "lesson 5: fastai CollabFilterDataset, n_factors 50, Adam, wd 2e-4, 3 epochs (0.76 at best)"
LESSON5_DOT = "lesson 5: the hand-written EmbeddingDot, SGD momentum + set_lrs"
BOOK_DOT_BIAS = "fastai v2 book ch. 8: DotProductBias, AdamW wd 0.1, one-cycle 5e-3, 5 epochs"
RECIPES = [
    # EmbeddingDot has no bias: from the lesson's init (predictions ≈0.03) a movie rated only in validation
    # keeps predicting ≈0, so it lost to the mean predictor (1.248 with AdamW wd 0.01, one-cycle 2e-2, 5
    # epochs). Starting every u·m at the mean rating (collab.mean_init): 0.984 with that recipe, 0.841 with
    # lr 1e-2 for 3 epochs (this one); wd 0.03 1.113, wd 0.1 at 5e-3 1.056 (ml-latest-small, seed 0).
    Recipe(SMALL, "EmbeddingDot", "tuned", "decoupled", 0.01, 1e-2, 3, "one_cycle", 1.13, LESSON5_DOT, 1.100,
           mean_init=True),
    Recipe(SMALL, "EmbeddingDotBias", "lesson 5", "l2", 2e-4, 1e-2, 3, "sgdr", 0.776, LESSON5_FASTAI, 0.776),
    Recipe(SMALL, "EmbeddingDotBias", "tuned", "decoupled", 0.1, 5e-3, 5, "one_cycle", 0.776, LESSON5_FASTAI,
           0.76),
    Recipe(SMALL, "EmbeddingNet", "tuned", "decoupled", 0.1, 5e-3, 5, "one_cycle", None,
           "lesson 5: no number, 'it beat dot+bias'", None),
    Recipe(ML100K, "EmbeddingDot", "tuned", "decoupled", 0.01, 1e-2, 3, "one_cycle", None, "", None, mean_init=True),
    Recipe(ML100K, "EmbeddingDotBias", "tuned", "decoupled", 0.1, 5e-3, 5, "one_cycle", 0.82, BOOK_DOT_BIAS,
           0.82),
    Recipe(ML100K, "EmbeddingNet", "tuned", "decoupled", 0.1, 5e-3, 5, "one_cycle", None, "", None),
    Recipe(ML100K, "TabularModel", "tuned", "decoupled", 0.1, 5e-3, 5, "one_cycle", None,
           "lesson 4's entity embeddings + ml-100k side information", None),
]
# Weight decay vs L2 (lesson 5): the tuned EmbeddingDotBias on ml-latest-small with only the regularizer
# changed. The strengths are not comparable across the two kinds (L2 adds λ·p to the gradient, which Adam
# then rescales; AdamW removes lr·wd·p per step), so each kind gets its own range around its best.
WD_VS_L2_BASE = RECIPES[2]
# --protocol lesson: lesson 5's models as lesson5-movielens.ipynb trains them on its split (the same seed-42
# random 20% of the ratings): the hand-written EmbeddingDot and EmbeddingDotBias with torch's SGD (momentum 0.9,
# weight_decay = L2 in the gradient) and set_lrs, fastai's own EmbeddingDotBias (CollabFilterLearner: init
# ±0.05, y range = the ratings' min–max, Adam + wd 2e-4, fit(1e-2, 2, cycle_len=1, cycle_mult=2)) and the
# EmbeddingNet with lesson 7's dropout fix (Adam 1e-3, wd 1e-5, fit 3 + fit 3).
RATINGS = (0.5, 5.0)  # ml-latest-small's min and max: the notebook's (min_rating, max_rating)
LESSON_RECIPES = [
    Recipe(SMALL, "EmbeddingDot", "lesson 5", "l2", 1e-5, 0.1, 6, "set_lrs", 1.13, LESSON5_DOT, 1.16,
           optimizer="sgd_momentum", lr_drops=((3, 0.1), (3, 0.01)), notebook_mse=1.12943),
    Recipe(SMALL, "EmbeddingDotBias", "lesson 5, hand-written", "l2", 2e-4, 0.1, 3, "set_lrs", 0.80,
           "lesson 5: the hand-written EmbeddingDotBias, SGD momentum, 3 epochs", 0.83, optimizer="sgd_momentum",
           lr_drops=((3, 0.1),), y_range=RATINGS, notebook_mse=0.80994),
    Recipe(SMALL, "EmbeddingDotBias", "lesson 5, fastai", "l2", 2e-4, 1e-2, 3, "cos_anneal", 0.776, LESSON5_FASTAI,
           0.806, optimizer="torch_adam", y_range=RATINGS, init_range=0.05),
    Recipe(SMALL, "EmbeddingNet", "lesson 5", "l2", 1e-5, 1e-3, 6, "set_lrs", None,
           "lesson 5: no number, 'it beat dot+bias'", None, optimizer="torch_adam", lr_drops=((3, 1e-3), (3, 1e-3))),
]
# benchmarks/lesson_protocol_torch.py's rungs: the same recipes in the notebook's PyTorch code
TORCH_RUNGS = {("EmbeddingDot", "lesson 5"): "collab_dot",
               ("EmbeddingDotBias", "lesson 5, hand-written"): "collab_dot_bias_hand",
               ("EmbeddingDotBias", "lesson 5, fastai"): "collab_dot_bias_fastai"}
TORCH_REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "lesson_protocol_torch.json"
HELD_OUT_SEED = 1  # --protocol held-out retrains each recipe on another split: ratings its tuning never saw
WD_VS_L2_GRID = [("none", 0.0), ("l2", 1e-5), ("l2", 1e-4), ("l2", 1e-3), ("l2", 1e-2),
                 ("decoupled", 0.01), ("decoupled", 0.03), ("decoupled", 0.1), ("decoupled", 0.3)]
QUICK_GRID = [("l2", 1e-4), ("decoupled", 0.1)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    helps = {"epochs": "epochs of every run (default: each recipe's own, 3 or 5)",
             "bs": "batch size of every run (default: each recipe's own, 64 as the lesson)",
             "lr": "peak learning rate of every run (default: each recipe's own)",
             "quick": "a smoke run of under a minute: --epochs 1 --bs 1024 --lr 0.03, TabularModel layers 100, 50 and "
                      "only two strengths in the wd-vs-L2 grid (flags given explicitly still win)"}
    parser = runs.experiment_parser("collab", __doc__.splitlines()[0], epochs=None, bs=None, lr=None, seed=0,
                                    quick=QUICK, helps=helps)
    parser.add_argument("--protocol", choices=("held-out", "lesson"), default="held-out",
                        help="'held-out': jaxlearn's recipes on the lesson's split, each retrained on a second split "
                             "(seed 1) whose validation ratings the tuning never saw; 'lesson': lesson 5's models as "
                             "its notebook trains them (LESSON_RECIPES), written to <out>/lesson")
    args = parser.parse_args(argv)
    if args.protocol == "lesson":
        args.out = args.out / "lesson"
    return args


# ------------------------------------------------------------------------------------------ one training run

def squared_error(preds: jax.Array, y: jax.Array) -> jax.Array:
    """The regression loss, one value per rating (the Learner takes their weighted mean)."""
    return (preds - y) ** 2


def adam_l2(learning_rate: optax.ScalarOrSchedule, l2: float, b2: float = 0.99, eps: float = 1e-5
            ) -> optax.GradientTransformation:
    """Adam with L2 regularization in the gradient, as fastai 0.7's ``wd`` (and PyTorch's Adam) did:
    ``g + l2·p`` goes through Adam's moments, so a rarely rated movie's penalty is scaled up by its small √v."""
    return optax.chain(optim.add_l2(l2), optim.adam(learning_rate, b2=b2, eps=eps, eps_in_sqrt=False))


def sgd_l2(learning_rate: optax.ScalarOrSchedule, l2: float) -> optax.GradientTransformation:
    """``torch.optim.SGD(params, lr, momentum=0.9, weight_decay=l2)``: ``m ← 0.9·m + g + l2·p``,
    ``p ← p − lr·m``."""
    return optax.chain(optim.add_l2(l2), optim.momentum(learning_rate, 0.9, lerp=False))


def optimizer_for(regularization: str, strength: float, kind: str = "adam"
                  ) -> Callable[..., optax.GradientTransformation]:
    """``kind='adam'``: fastai's Adam (β₂ 0.99, ε 1e-5 added to √v). ε must stay outside the square root here: an
    embedding row's gradient is tiny (its rating's share of a batch mean), so √v is ~1e-3 and an ε of 1e-5 under
    the root (√ε ≈ 3e-3) would shrink its steps several times (measured: ml-100k 0.895 instead of 0.813).
    ``'torch_adam'``: PyTorch's defaults (β₂ 0.999, ε 1e-8), which fastai 0.7's ``opt_fn=optim.Adam`` used;
    ``'sgd_momentum'``: :func:`sgd_l2`. Both with L2 (``regularization='l2'``), as the notebook's."""
    if kind == "sgd_momentum":
        return partial(sgd_l2, l2=strength)
    if kind == "torch_adam":
        return partial(adam_l2, l2=strength, b2=0.999, eps=1e-8)
    if regularization == "l2":
        return partial(adam_l2, l2=strength)
    return partial(optim.adamw, weight_decay=strength, eps_in_sqrt=False)  # "decoupled"; "none" is wd 0


@cache
def loaders(dataset: str, tabular: bool, bs: int, split_seed: int = 42) -> DataLoaders:
    """Each dataset read (and checksummed) once per batch size and split (``split_seed`` 42: the lesson's)."""
    return tabular_loaders(bs, seed=split_seed) if tabular else collab_loaders(dataset, bs, seed=split_seed)


def build_model(name: str, dls: DataLoaders, tabular_layers: tuple[int, ...], y_range: tuple[float, float] = Y_RANGE,
                init_range: float = 0.01, start_at_mean: bool = False) -> nn.Module:
    info = dls.info
    if name == "TabularModel":  # lesson 4's Rossmann dropouts: embeddings 0.04, layers 0.001, 0.01
        return TabularModel(info["cardinalities"], info["n_cont"], layers=tabular_layers, y_range=Y_RANGE)
    n_users, n_items = info["n_users"], info["n_items"]
    if name == "EmbeddingDot":  # no bias, no sigmoid range: lesson 5's first model
        if start_at_mean:
            return EmbeddingDot(n_users, n_items, N_FACTORS, mean_init(float(np.mean(dls.train.y)), N_FACTORS))
        return EmbeddingDot(n_users, n_items, N_FACTORS)
    if name == "EmbeddingDotBias":
        return EmbeddingDotBias(n_users, n_items, N_FACTORS, y_range, init_range)
    return EmbeddingNet(n_users, n_items, N_FACTORS, y_range=y_range)


def schedule_for(recipe: Recipe, batches_per_epoch: int) -> ParamSchedulerCB:
    if recipe.schedule in ("sgdr", "cos_anneal"):  # fastai 0.7's fit(lr, n_cycles, cycle_len=1, cycle_mult=2)
        # cos_anneal: its CosAnneal as it ran, lr/100 for the first 1/20 of the first cycle
        warmup = math.ceil(batches_per_epoch / 20) if recipe.schedule == "cos_anneal" else 0
        return ParamSchedulerCB("learning_rate",
                                lambda n: schedules.sgdr(recipe.lr, batches_per_epoch, 1, 2, warmup_steps=warmup))
    if recipe.schedule == "set_lrs":  # fit, set_lrs, fit: a constant lr per fit
        boundaries, lrs, epoch = {}, [lr for _, lr in recipe.lr_drops], 0
        for (epochs, lr), next_lr in zip(recipe.lr_drops, lrs[1:]):
            epoch += epochs
            boundaries[epoch * batches_per_epoch] = next_lr / lr
        return ParamSchedulerCB("learning_rate", lambda n: optax.piecewise_constant_schedule(lrs[0], boundaries))
    return ParamSchedulerCB("learning_rate", lambda n: schedules.one_cycle(recipe.lr, n))


def make_learner(recipe: Recipe, seed: int, split_seed: int = 42) -> Learner:
    dls = loaders(recipe.dataset, recipe.model == "TabularModel", recipe.bs, split_seed)
    model = build_model(recipe.model, dls, recipe.tabular_layers, recipe.y_range, recipe.init_range, recipe.mean_init)
    return Learner(model, dls, loss_fn=squared_error,
                   optimizer=optimizer_for(recipe.regularization, recipe.weight_decay, recipe.optimizer), lr=recipe.lr,
                   metrics=[metrics.mse], seed=seed, steps_per_call=STEPS_PER_CALL)


def mean_predictor_mse(dls: DataLoaders) -> float:
    """The validation MSE of always predicting the mean training rating: what any model must beat."""
    y_train, y_valid = np.asarray(dls.train.y), np.asarray(dls.valid.y)
    return float(np.mean((y_valid - y_train.mean()) ** 2))


def train(recipe: Recipe, seed: int, learn: Learner | None = None, args: argparse.Namespace | None = None,
          split_seed: int = 42) -> tuple[dict, Learner]:
    """Fit ``recipe`` (on ``learn`` if given, e.g. after an LR range test) and return its result row."""
    learn = learn or make_learner(recipe, seed, split_seed)
    health = runs.diagnose(learn, args, f"{recipe.dataset} {recipe.model} {recipe.recipe}") if args else None
    initial = learn.evaluate()["mse"]
    history = MetricsCB(show=False)
    t0 = time.perf_counter()
    learn.fit(recipe.epochs, callbacks=[history, schedule_for(recipe, learn.dls.train.n_batches)])
    seconds = time.perf_counter() - t0
    runs.check_history(history.history, at=f"{recipe.dataset} {recipe.model}", hint=runs.lower_lr_hint(recipe.lr))
    valid = learn.evaluate()
    row = {"dataset": recipe.dataset, "model": recipe.model, "valid_mse": valid["mse"],
           "lesson_mse": recipe.lesson_mse, "target": recipe.target,
           "meets_target": None if recipe.target is None else valid["mse"] <= recipe.target,
           "train_mse": history.history[-1]["train_mse"],  # in training mode: with dropout, where a model has it
           "initial_mse": initial, "mean_predictor_mse": mean_predictor_mse(learn.dls),
           "valid_mse_per_epoch": [r["valid_mse"] for r in history.history],
           "notebook_mse": recipe.notebook_mse,
           "settings": {k: v for k, v in asdict(recipe).items()
                        if k not in ("dataset", "model", "lesson_mse", "target", "notebook_mse")
                        and (k != "tabular_layers" or recipe.model == "TabularModel")}
           | {"seed": seed, "split_seed": split_seed},
           "params": sum(a.size for a in jax.tree.leaves(learn.state.params)), "seconds": seconds,
           **({"health": health} if health else {})}
    return row, learn


# ------------------------------------------------------------------------------------------- interpretation

def rating_counts(dls: DataLoaders) -> np.ndarray:
    """Ratings per movie, over training and validation."""
    items = np.concatenate([np.asarray(dls.train.x[:, 1]), np.asarray(dls.valid.x[:, 1])])
    return np.bincount(items, minlength=dls.info["n_items"])


def most_rated(dls: DataLoaders, n: int) -> np.ndarray:
    return np.argsort(-rating_counts(dls), kind="stable")[:n]


def movie_biases(learn: Learner) -> np.ndarray:
    return np.asarray(jax.device_get(learn.state.params["item_bias"]["embedding"]))[:, 0]


def movie_pca(learn: Learner, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The movies' factors projected on their first three principal components (numpy SVD of the centred
    factors, as lesson 6's ``PCA(n_components=3)``), and each component's share of the variance."""
    factors = np.asarray(jax.device_get(learn.state.params["item_factors"]["embedding"]))[movies]
    centred = factors - factors.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:3].T, (s[:3] ** 2) / (s ** 2).sum()


def plot_movie_biases(titles: list[str], biases: np.ndarray, path: Path, n: int = 15) -> None:
    order = np.argsort(biases)
    shown = np.concatenate([order[:n], order[-n:]])
    fig, ax = plt.subplots(figsize=(8, 9))
    ax.barh(np.arange(2 * n), biases[shown], color=["tab:red"] * n + ["tab:green"] * n)
    ax.set_yticks(np.arange(2 * n), [titles[i] for i in shown], fontsize=8)
    ax.axvline(0, color="k", lw=0.7)
    ax.set(xlabel="learned movie bias (logit of the sigmoid range)", ylabel="movie",
           title=f"Worst and best {n} movies by bias, among the {len(titles):,} most rated")
    save(fig, path)


def extreme_movies(components: np.ndarray, candidates: int, k: int) -> list[int]:
    """Rows of the ``k`` most extreme among the first ``candidates`` (the most rated) at each end of PC1 and
    PC2, alternating between the four ends, most extreme first: lesson 6's way of reading a component."""
    first = components[:candidates, :2]
    ends = [np.argsort(sign * first[:, pc], kind="stable")[:k] for pc in (0, 1) for sign in (1, -1)]
    return list(dict.fromkeys(int(i) for rank in zip(*ends) for i in rank))


def plot_movie_pca(titles: list[str], components: np.ndarray, share: np.ndarray, path: Path | None,
                   candidates: int = 300, k: int = 6) -> plt.Figure:
    """All movies as grey points; the ``k`` most extreme at each end of PC1 and PC2 among the ``candidates``
    most rated (the first rows) in blue with their titles, placed so that none overlaps another (a title
    with no free place beside its point is left out)."""
    fig, ax = plt.subplots(figsize=(12, 10))
    ax.scatter(components[:, 0], components[:, 1], s=4, color="0.8")
    shown = extreme_movies(components, candidates, k)
    ax.scatter(components[shown, 0], components[shown, 1], s=12, color="tab:blue")
    ax.set(xlabel=f"PC1 ({share[0]:.0%} of the variance)", ylabel=f"PC2 ({share[1]:.0%} of the variance)",
           title=f"Movie factors of EmbeddingDotBias ({len(titles):,} most-rated movies; labelled: the {k} most "
                 f"extreme of the {min(candidates, len(titles))} most rated at each end of PC1 and PC2)")
    annotate_apart(ax, components[shown, :2], [titles[i] for i in shown])
    return save(fig, path)


def interpret(learn: Learner, out: Path) -> dict:
    """Lesson 6 on the trained model: best / worst movies by bias, and the extremes of each principal
    component of the movie factors. Saves the two figures and returns the lists."""
    dls = learn.dls
    movies = most_rated(dls, TOP_MOVIES)
    titles = [dls.info["titles"][i] for i in movies]
    biases = movie_biases(learn)[movies]
    components, share = movie_pca(learn, movies)
    plot_movie_biases(titles, biases, out / "movie_bias.png")
    plot_movie_pca(titles, components, share, out / "movie_pca.png")
    ends = lambda values, n=8: {"lowest": [titles[i] for i in np.argsort(values)[:n]],  # noqa: E731
                                "highest": [titles[i] for i in np.argsort(values)[::-1][:n]]}
    return {"movies": len(movies), "bias": ends(biases),
            "components": [ends(components[:, k]) | {"variance_share": float(share[k])} for k in range(3)]}


# ----------------------------------------------------------------------------------------------- the report

def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def settings_text(s: dict) -> str:
    opt = {"adam": "Adam", "torch_adam": "torch Adam", "sgd_momentum": "SGD momentum 0.9"}[s.get("optimizer", "adam")]
    reg = {"l2": f"{opt} + L2 {s['weight_decay']:g}", "decoupled": f"AdamW wd {s['weight_decay']:g}",
           "none": f"{opt}, no regularization"}[s["regularization"]]
    if s["schedule"] == "set_lrs":
        sched = ", set_lrs, ".join(f"fit {e} @{lr:g}" for e, lr in s["lr_drops"])
    else:
        sched = {"sgdr": "SGDR 1+2", "cos_anneal": "CosAnneal 1+2 (lr/100 for 1/20 epoch)",
                 "one_cycle": "one-cycle"}[s["schedule"]] + f" lr {s['lr']:g}"
    start = ", factors start at the mean rating" if s.get("mean_init") else ""
    return f"{reg}, {sched}, {s['epochs']} epochs, bs {s['bs']}{start}"


def results_table(rows: list[dict]) -> list[str]:
    held_out = any("held_out_mse" in r for r in rows)
    lines = ["| dataset | model | recipe | valid MSE | " + ("held out (split seed 1) | " if held_out else "")
             + "lesson MSE | target | mean predictor | settings |",
             "| --- | --- | --- | --- | " + ("--- | " if held_out else "") + "--- | --- | --- | --- |"]
    for r in rows:
        mark = "" if r["meets_target"] is None else (" ✓" if r["meets_target"] else " ✗")
        lesson = fmt(r["lesson_mse"], 3) + (f" (notebook {r['notebook_mse']:.4f})" if r.get("notebook_mse") else "")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['settings']['recipe']} | **{fmt(r['valid_mse'])}** | "
                     + (f"{fmt(r.get('held_out_mse'))} | " if held_out else "")
                     + f"{lesson} | {fmt(r['target'], 3)}{mark} | {fmt(r['mean_predictor_mse'])} | "
                     f"{settings_text(r['settings'])} |")
    return lines


def side_by_side(held_out_dir: Path) -> list[str] | None:
    """docs/collab/side_by_side.md's table: each lesson-5 model's figure, under the lesson's protocol, and
    jaxlearn's recipe on the lesson's split and held out; None until both protocols have results."""
    paths = held_out_dir / "results.json", held_out_dir / "lesson" / "results.json"
    if not all(p.is_file() for p in paths):
        return None
    ours, lesson = (json.loads(p.read_text()) for p in paths)
    torch = json.loads(TORCH_REFERENCE.read_text()) if TORCH_REFERENCE.is_file() else {}
    lines = ["| model | lesson | the notebook printed | jaxlearn, lesson protocol | PyTorch, the notebook's code, "
             "same protocol | within ±0.02 of the lesson | jaxlearn's recipe, lesson's split "
             "| held out (split seed 1) | mean predictor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in lesson:
        same = [o for o in ours if (o["dataset"], o["model"]) == (r["dataset"], r["model"])]
        mine = next((o for o in same if o["settings"]["recipe"] == "tuned"), same[0] if same else None)
        reference = torch.get(TORCH_RUNGS.get((r["model"], r["settings"]["recipe"]), ""), {}).get("valid_loss")
        within = "–" if r["lesson_mse"] is None else "yes" if abs(r["valid_mse"] - r["lesson_mse"]) <= 0.02 else "no"
        lines.append(f"| {r['model']} ({r['settings']['recipe']}) | {fmt(r['lesson_mse'], 3)} "
                     f"| {fmt(r.get('notebook_mse'))} | **{fmt(r['valid_mse'])}** | {fmt(reference)} | {within} "
                     f"| {fmt(mine['valid_mse']) if mine else '–'} "
                     f"| {fmt(mine.get('held_out_mse')) if mine else '–'} "
                     f"| {fmt(r['mean_predictor_mse'])} |")
    return lines


def write_side_by_side(held_out_dir: Path) -> None:
    table = side_by_side(held_out_dir)
    if table is not None:
        (held_out_dir / "side_by_side.md").write_text("\n".join([
            f"# Lesson 5 on {SMALL}: the lesson's figure, its protocol, jaxlearn's recipe, held out", "",
            "Validation MSE. *Lesson protocol*: `python experiments/collab.py --protocol lesson` "
            "([lesson/](lesson/README.md)), each model as lesson5-movielens.ipynb trains it, on the notebook's "
            "seed-42 random 20% of the ratings. *jaxlearn's recipe*: the default run ([README](README.md)), "
            "tuned by hand on that same split. *Held out*: the same recipe retrained on a second random split "
            "(seed 1), whose validation ratings the tuning never saw. *PyTorch, the notebook's code*: "
            "`python benchmarks/lesson_protocol_torch.py`, the notebook's models and training as it writes them, on "
            "the very same ratings and split: where jaxlearn misses the lesson's figure, the measured reason. The "
            "data is the September 2018 release of ml-latest-small (100,836 ratings, 610 users); the notebook's "
            "was the 2017 one (100,004, 671).", "",
            *table, ""]), encoding="utf-8")


def wd_table(rows: list[dict]) -> list[str]:
    lines = ["| regularization | strength | valid MSE | train MSE | gap |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        name = {"none": "none", "l2": "Adam + L2 (coupled)", "decoupled": "AdamW (decoupled)"}[r["regularization"]]
        lines.append(f"| {name} | {r['strength']:g} | **{fmt(r['valid_mse'])}** | {fmt(r['train_mse'])} | "
                     f"{fmt(r['valid_mse'] - r['train_mse'])} |")
    return lines


def print_table(lines: list[str]) -> None:
    for line in lines:
        if not line.startswith("| ---"):
            print(line.strip("|").replace(" | ", "  ").replace("**", ""))


def write_readme(out: Path, rows: list[dict], wd_rows: list[dict], interpretation: dict, lr_suggestion: float,
                 command: str, wall_seconds: float) -> None:
    best = lambda kind: min((r for r in wd_rows if r["regularization"] == kind),  # noqa: E731
                            key=lambda r: r["valid_mse"], default=None)
    best_l2, best_wd = best("l2"), best("decoupled")
    pcs = interpretation["components"]
    text = [
        "# Collaborative filtering on MovieLens (fast.ai 2018 lessons 5–6)", "",
        f"`{command}` — {wall_seconds:.0f} s on a 2-core CPU. Every model is trained by `jaxlearn.learner.Learner` "
        "(MSE loss, `metrics.mse`, a `ParamSchedulerCB` schedule). Validation: the lesson's seeded random 20% of "
        "the ratings; the settings were tuned on it by hand (as in the lesson), so the *held out* column retrains "
        f"each recipe on a second random split (seed {HELD_OUT_SEED}) whose validation ratings the tuning never "
        "saw. The lessons' own recipes under their own protocol: [lesson/](lesson/README.md); side by side: "
        "[side_by_side.md](side_by_side.md).",
        "", "## Results", "", *results_table(rows), "",
        "Lesson MSE: " + "; ".join(sorted({f"{r['model']} on {r['dataset']}: {r['settings']['lesson_source']}"
                                          for r in rows if r["lesson_mse"] is not None})) + ".",
        "The mean predictor always predicts the mean training rating.", "",
        "## Weight decay vs L2 (lesson 5)", "",
        f"The tuned EmbeddingDotBias on {WD_VS_L2_BASE.dataset} ({settings_text(asdict(WD_VS_L2_BASE))}) with "
        "only the regularizer changed. With Adam, L2 in the gradient is divided by √v like every gradient, so "
        "a rarely rated movie (small v) is pulled to zero hard and a popular one hardly at all; AdamW's decoupled "
        "decay shrinks every weight by the same lr·wd per step.", "", *wd_table(wd_rows), "",
    ]
    if best_l2 and best_wd:
        text += [f"Best of each: Adam + L2 {best_l2['strength']:g} → {best_l2['valid_mse']:.4f}, "
                 f"AdamW wd {best_wd['strength']:g} → {best_wd['valid_mse']:.4f}.", ""]
    text += [
        "## Interpretation (lesson 6)", "",
        f"The tuned EmbeddingDotBias on {SMALL}, over its {interpretation['movies']:,} most-rated movies. "
        f"LR range test: suggestion {lr_suggestion:.2g} ([lr_find.png](lr_find.png)).", "",
        "![movie biases](movie_bias.png)", "",
        f"Lowest bias: {'; '.join(interpretation['bias']['lowest'][:5])}.  ",
        f"Highest bias: {'; '.join(interpretation['bias']['highest'][:5])}.", "",
        "![PCA of the movie factors](movie_pca.png)", "",
        *[f"- PC{k + 1} ({pc['variance_share']:.0%}): {'; '.join(pc['lowest'][:4])} ↔ "
          f"{'; '.join(pc['highest'][:4])}" for k, pc in enumerate(pcs)], "",
        "Lesson 6 (ml-latest-small, top 3,000 movies): worst bias Battlefield Earth; best Shawshank, Godfather, "
        "Usual Suspects, 12 Angry Men. PC1 separated Police Academy 4 / Waterworld from Fargo / Pulp Fiction, "
        "PC2 dialogue-driven films from CGI blockbusters. A component's sign is arbitrary.", "",
    ]
    (out / "README.md").write_text("\n".join(text), encoding="utf-8")


# --------------------------------------------------------------------------------------------------- main

def apply_overrides(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """The command line's --epochs / --bs / --lr replace every recipe's own; --quick shrinks TabularModel."""
    given = {"epochs": args.epochs, "bs": args.bs, "lr": args.lr,
             "tabular_layers": QUICK_TABULAR_LAYERS if args.quick else None}
    return replace(recipe, **{k: v for k, v in given.items() if v is not None})


def report(row: dict, recipe: Recipe) -> None:
    print(f"{row['dataset']:16s} {row['model']:17s} {recipe.recipe:9s} valid MSE {row['valid_mse']:.4f} "
          f"(lesson {fmt(row['lesson_mse'], 3)}, mean predictor {row['mean_predictor_mse']:.4f}) "
          f"in {row['seconds']:.1f} s", flush=True)


def run_lesson_protocol(args: argparse.Namespace, out: Path, command: str, t_start: float) -> list[dict]:
    rows = []
    for recipe in LESSON_RECIPES:
        row, _ = train(apply_overrides(recipe, args), args.seed, args=args)
        rows.append(row)
        report(row, recipe)
    print()
    print_table(results_table(rows))
    runs.write_json(out / "results.json", rows)
    (out / "README.md").write_text("\n".join([
        "# Lesson 5's models under the lesson's own protocol", "",
        f"`{command}` — {time.perf_counter() - t_start:.0f} s on a 2-core CPU. Each model as "
        "lesson5-movielens.ipynb trains it (`LESSON_RECIPES` in `experiments/collab.py`): the hand-written "
        "EmbeddingDot and EmbeddingDotBias with torch's SGD (momentum 0.9, weight_decay = L2 in the gradient) "
        "and `set_lrs` between fits; fastai 0.7's own EmbeddingDotBias (`CollabFilterLearner`: embeddings "
        "U(±0.05), y range the ratings' min–max, torch Adam + wd 2e-4, `fit(1e-2, 2, cycle_len=1, cycle_mult=2)`, "
        "whose CosAnneal starts at lr/100 for 1/20 of an epoch); the EmbeddingNet with lesson 7's dropout fix "
        "(Adam 1e-3, wd 1e-5, fit 3 + fit 3). Split: the notebook's, `get_cv_idxs` (seed 42, 20% of the ratings). "
        "Side by side with jaxlearn's recipes and the held-out numbers: [../side_by_side.md](../side_by_side.md).",
        "", *results_table(rows), ""]), encoding="utf-8")
    write_side_by_side(out.parent)
    return rows


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> list[dict]:
    t_start = time.perf_counter()
    args = parse_args(argv)
    out = runs.prepare_run(args)
    command = " ".join(["python experiments/collab.py", *(sys.argv[1:] if argv is None else argv)])
    if args.protocol == "lesson":
        return run_lesson_protocol(args, out, command, t_start)
    recipes = [apply_overrides(r, args) for r in RECIPES]

    base = apply_overrides(WD_VS_L2_BASE, args)
    rows, interpretation, lr_suggestion = [], {}, float("nan")
    for recipe in recipes:
        learn = None
        if recipe == base:  # the model lesson 6 interprets: find its lr first
            learn = make_learner(recipe, args.seed)
            finder = lr_find(learn, plot_path=out / "lr_find.png")  # puts the state back afterwards
            lr_suggestion = finder.suggestion
        row, learn = train(recipe, args.seed, learn, args)
        rows.append(row)
        report(row, recipe)
        if recipe == base:
            interpretation, base_row = interpret(learn, out), row
        if not args.quick:  # the recipe was tuned on this split: measure it on ratings the tuning never saw
            held, _ = train(recipe, args.seed, split_seed=HELD_OUT_SEED)
            row.update(held_out_mse=held["valid_mse"], held_out_mean_predictor_mse=held["mean_predictor_mse"])
            print(f"{'':44s} held out (split seed {HELD_OUT_SEED}) {held['valid_mse']:.4f}", flush=True)

    wd_rows = []
    for regularization, strength in (QUICK_GRID if args.quick else WD_VS_L2_GRID):
        if (regularization, strength) == (base.regularization, base.weight_decay):
            row = base_row  # the base recipe itself, trained above: the same seed gives the same numbers
        else:
            row, _ = train(replace(base, regularization=regularization, weight_decay=strength, target=None),
                           args.seed)
        wd_rows.append({"regularization": regularization, "strength": strength, "valid_mse": row["valid_mse"],
                        "train_mse": row["train_mse"], "settings": row["settings"], "seconds": row["seconds"]})
        print(f"wd vs L2: {regularization:9s} {strength:<7g} valid MSE {row['valid_mse']:.4f} "
              f"train MSE {row['train_mse']:.4f}", flush=True)

    print()
    print_table(results_table(rows))
    print()
    print_table(wd_table(wd_rows))
    runs.write_json(out / "results.json", rows)
    runs.write_json(out / "wd_vs_l2.json", wd_rows)
    write_readme(out, rows, wd_rows, interpretation, lr_suggestion, command,
                 time.perf_counter() - t_start)
    write_side_by_side(out)
    return rows


if __name__ == "__main__":
    main()
