""" Dataset sources: CIFAR-10/100 through Hugging Face ``datasets`` (Hub or a local copy), sklearn's digits,
and their long-tailed variants, all returned as ``ImageData``.

Names: ``cifar10``, ``cifar100``, ``digits`` and ``cifar10-lt``, ``cifar100-lt``, ``digits-lt``; ``imagefolder``: any
local dataset of 32x32 colour images in the formats of ``--data-dir``, with any number (>= 2) of classes.
"""
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .class_names import class_names
from ..errors import DataError
from .image_data import ImageData
from .longtail import longtail_counts, longtail_indices

__all__ = ['DatasetSpec', 'DATASETS', 'create_dataset', 'list_datasets', 'dataset_spec', 'LT_SUFFIX']

LT_SUFFIX = '-lt'
SPLITS = ('train', 'test')


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int  # 0: whatever the data holds (imagefolder)
    train_per_class: int  # balanced training images per class (n_max of the long-tailed variant)
    test_per_class: int
    hub_id: Optional[str] = None
    label_column: str = 'label'
    image_shape: Tuple[int, int, int] = (3, 32, 32)  # (C, H, W) of every image, as loaded (digits: resized)


DATASETS: Dict[str, DatasetSpec] = {
    'cifar10': DatasetSpec('cifar10', 10, 5000, 1000, 'uoft-cs/cifar10', 'label'),
    'cifar100': DatasetSpec('cifar100', 100, 500, 100, 'uoft-cs/cifar100', 'fine_label'),
    # 1797 images; the split below leaves 134..141 per class for training (n_max of digits-lt: 134), 40..42 to test.
    'digits': DatasetSpec('digits', 10, 134, 41),
    # a user's own classification task: the classes (>= 2) and images come from --data-dir alone
    'imagefolder': DatasetSpec('imagefolder', 0, 0, 0),
}
ANY_CLASSES = ('imagefolder',)  # datasets whose class count is the data's
IMAGE_COLUMNS = ('img', 'image')
COLOR_MODES = ('RGB', 'RGBA', 'P', 'CMYK', 'YCbCr')  # PIL modes of colour images (grayscale ones are refused)
DIGITS_TEST_SIZE = 413
DIGITS_SPLIT_SEED = 0


def list_datasets():
    return sorted(DATASETS) + sorted(n + LT_SUFFIX for n in DATASETS if n not in ANY_CLASSES)


def dataset_spec(name: str) -> DatasetSpec:
    base = name[:-len(LT_SUFFIX)] if name.endswith(LT_SUFFIX) else name
    if base not in DATASETS or name not in list_datasets():
        raise DataError(f"Unknown dataset '{name}'; choose one of {', '.join(list_datasets())}.")
    return DATASETS[base]


