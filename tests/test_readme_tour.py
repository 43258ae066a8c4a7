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
