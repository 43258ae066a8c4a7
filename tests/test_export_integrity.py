"""learn.export / load_learner on hostile-but-realistic cases: the folder exported to is replaced only when it is
an export, damage to any file of an export is named at load, out-of-range integer inputs are refused, and
every model family (BatchNorm CNN, makemore MLP, stateful RNN, collab, tabular) predicts after load_learner as
the Learner did."""

import json
import pickle
import shutil

import jax
import numpy as np
import optax
import pytest

from jaxlearn import text
from jaxlearn.collab import EmbeddingDotBias, TabularModel
from jaxlearn.data import DataLoaders, identity
from jaxlearn.export import META_FILE, MODEL_FILE, VARIABLES_DIR, export, load_learner
from jaxlearn.learner import Learner
from jaxlearn.losses import mse
from jaxlearn.makemore import MLP

from _shortcut_learner import tiny_cnn_learner
from _tiny import tiny_arrays


@pytest.fixture(scope="module")
def trained():
    learn = tiny_cnn_learner(table=False)
    learn.fit(1, valid=False)
    return learn


@pytest.fixture(scope="module")
def pristine(trained, tmp_path_factory):
    """A clean export of the trained CNN; tests damage copies of it."""
    return trained.export(tmp_path_factory.mktemp("pristine") / "model")


@pytest.fixture
def copy(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "model")


# ------------------------------------------------------------------------------- the folder exported to

def test_a_folder_that_is_not_an_export_is_refused_and_kept(trained, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "important.txt").write_text("a week of notes")
    with pytest.raises(ValueError, match=r"results.*not a jaxlearn export.*important\.txt.*overwrite=True"):
        export(trained, folder)
    assert (folder / "important.txt").read_text() == "a week of notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # nothing half-written beside it
    export(trained, folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, MODEL_FILE, VARIABLES_DIR]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_file_of_the_users_inside_an_export_is_not_deleted(trained, copy):
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        export(trained, copy)
    assert (copy / "notes.txt").exists()


def test_re_exporting_replaces_an_export_and_leaves_nothing_beside_it(trained, copy, tmp_path):
    x, _ = tiny_arrays(8, seed=3)
    trained.export(copy)  # what SaveBestCB does at each improvement
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_array_equal(load_learner(copy).predict(x, raw=True), trained.predict(x, raw=True))


def test_an_export_that_fails_midway_leaves_the_previous_one_whole(trained, copy, tmp_path, monkeypatch):
    import jaxlearn.export as E
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(E, "_write_variables", fail)
    with pytest.raises(OSError, match="disk full"):
        trained.export(copy)
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------------------------------------------------------------- checksums