def create_dataset(
        name: str,
        split: str = 'train',
        data_dir: Optional[str] = None,
        imbalance_ratio: float = 100.0,
        imbalance_profile: str = 'exp',
) -> ImageData:
    """Load ``split`` ('train' | 'test') of dataset ``name``.

    For the ``-lt`` variants the training split keeps ``longtail_counts(n_max, C, imbalance_ratio,
    imbalance_profile)`` images per class (LDAM-DRW's subsampling, numpy seed 0); the test split stays balanced.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}.")
    spec = dataset_spec(name)
    if spec.name == 'digits' and data_dir is not None:  # it would be ignored, and cards would ask for it
        raise DataError(f"--data-dir {data_dir}: {name} ships with scikit-learn and is never read from a folder; "
                        f"leave --data-dir out.")
    if spec.hub_id is None and spec.name != 'digits' and data_dir is None:
        raise DataError(f"{name} is your own data: give --data-dir, a folder with {split}/<class>/*.png (32x32 colour "
                        f"images, one subfolder per class), a save_to_disk folder or parquet files.")
    data = load_digits(split) if spec.name == 'digits' else load_hf_images(spec, split, data_dir)
    if name.endswith(LT_SUFFIX) and split == 'train':
        n_max = min(data.class_counts())
        counts = longtail_counts(n_max, data.num_classes, imbalance_ratio, imbalance_profile)
        data = data.subset(longtail_indices(data.labels.numpy(), counts),
                           f'long-tailed: {imbalance_profile} profile, ratio {imbalance_ratio:g}')
        data.meta.update(imbalance_ratio=imbalance_ratio, imbalance_profile=imbalance_profile)
    data.meta['dataset'] = name
    return data


def load_digits(split: str) -> ImageData:
    """scikit-learn's 8x8 handwritten digits (real data shipped inside scikit-learn) as 3x32x32.

    Pixel values 0..16 are divided by 16, bilinearly resized to 32x32 (``align_corners=False``), repeated
    over 3 channels and stored as uint8 (x 255, rounded). The split is stratified by class, seed 0,
    413 test images (the rest, 1384, for training).
    """
    import torch
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split
    digits = sk_load_digits()
    pixels = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    pixels = torch.nn.functional.interpolate(pixels, size=(32, 32), mode='bilinear', align_corners=False)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    train_idx, test_idx = train_test_split(np.arange(len(digits.target)), test_size=DIGITS_TEST_SIZE,
                                           stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    index = torch.as_tensor(np.sort(train_idx if split == 'train' else test_idx))
    return ImageData(images[index], torch.as_tensor(digits.target)[index], [str(d) for d in range(10)],
                     'sklearn.datasets.load_digits')


def load_hf_images(spec: DatasetSpec, split: str, data_dir: Optional[str] = None) -> ImageData:
    """A CIFAR-style image dataset from the Hub (``spec.hub_id``) or from ``data_dir``: a ``save_to_disk``
    folder (of a DatasetDict, or one per split named after it), a folder of parquet files (file names containing the
    split), or an image folder with one subfolder per split and one per class inside it. Parquet files belong to a
    split when their name starts with it (the Hub's ``train-00000-of-00001.parquet``) or their folder is named after
    it."""
    import datasets
    if data_dir is None:
        try:
            dataset = datasets.load_dataset(spec.hub_id, split=split)
        except Exception as err:  # offline, no cache, no access: say how to provide the data
            raise DataError(
                f"Could not load '{spec.hub_id}' ({type(err).__name__}: {str(err)[:200]}). Without network access, "
                "give --data-dir: a folder written by datasets' save_to_disk, a folder of parquet files, or an image "
                f"folder ({split}/<class>/*.png); or copy the Hugging Face cache of '{spec.hub_id}' here.") from err
        source = spec.hub_id
    else:
        dataset = _load_local(Path(data_dir), split)
        source = str(data_dir)
    return _to_image_data(dataset, spec, source)


def _load_local(path: Path, split: str):
    import datasets
    if not path.exists():
        raise DataError(f"--data-dir {path} does not exist.")
    if (path / 'dataset_dict.json').exists() or (path / 'state.json').exists():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} has splits {list(loaded)}, not '{split}'.")
            return loaded[split]
        return _one_saved_split(loaded, path, split)
    if (path / split / 'state.json').exists():
        return _one_saved_split(datasets.load_from_disk(str(path / split)), path / split, split)
    parquet = sorted(p for p in path.rglob('*.parquet') if p.name.startswith(split) or p.parent.name == split)
    if parquet:
        return datasets.load_dataset('parquet', data_files={split: [str(p) for p in parquet]}, split=split)
    if (path / split).is_dir():
        return datasets.load_dataset('imagefolder', data_dir=str(path), split=split)
    raise DataError(f"{path} holds no dataset for split '{split}': expected a save_to_disk folder, parquet files "
                    f"named '{split}-*.parquet', or an image folder {path / split}/<class>/.")


def _one_saved_split(dataset, path: Path, split: str):
    """``dataset`` (one split, saved alone by ``save_to_disk``) if it is ``split``: by the split it records
    (``load_dataset(..., split='test')`` records 'test'), else by its folder's name; never one split served as
    another (training images as the test split)."""
    recorded = str(dataset.split) if dataset.split is not None else None
    if (recorded or path.name) != split:
        found = f"the '{recorded}' split" if recorded else f"one split of unknown name (its folder is '{path.name}')"
        raise DataError(f"{path} holds {found} saved by save_to_disk, not the '{split}' split. Give --data-dir the "
                        f"folder of a DatasetDict (with dataset_dict.json), or a folder holding one save_to_disk "
                        f"folder per split, named after it ({path.parent if path.name == split else path}/{split}).")
    return dataset


def _to_image_data(dataset, spec: DatasetSpec, source: str) -> ImageData:
    import datasets
    import torch
    from tqdm.auto import tqdm
    columns = dataset.column_names
    image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
    label_column = next((c for c in (spec.label_column, 'label') if c in columns), None)
    if image_column is None or label_column is None:
        raise DataError(f"{source}: expected an image column {IMAGE_COLUMNS} and a label column "
                        f"'{spec.label_column}', found columns {columns}.")
    feature = dataset.features[label_column]
    if spec.num_classes == 0 and not hasattr(feature, 'names'):
        raise DataError(f"{source}: '{label_column}' names no classes; an image folder names them by its subfolders "
                        f"({'/'.join(('<split>', '<class>', '*.png'))}).")
    classes = list(feature.names) if hasattr(feature, 'names') else class_names(spec.name, spec.num_classes)
    if spec.num_classes and len(classes) != spec.num_classes:
        raise DataError(f"{source}: '{label_column}' has {len(classes)} classes, {spec.name} has {spec.num_classes}.")
    if len(classes) < 2:
        raise DataError(f"{source}: {len(classes)} class ({', '.join(classes)}); a classifier needs >= 2.")
    if len(dataset) == 0:
        raise DataError(f"{source}: the split holds no images.")
    try:  # undecoded, so that parquet written without the Image feature (dicts of bytes) loads as well
        encoded = dataset.cast_column(image_column, datasets.Image(decode=False))[image_column]
        labels = torch.as_tensor(dataset[label_column])
    except Exception as err:  # datasets / arrow raise many types for a column of another kind
        raise DataError(f"{source}: columns '{image_column}' / '{label_column}' do not hold images and integer labels "
                        f"({type(err).__name__}: {str(err)[:200]}).") from err
    images = np.stack([_decode_image(value, i, spec, source) for i, value in enumerate(tqdm(
        encoded, desc=f'decode {spec.name}', disable=len(dataset) < 5000, leave=False))])
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes, source)


def _decode_image(value: Any, index: int, spec: DatasetSpec, source: str) -> np.ndarray:
    """One encoded image (``{'bytes': ..., 'path': ...}``) as an (H, W, 3) uint8 array, or a ``DataError`` naming
    the image when it does not decode or does not have the size and colour of ``spec``'s images."""
    from PIL import Image
    value = value if isinstance(value, dict) else {}
    if value.get('bytes') is None and not value.get('path'):
        raise DataError(f"{source}: image {index} is empty (no bytes, no path).")
    try:
        image = Image.open(io.BytesIO(value['bytes']) if value.get('bytes') is not None else value['path'])
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{source}: image {index} cannot be decoded ({type(err).__name__}: {str(err)[:200]}); the data "
                        f"is corrupt or not an image. Re-create the dataset (PNG or JPEG images).") from err
    channels, height, width = spec.image_shape
    if image.size != (width, height) or image.mode not in COLOR_MODES:
        raise DataError(f"{source}: image {index} is {image.size[0]}x{image.size[1]} {image.mode}, but {spec.name} "
                        f"images are {width}x{height} RGB: is this a copy of another dataset? Give --data-dir a copy "
                        f"of {spec.name}" + (f" ('{spec.hub_id}')." if spec.hub_id else '.'))
    return np.asarray(image.convert('RGB'))
