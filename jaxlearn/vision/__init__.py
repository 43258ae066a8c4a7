"""Vision, the lesson-17 and fast.ai 2018 image models: the CNN ``get_model`` and the ResNet
(:mod:`~jaxlearn.vision.models`), augmentation inside the compiled step and test-time augmentation
(:mod:`~jaxlearn.vision.augment`). The images themselves come from :mod:`jaxlearn.data`."""

from jaxlearn.vision.augment import AugmentCB, compose, flip, noise, pad_crop, random_erase, tta, tta_accuracy
from jaxlearn.vision.models import (CNN, ConvBlock, ResBlock, ResNet, avg_pool_2x2_ceil, dropout_ps, fmnist_resnet,
                                    get_model)

__all__ = ["AugmentCB", "compose", "flip", "noise", "pad_crop", "random_erase", "tta", "tta_accuracy", "CNN",
           "ConvBlock", "ResBlock", "ResNet", "avg_pool_2x2_ceil", "dropout_ps", "fmnist_resnet", "get_model"]
