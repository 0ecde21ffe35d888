from .image_data import DataError, ImageData
from .loader import TensorLoader, random_crop_flip
from .longtail import GROUP_BOUNDS, IMBALANCE_PROFILES, class_groups, longtail_counts, longtail_indices
from .mixup import create_mixup
from .sources import DATASETS, LT_SUFFIX, create_dataset, dataset_spec, list_datasets
