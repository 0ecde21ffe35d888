""" CIFAR architectures registered with timm (``timm.create_model('wrn28_10_cifar')`` after ``import sp_timm``),
all taking inputs in [0, 1] and normalising inside. """
from ._base import CifarClassifier, cifar_cfg
from ._normalize import CIFAR10_MEAN, CIFAR10_STD, InputNormalization
from .preact_resnet import PreActResNet
from .resnet_cifar import CifarResNet
from .small_cnn import SmallCNN
from .wide_resnet import WideResNet

CIFAR_MODELS = ('wrn28_10_cifar', 'wrn34_10_cifar', 'wrn34_20_cifar', 'wrn70_16_cifar', 'preact_resnet18_cifar',
                'resnet20_cifar', 'resnet32_cifar', 'small_cnn_cifar')

__all__ = ['CIFAR_MODELS', 'CifarClassifier', 'cifar_cfg', 'CIFAR10_MEAN', 'CIFAR10_STD', 'InputNormalization',
           'PreActResNet',
           'CifarResNet', 'SmallCNN', 'WideResNet']
