""" Datasets (CIFAR-10/100, digits and their long-tailed variants), loaders, long-tail groups, mixup, validation
splits. The names below load their modules (and torch) on first use: ``sp-timm data --help`` stays light. """
from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('DataError', 'ImageData'), 'image_data'),
    **dict.fromkeys(('TensorLoader', 'random_crop_flip'), 'loader'),
    **dict.fromkeys(('GROUP_BOUNDS', 'GROUP_RULES', 'IMBALANCE_PROFILES', 'class_groups', 'group_rule',
                     'longtail_counts',
                     'longtail_indices'), 'longtail'),
    'create_mixup': 'mixup',
    **dict.fromkeys(('carve_validation', 'parse_val_split', 'resolve_val_size', 'stratified_split'), 'split'),
    **dict.fromkeys(('DATASETS', 'LT_SUFFIX', 'create_dataset', 'dataset_spec', 'list_datasets'), 'sources'),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
