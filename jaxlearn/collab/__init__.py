"""fast.ai 2018 lessons 4, 5 and 7: collaborative filtering and entity embeddings on MovieLens — the models
(:mod:`~jaxlearn.collab.models`: EmbeddingDot(Bias), EmbeddingNet, TabularModel) and the data
(:mod:`~jaxlearn.collab.movielens`: the two GroupLens datasets, checked, with the lesson's split), and your own
tables: ratings (:mod:`~jaxlearn.collab.ratings`) and tabular data (:mod:`~jaxlearn.collab.tabular`)."""

from jaxlearn.collab.models import (EmbeddingDot, EmbeddingDotBias, EmbeddingNet, TabularModel, emb_size,
                                    mean_init, sigmoid_range, uniform_between)
from jaxlearn.collab.movielens import (MOVIELENS_ENV, Ratings, SideInfo, TabularArrays, collab_loaders,
                                       load_ratings, movielens_dir, split_ratings, tabular_arrays, tabular_loaders)
from jaxlearn.collab.ratings import collab_from_csv, collab_from_df, per_user_split
from jaxlearn.collab.tabular import TabularProc, tabular_from_csv, tabular_from_df

__all__ = ["EmbeddingDot", "EmbeddingDotBias", "EmbeddingNet", "TabularModel", "emb_size", "mean_init", "sigmoid_range",
           "uniform_between", "MOVIELENS_ENV", "Ratings", "SideInfo", "TabularArrays", "collab_loaders",
           "load_ratings", "movielens_dir", "split_ratings", "tabular_arrays", "tabular_loaders", "collab_from_csv",
           "collab_from_df", "per_user_split", "TabularProc", "tabular_from_csv", "tabular_from_df"]
