"""Layers and initialisation from the lessons, as flax.linen modules and initializers: GeneralRelu and
Dropout (:mod:`~jaxlearn.nn.layers`), Glorot / Kaiming / LeCun / PyTorch's default init and LSUV
(:mod:`~jaxlearn.nn.init`), BatchNorm / LayerNorm / InstanceNorm / GroupNorm from scratch
(:mod:`~jaxlearn.nn.norms`) and their calibration (:mod:`~jaxlearn.nn.calibrate`), and flax's Conv computed fast
on the CPU (:mod:`~jaxlearn.nn.conv`)."""

from jaxlearn.nn.calibrate import calibrate_batchnorm
from jaxlearn.nn.init import (calculate_gain, compute_fans, find_lsuv_pairs, glorot_normal, glorot_uniform,
                              kaiming_normal, kaiming_uniform, lecun_normal, lsuv, torch_default,
                              torch_default_bias)
from jaxlearn.nn.layers import Dropout, GeneralRelu
from jaxlearn.nn.norms import BatchNorm, GroupNorm, InstanceNorm, LayerNorm

__all__ = ["calibrate_batchnorm", "calculate_gain", "compute_fans", "glorot_normal", "glorot_uniform",
           "kaiming_normal", "kaiming_uniform", "lecun_normal", "torch_default", "torch_default_bias", "Dropout",
           "GeneralRelu", "find_lsuv_pairs", "lsuv", "BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm"]
