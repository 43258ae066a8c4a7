"""Vision, the lesson-17 and fast.ai 2018 image models: the CNN ``get_model`` and the ResNet
(:mod:`~jaxlearn.vision.models`), augmentation inside the compiled step and test-time augmentation
(:mod:`~jaxlearn.vision.augment`), and lesson 7's CIFAR-10: its data (:mod:`~jaxlearn.vision.cifar`) and its ladder of
models (:mod:`~jaxlearn.vision.cifar_models`). Fashion-MNIST comes from :mod:`jaxlearn.data`."""

from jaxlearn.vision.cifar import (CIFAR10_CLASSES, CIFAR10_ENV, CIFAR10_MEAN, CIFAR10_STD, cifar10, cifar10_callbacks,
                                   cifar10_loaders)
from jaxlearn.vision.cifar_models import (BnLayer, ConvBnNet, ConvBnNet2, ConvLayer, ConvNet, ConvNet2, Resnet2,
                                          ResnetLayer, SimpleNet)
from jaxlearn.vision.augment import AugmentCB, compose, flip, noise, pad_crop, random_erase, tta, tta_accuracy
from jaxlearn.vision.models import (CNN, ConvBlock, ResBlock, ResNet, avg_pool_2x2_ceil, dropout_ps, fmnist_resnet,
                                    get_model)

__all__ = ["AugmentCB", "compose", "flip", "noise", "pad_crop", "random_erase", "tta", "tta_accuracy", "CNN",
           "ConvBlock", "ResBlock", "ResNet", "avg_pool_2x2_ceil", "dropout_ps", "fmnist_resnet", "get_model",
           "CIFAR10_CLASSES", "CIFAR10_ENV", "CIFAR10_MEAN", "CIFAR10_STD", "cifar10", "cifar10_callbacks",
           "cifar10_loaders", "BnLayer", "ConvBnNet", "ConvBnNet2", "ConvLayer", "ConvNet", "ConvNet2", "Resnet2",
           "ResnetLayer", "SimpleNet"]
