"""README's tour runs as written: its first python block under "## A tour", on a Fashion-MNIST subset."""

import dataclasses
import re
from pathlib import Path


import jaxlearn.data

README = Path(__file__).resolve().parent.parent / "README.md"


def tour_code() -> str:
    text = README.read_text()
    section = text[text.index("## A tour"):]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_tour_runs_as_written(monkeypatch, tmp_path):
    full = jaxlearn.data.fashion_mnist_loaders

    def subset(*args, **kwargs):  # 1,024 training and 1,000 validation images: the tour in seconds
        dls = full(*args, **{**kwargs, "n_train": 1024})
        dls.valid = dataclasses.replace(dls.valid, x=dls.valid.x[:1000], y=dls.valid.y[:1000])
        return dls

    monkeypatch.setattr(jaxlearn.data, "fashion_mnist_loaders", subset)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(tour_code(), str(README), "exec"), namespace)
    for name in ("lr_find.png", "loss.png", "confusion.png", "top_losses.png", "fashion_cnn/export.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert 0 < namespace["lrs"].valley < 10
    assert not namespace["report"].critical and namespace["report"].seen["steps"] == 100
    assert namespace["learn"].epochs_done == 3
    assert namespace["interp"].confusion_matrix().sum() == 1000


def own_data_code() -> str:
    text = README.read_text()
    section = text[text.index("## Your own data"):]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_your_own_data_runs_as_written(monkeypatch, tmp_path):
    import numpy as np
    import pandas as pd
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    users, movies = rng.integers(100, 140, 600), rng.integers(1000, 1060, 600)
    pd.DataFrame({"userId": users, "movieId": movies, "rating": rng.integers(1, 11, 600) / 2}).to_csv(
        tmp_path / "ratings.csv", index=False)
    sales = pd.DataFrame({"store": rng.choice(["a", "b", "c"], 300), "weekday": rng.integers(0, 7, 300),
                          "temp": np.where(rng.random(300) < 0.1, np.nan, rng.normal(20, 5, 300))})
    sales["sales"] = rng.normal(100, 10, 300)
    sales.to_csv(tmp_path / "sales.csv", index=False)
    (tmp_path / "my_book.txt").write_text("It was the best of times, it was the worst of times. " * 400)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXLEARN_CACHE_DIR", str(tmp_path / "cache"))
    import jaxlearn.data.tfds_images
    monkeypatch.setattr(jaxlearn.data.tfds_images, "_require_download_host", lambda *a: None)  # the mock serves it
    namespace = {"new_rows": sales.head(3)}
    with tfds.testing.mock_data(num_examples=300):
        exec(compile(own_data_code(), str(README), "exec"), namespace)
    assert namespace["dls"].train.x.shape[1:] == (28, 28, 1)  # the last loader: mnist, through tfds
    learn = namespace["learn"]  # the tabular model: the new rows encoded as the training ones, one output each
    assert learn.predict(learn.dls.info["process"](sales.head(3))).shape == (3,)
