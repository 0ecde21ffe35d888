from .image_data import DataError, ImageData
from .loader import TensorLoader, random_crop_flip
from .longtail import GROUP_BOUNDS, IMBALANCE_PROFILES, class_groups, longtail_counts, longtail_indices
from .mixup import create_mixup
from .split import carve_validation, parse_val_split, resolve_val_size, stratified_split
from .sources import DATASETS, LT_SUFFIX, create_dataset, dataset_spec, list_datasets
