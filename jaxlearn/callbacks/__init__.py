"""The callbacks, one idea per module, all written against the callback protocol (:mod:`jaxlearn.callback`):

* :mod:`~jaxlearn.callbacks.core` — the epoch table, progress bars, a one-batch smoke test, input transforms;
* :mod:`~jaxlearn.callbacks.schedule` — hyperparameter schedules in the step, their recorder, layer freezing,
  ``fit_one_cycle``;
* :mod:`~jaxlearn.callbacks.lr_finder` — the learning-rate range test and fastai's suggestions;
* :mod:`~jaxlearn.callbacks.activations` and :mod:`~jaxlearn.callbacks.stats` — miniai's ActivationStats
  and the in-step reductions behind it;
* :mod:`~jaxlearn.callbacks.monitor` — gradient norms, the NaN guard, early stopping, the smoothed loss;
* :mod:`~jaxlearn.callbacks.health` — the training-health report (``HealthCB``, ``learn.diagnose()``), with its
  probe in the step (:mod:`~jaxlearn.callbacks.health_probe`), rules and report;
* :mod:`~jaxlearn.callbacks.checkpoint` (with :mod:`~jaxlearn.callbacks.checkpoint_files` and
  :mod:`~jaxlearn.callbacks.checkpoint_guard`),
  :mod:`~jaxlearn.callbacks.loggers`, :mod:`~jaxlearn.callbacks.snapshots` — what a run writes to disk;
* :mod:`~jaxlearn.callbacks.plots` — the figures of what they record.

Every name below loads its module when first used (orbax only with the checkpoints, matplotlib only when
drawing).
"""

from jaxlearn._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "jaxlearn.callback": ["Callback", "StepRecorder", "CancelFitException", "CancelEpochException",
                          "CancelBatchException"],
    "jaxlearn.callbacks.core": ["MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB"],
    "jaxlearn.callbacks.schedule": ["ParamSchedulerCB", "RecorderCB", "LayerGroupsCB", "fit_one_cycle",
                                   "fine_tune"],
    "jaxlearn.callbacks.lr_finder": ["LRFinderCB", "lr_find", "suggest_lrs", "valley", "minimum"],
    "jaxlearn.callbacks.activations": ["ActivationStats"],
    "jaxlearn.callbacks.health": ["HealthCB", "diagnose"],
    "jaxlearn.callbacks.health_report": ["HealthReport", "Finding"],
    "jaxlearn.callbacks.health_rules": ["HealthThresholds"],
    "jaxlearn.callbacks.monitor": ["GradNormCB", "NaNGuardCB", "nan_check", "NanCheckResult", "Monitor",
                                   "EarlyStoppingCB", "SaveBestCB", "SmoothedLossCB", "smooth"],
    "jaxlearn.callbacks.checkpoint": ["CheckpointCB", "save_checkpoint", "restore_checkpoint", "latest_step",
                                      "checkpoint_steps"],
    "jaxlearn.callbacks.checkpoint_files": ["CheckpointError"],
    "jaxlearn.callbacks.checkpoint_guard": ["Terminated"],
    "jaxlearn.callbacks.loggers": ["MetricsLoggerCB", "TensorBoardCB", "read_metrics", "strict_dumps",
                                   "write_json"],
    "jaxlearn.callbacks.snapshots": ["SGDRSnapshotCB", "load_snapshot", "snapshot_ensemble_predict",
                                     "snapshot_ensemble_accuracy"],
})