def _array_data_file(folder):
    """The largest of orbax's array data files (``variables/ocdbt.process_0/d/<hash>``)."""
    return max((p for p in (folder / VARIABLES_DIR).rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def test_the_export_records_a_checksum_of_every_file(copy):
    meta = json.loads((copy / META_FILE).read_text())
    files = {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()} - {META_FILE}
    assert set(meta["checksums"]) == files and MODEL_FILE in files
    assert all(len(digest) == 64 for digest in meta["checksums"].values()) and len(meta["record_checksum"]) == 64


def test_a_flipped_byte_in_the_variables_is_named(copy):
    damaged = _array_data_file(copy)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{damaged.relative_to(copy)}.*checksum"):
        load_learner(copy)


def test_a_truncated_model_file_is_named(copy):
    (copy / MODEL_FILE).write_bytes((copy / MODEL_FILE).read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.pkl.*checksum"):
        load_learner(copy)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", ""])
def test_a_garbage_record_is_named(copy, garbage):
    (copy / META_FILE).write_text(garbage)
    with pytest.raises(ValueError, match=r"export\.json"):
        load_learner(copy)


def test_an_edited_record_is_named(copy):
    meta = json.loads((copy / META_FILE).read_text())
    meta["classes"] = ["cat", "dog", "bird"]
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"export\.json.*checksum"):
        load_learner(copy)


def test_a_file_from_another_export_is_named(pristine, copy, tmp_path):
    other_learner = tiny_cnn_learner(table=False, seed=1)
    other_learner.dls.info["classes"] = ["a", "b", "c"]  # the same model, other class names: it unpickles fine
    other = other_learner.export(tmp_path / "other")
    shutil.copy(other / MODEL_FILE, copy / MODEL_FILE)
    with pytest.raises(ValueError, match=r"model\.pkl.*another export"):
        load_learner(copy)
    shutil.copy(pristine / MODEL_FILE, copy / MODEL_FILE)
    swapped = _array_data_file(copy)  # same shapes, another model's values
    shutil.copy(_array_data_file(other), swapped)
    with pytest.raises(ValueError, match=str(swapped.relative_to(copy))):
        load_learner(copy)


def test_a_missing_export_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.*export\.json"):
        load_learner(tmp_path / "nowhere")


def test_an_export_without_checksums_loads_with_a_warning(trained, copy):
    """Format 1 (jaxlearn before checksums): no checksums in export.json, no variables' structure in model.pkl."""
    meta = json.loads((copy / META_FILE).read_text())
    old = {k: v for k, v in meta.items() if k not in ("checksums", "record_checksum")} | {"format": 1}
    (copy / META_FILE).write_text(json.dumps(old))
    pipeline = pickle.loads((copy / MODEL_FILE).read_bytes())
    del pipeline["variables_like"]
    (copy / MODEL_FILE).write_bytes(pickle.dumps(pipeline))
    with pytest.warns(UserWarning, match="unverified"):
        restored = load_learner(copy)
    x, _ = tiny_arrays(8, seed=3)
    np.testing.assert_array_equal(restored.predict(x, raw=True), trained.predict(x, raw=True))


# ------------------------------------------------------------------------------- integer input ranges

@pytest.mark.parametrize("bad, found", [(300, "300"), (-1, "-1")])
def test_integer_pixels_outside_uint8_are_refused_by_both_predictors(trained, pristine, bad, found):
    x, _ = tiny_arrays(4, seed=3)
    pixels = x.astype(np.int64)
    pixels[1, 2, 3, 0] = bad
    for predictor in (trained, load_learner(pristine)):
        with pytest.raises(ValueError, match=f"{found}.*uint8.*0..255"):
            predictor.predict(pixels, raw=True)
    np.testing.assert_array_equal(trained.predict(x.astype(np.int64), raw=True), trained.predict(x, raw=True))


def test_integer_ids_need_only_fit_the_int32_of_their_training_data():
    learn, x = _tabular_learner()
    cats, conts = x
    cats = cats.astype(np.int64)
    cats[:2, 0] = [-1, 99]  # codes outside the training ones: the model's "unknown" row
    assert learn.predict((cats, conts), raw=True).shape == (len(cats),)
    cats[0, 0] = 2**40
    with pytest.raises(ValueError, match=r"1099511627776.*int32"):
        learn.predict((cats, conts), raw=True)


# -------------------------------------------------------------------- every family predicts after load

def _ids(seed, shape, high):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int32)


def _fitted(model, train, loss_fn=None, batch_size=16):
    dls = DataLoaders.from_arrays(train, train, batch_size, transform=identity)
    learn = Learner(model, dls, optimizer=optax.adam, lr=1e-2, table=False,
                    **({"loss_fn": loss_fn} if loss_fn else {}))
    learn.fit(1, valid=False)  # BatchNorm's running statistics and the stateful RNN's carry move
    return learn


def _cnn_learner():
    learn = tiny_cnn_learner(table=False)
    learn.fit(1, valid=False)
    return learn, tiny_arrays(16, seed=5)[0]


def _makemore_learner():
    x, y = _ids(0, (64, 3), 27), _ids(1, 64, 27)
    return _fitted(MLP(vocab_size=27, n_embd=4, n_hidden=16, batchnorm=True), (x, y)), _ids(2, (16, 3), 27)


def _rnn_learner(cell):
    x = _ids(0, (64, 5), 12)
    model = text.StatefulCharRnn(12, cell, n_fac=4, n_hidden=8)  # carry: ((c, h),) or (h,)
    learn = _fitted(model, (x, np.roll(x, -1, 1)))
    carry = jax.tree.leaves(learn.state.model_state["carry"])
    assert all(np.abs(h).max() > 0 for h in carry)  # the fit moved it: a carry restored as zeros would show
    carried = carry[0].shape[0]
    return learn, _ids(3, (carried, 5), 12)  # as many rows as the carry: predict continues from it


def _collab_learner():
    x, y = np.stack([_ids(0, 64, 10), _ids(1, 64, 8)], 1), np.random.default_rng(2).uniform(1, 5, 64)
    return _fitted(EmbeddingDotBias(10, 8, n_factors=3, y_range=(1.0, 5.0)), (x, y.astype(np.float32)), mse), x[:16]


def _tabular_learner():
    rng = np.random.default_rng(0)
    x = (np.stack([_ids(0, 64, 5), _ids(1, 64, 3)], 1), rng.normal(size=(64, 2)).astype(np.float32))
    model = TabularModel((5, 3), n_cont=2, layers=(8,), ps=(0.0,), emb_drop=0.0)
    return _fitted(model, (x, rng.normal(size=64).astype(np.float32)), mse), (x[0][:16], x[1][:16])


@pytest.mark.parametrize("make", [
    _cnn_learner, _makemore_learner, lambda: _rnn_learner("lstm"), lambda: _rnn_learner("gru"),
    _collab_learner, _tabular_learner,
], ids=["cnn", "makemore", "lstm", "gru", "collab", "tabular"])
def test_every_family_predicts_after_load_as_the_learner(make, tmp_path):
    learn, x = make()
    restored = load_learner(learn.export(tmp_path / "model"))
    np.testing.assert_allclose(restored.predict(x, raw=True), learn.predict(x, raw=True), atol=1e-6, rtol=0)
    if learn.classification:
        mine, theirs = restored.predict(x), learn.predict(x)
        np.testing.assert_array_equal(mine.index, theirs.index)
        np.testing.assert_array_equal(mine.label, theirs.label)
