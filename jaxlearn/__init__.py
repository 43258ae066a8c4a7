"""jaxlearn: see inside training with JAX, Flax (linen) and optax.

The package, layer by layer (each imports only the layers below it):

* the core — :mod:`~jaxlearn.step` (the pure, compiled train step and calls), :mod:`~jaxlearn.callback` (the
  callback protocol), :mod:`~jaxlearn.learner` (the host loop) with :mod:`~jaxlearn.calls` (compiled once per
  set of callbacks) and :mod:`~jaxlearn.prepare` (its first state and checks); :mod:`~jaxlearn.losses`,
  :mod:`~jaxlearn.metrics`, :mod:`~jaxlearn.sharding`, :mod:`~jaxlearn.trees`, :mod:`~jaxlearn.checks`;
  after training, :mod:`~jaxlearn.export` and :mod:`~jaxlearn.interpret`;
* :mod:`jaxlearn.data` (datasets on the device), :mod:`jaxlearn.optim` (optax transforms and schedules),
  :mod:`jaxlearn.nn` (layers, init, norms) beneath the core; :mod:`jaxlearn.callbacks` beneath the Learner;
* one package per lesson domain on top: :mod:`jaxlearn.vision`, :mod:`jaxlearn.text`, :mod:`jaxlearn.collab`,
  :mod:`jaxlearn.makemore`.

The everyday names are importable from here (``from jaxlearn import Learner, MetricsCB``), as fastai's
``fastai.vision.all``; each loads its module when first used, so ``import jaxlearn`` itself is cheap.
"""

from jaxlearn import _moved
from jaxlearn._lazy import lazy_exports

__version__ = "0.2.0"

_moved.install()  # jaxlearn 0.1's flat module paths, for one release

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "jaxlearn.learner": ["Learner"],
    "jaxlearn.callback": ["Callback", "StepRecorder", "CancelFitException", "CancelEpochException",
                          "CancelBatchException"],
    "jaxlearn.callbacks.core": ["MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB"],
    "jaxlearn.callbacks.schedule": ["ParamSchedulerCB", "RecorderCB", "LayerGroupsCB"],
    "jaxlearn.callbacks.activations": ["ActivationStats"],
    "jaxlearn.callbacks.lr_finder": ["LRFinderCB", "lr_find"],
    "jaxlearn.callbacks.health": ["HealthCB"],
    "jaxlearn.callbacks.health_report": ["HealthReport"],
    "jaxlearn.callbacks.monitor": ["GradNormCB", "NaNGuardCB", "EarlyStoppingCB", "SmoothedLossCB", "nan_check"],
    "jaxlearn.callbacks.checkpoint": ["CheckpointCB", "restore_checkpoint"],
    "jaxlearn.callbacks.loggers": ["MetricsLoggerCB", "TensorBoardCB"],
    "jaxlearn.data": ["ArrayDataset", "DataLoaders", "normalize", "load_dataset", "fashion_mnist_loaders",
                      "names_loaders", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD"],
    "jaxlearn.text.data": ["nietzsche_loaders"],
    "jaxlearn.collab.movielens": ["collab_loaders", "tabular_loaders"],
    "jaxlearn.losses": ["cross_entropy", "mse"],
    "jaxlearn.metrics": ["Metric", "accuracy", "rmse", "mae", "perplexity"],
    "jaxlearn.nn": ["GeneralRelu", "BatchNorm", "LayerNorm", "kaiming_normal", "lsuv"],
    "jaxlearn.optim": ["sgd", "momentum", "rmsprop", "adam", "adamw"],
    "jaxlearn.vision.models": ["get_model"],
    "jaxlearn.export": ["load_learner"],
    "jaxlearn.interpret": ["ClassificationInterpretation"],
})
