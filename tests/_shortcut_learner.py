"""A small BatchNorm CNN Learner on the tests' tiny data, importable by tests and their subprocesses."""

from functools import partial

import optax

from jaxlearn.callbacks import BatchTransformCB
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm
from jaxlearn.vision import get_model

from _tiny import tiny_arrays

CLASSES = ["low", "mid", "high"]


def tiny_cnn_learner(optimizer=partial(optax.sgd, momentum=0.9), lr=0.1, **kwargs) -> Learner:
    x, y = tiny_arrays()
    dls = DataLoaders.from_arrays((x, y), tiny_arrays(48, seed=1), 16)
    dls.info["classes"] = CLASSES
    return Learner(get_model(nfs=(1, 4, 8), norm=BatchNorm, n_classes=3), dls, optimizer=optimizer, lr=lr,
                   callbacks=[BatchTransformCB(normalize(110.0, 70.0))], **kwargs)
