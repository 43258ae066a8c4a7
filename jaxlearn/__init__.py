"""jaxlearn: see inside training with JAX, Flax (linen) and optax — the lessons of fast.ai (2018, and 2022's
part 2 "miniai"), Karpathy's makemore and DLVU, on one compiled training step.

Where to start
--------------
A Fashion-MNIST classifier, trained with one-cycle and the epoch table printed (the README's tour goes on to the
LR finder, the training-health report, interpretation and export)::

    from functools import partial
    import optax
    from jaxlearn import BatchNorm, BatchTransformCB, Learner, fashion_mnist_loaders, get_model, normalize

    dls = fashion_mnist_loaders(batch_size=256)
    learn = Learner(get_model(norm=BatchNorm), dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.2,
                    callbacks=[BatchTransformCB(normalize(0.28, 0.35))])
    learn.fit_one_cycle(3)

Then read :class:`Learner` (its arguments, the callbacks it takes, its methods), the callback protocol
(:mod:`jaxlearn.callback`: the events, and what a callback reads on ``learn``) and the callbacks themselves
(:mod:`jaxlearn.callbacks`).

The everyday names
------------------
Importable from here, as fastai's ``fastai.vision.all``: ``from jaxlearn import Learner, MetricsCB``. Each loads
its module when first used, so ``import jaxlearn`` itself is cheap; each is documented below and in its module.

* training: :class:`Learner`, and :func:`load_learner` for what ``learn.export`` wrote (:class:`ExportError`
  when a folder cannot be written or read);
* data: :func:`fashion_mnist_loaders` (with :data:`FASHION_MNIST_MEAN`, :data:`FASHION_MNIST_STD`),
  :func:`names_loaders`, :func:`nietzsche_loaders`, :func:`text_loaders`, :func:`collab_loaders`,
  :func:`tabular_loaders`, :func:`load_dataset`; your own tables: :func:`collab_from_df`, :func:`collab_from_csv`,
  :func:`tabular_from_df`, :func:`tabular_from_csv`; any arrays: :class:`DataLoaders`, :class:`ArrayDataset`,
  and the input transform :func:`normalize`;
* models and layers: :func:`get_model`, :class:`EmbeddingDotBias`, :class:`TabularModel`, :class:`GeneralRelu`,
  :class:`BatchNorm`, :class:`LayerNorm`; init: :func:`kaiming_normal`, :func:`lsuv`;
* optimizers: :func:`sgd`, :func:`momentum`, :func:`rmsprop`, :func:`adam`, :func:`adamw`, and
  :func:`layer_groups` for differential learning rates and freezing;
* losses and metrics: :func:`cross_entropy`, :func:`mse`; :data:`accuracy`, :data:`rmse`, :data:`mae`,
  :data:`perplexity`, :func:`f1`, :func:`precision`, :func:`recall`, :func:`roc_auc`, and your own as a
  :class:`Metric` or :class:`AccumulatedMetric`;
* callbacks: :class:`MetricsCB`, :class:`ProgressCB`, :class:`BatchTransformCB`, :class:`SingleBatchCB`;
  :class:`ParamSchedulerCB`, :class:`RecorderCB`, :class:`LayerGroupsCB`; :class:`LRFinderCB` and :func:`lr_find`;
  :class:`ActivationStats`; :class:`HealthCB` and its :class:`HealthReport`; :class:`GradNormCB`,
  :class:`NaNGuardCB`, :func:`nan_check`, :class:`EarlyStoppingCB`, :class:`SaveBestCB`, :class:`SmoothedLossCB`;
  :class:`CheckpointCB` and :func:`restore_checkpoint`; :class:`MetricsLoggerCB`, :class:`TensorBoardCB`; to write
  your own: :class:`Callback`, :class:`StepRecorder`, :class:`CancelFitException`, :class:`CancelEpochException`,
  :class:`CancelBatchException`;
* after training: :class:`Prediction` (what ``learn.predict`` returns for a classifier),
  :class:`ClassificationInterpretation`.

The package, layer by layer
---------------------------
Each layer imports only the layers below it:

* the core — :mod:`~jaxlearn.step` (the pure, compiled train step and calls), :mod:`~jaxlearn.callback` (the
  callback protocol), :mod:`~jaxlearn.learner` (the host loop) with :mod:`~jaxlearn.calls` (compiled once per
  set of callbacks) and :mod:`~jaxlearn.prepare` (its first state and checks); :mod:`~jaxlearn.losses`,
  :mod:`~jaxlearn.metrics`, :mod:`~jaxlearn.sharding`, :mod:`~jaxlearn.trees`, :mod:`~jaxlearn.checks`;
  after training, :mod:`~jaxlearn.export` and :mod:`~jaxlearn.interpret`;
* :mod:`jaxlearn.data` (datasets on the device), :mod:`jaxlearn.optim` (optax transforms and schedules),
  :mod:`jaxlearn.nn` (layers, init, norms) beneath the core; :mod:`jaxlearn.callbacks` beneath the Learner;
* one package per lesson domain on top: :mod:`jaxlearn.vision`, :mod:`jaxlearn.text`, :mod:`jaxlearn.collab`,
  :mod:`jaxlearn.makemore`.

Every other name lives in its module: ``from jaxlearn.optim.schedules import one_cycle``.
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
    "jaxlearn.callbacks.monitor": ["GradNormCB", "NaNGuardCB", "EarlyStoppingCB", "SaveBestCB", "SmoothedLossCB",
                                  "nan_check"],
    "jaxlearn.callbacks.checkpoint": ["CheckpointCB", "restore_checkpoint"],
    "jaxlearn.callbacks.loggers": ["MetricsLoggerCB", "TensorBoardCB"],
    "jaxlearn.data": ["ArrayDataset", "DataLoaders", "normalize", "load_dataset", "fashion_mnist_loaders",
                      "names_loaders", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD"],
    "jaxlearn.text.data": ["nietzsche_loaders", "text_loaders"],
    "jaxlearn.collab.movielens": ["collab_loaders", "tabular_loaders"],
    "jaxlearn.collab.ratings": ["collab_from_df", "collab_from_csv"],
    "jaxlearn.collab.tabular": ["tabular_from_df", "tabular_from_csv"],
    "jaxlearn.collab.models": ["EmbeddingDotBias", "TabularModel"],
    "jaxlearn.losses": ["cross_entropy", "mse"],
    "jaxlearn.metrics": ["Metric", "AccumulatedMetric", "accuracy", "rmse", "mae", "perplexity", "f1", "precision",
                         "recall", "roc_auc"],
    "jaxlearn.predictions": ["Prediction"],
    "jaxlearn.nn": ["GeneralRelu", "BatchNorm", "LayerNorm", "kaiming_normal", "lsuv"],
    "jaxlearn.optim": ["sgd", "momentum", "rmsprop", "adam", "adamw", "layer_groups"],
    "jaxlearn.vision.models": ["get_model"],
    "jaxlearn.export": ["load_learner", "ExportError"],
    "jaxlearn.interpret": ["ClassificationInterpretation"],
})
