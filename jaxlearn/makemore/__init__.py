"""makemore part 3 (Karpathy, "Activations & Gradients, BatchNorm"): the lecture's models
(:mod:`~jaxlearn.makemore.models`), its training on the one Learner and sampling
(:mod:`~jaxlearn.makemore.training`), its diagnostics reduced in the step (:mod:`~jaxlearn.makemore.diagnostics`)
and its figures (:mod:`~jaxlearn.makemore.plots`). The names themselves come from :mod:`jaxlearn.data.names`."""

from jaxlearn.makemore.diagnostics import (HIST_BINS, DiagnosticRun, DiagnosticsCB, UpdateRatioCB, diagnose,
                                           run_diagnostics, summary_table, weight_ratio_names)
from jaxlearn.makemore.models import (BLOCK_SIZE, EXPECTED_INIT_LOSS, KAIMING_TANH, LADDER, LECTURE_SEED, MLP,
                                      VOCAB_SIZE, BatchNorm1d, DeepMLP, Linear, Rung, Tanh, lecture_batchnorm)
from jaxlearn.makemore.plots import plot_activations, plot_diagnostics, plot_grad_hists, plot_update_ratios
from jaxlearn.makemore.training import (CPU_COMPILER_OPTIONS, count_params, init, lecture_learner, lecture_lr,
                                        mean_cross_entropy, sample, train, variables_of)

__all__ = ["HIST_BINS", "DiagnosticRun", "DiagnosticsCB", "UpdateRatioCB", "diagnose", "run_diagnostics",
           "summary_table", "weight_ratio_names", "BLOCK_SIZE", "EXPECTED_INIT_LOSS", "KAIMING_TANH", "LADDER",
           "LECTURE_SEED", "MLP", "VOCAB_SIZE", "BatchNorm1d", "DeepMLP", "Linear", "Rung", "Tanh",
           "lecture_batchnorm", "plot_activations", "plot_diagnostics", "plot_grad_hists", "plot_update_ratios",
           "CPU_COMPILER_OPTIONS", "count_params", "init", "lecture_learner", "lecture_lr", "mean_cross_entropy",
           "sample", "train", "variables_of"]
