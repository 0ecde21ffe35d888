""" Images per second of sp-timm's in-memory pipeline against a standard ``datasets`` + torchvision-transforms
``DataLoader``, on the same CIFAR-shaped data, side by side in one run.

    python benchmarks/data_throughput.py [--images 10000] [--batch-size 256] [--workers 2] [--rounds 3]

Both sides do the same work per image: random crop 32 with zero padding 4, random horizontal flip, float in
[0, 1]. The baseline decodes PIL images from a ``datasets.Dataset`` (the Hub schema: ``img``, ``label``) in
``--workers`` persistent worker processes. Each round runs one epoch of each, in alternating order; the
printed speed-up is the median of the per-round ratios.
"""
import argparse
import statistics
import time

import numpy as np
import torch

from sp_timm.formatting import format_table
from sp_timm.data import ImageData, TensorLoader


def cifar_shaped(num_images: int):
    import datasets
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, num_images)
    features = datasets.Features({'img': datasets.Image(), 'label': datasets.ClassLabel(num_classes=10)})
    hf = datasets.Dataset.from_dict({'img': [Image.fromarray(p) for p in pixels], 'label': labels.tolist()},
                                    features=features)
    ours = ImageData(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                     [str(i) for i in range(10)], 'synthetic')
    return hf, ours


def torchvision_loader(hf_dataset, batch_size: int, workers: int):
    from torchvision import transforms
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor()])

    def transform(batch):
        return {'img': [augment(im.convert('RGB')) for im in batch['img']], 'label': batch['label']}

    dataset = hf_dataset.with_transform(transform)
    def collate(rows):
        return (torch.stack([r['img'] for r in rows]), torch.tensor([r['label'] for r in rows]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0, collate_fn=collate, drop_last=False)


def epoch_rate(loader) -> float:
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=10000)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    hf, ours = cifar_shaped(args.images)
    baseline = torchvision_loader(hf, args.batch_size, args.workers)
    in_memory = TensorLoader(ours, args.batch_size, shuffle=True, augment=True)
    epoch_rate(baseline), epoch_rate(in_memory)  # warm-up: worker start, caches
    rates = {'baseline': [], 'in_memory': []}
    for round_index in range(args.rounds):
        in_memory.set_epoch(round_index + 1)
        order = ['baseline', 'in_memory'] if round_index % 2 == 0 else ['in_memory', 'baseline']
        for name in order:
            rates[name].append(epoch_rate(baseline if name == 'baseline' else in_memory))
    ratio = statistics.median(o / b for o, b in zip(rates['in_memory'], rates['baseline']))
    print(f'{args.images} CIFAR-shaped images, batch {args.batch_size}, crop+flip, '
          f'CPU threads={torch.get_num_threads()}, '
          f'median of {args.rounds} rounds')
    print(format_table(['pipeline', 'images/s (median)'], [
        [f'datasets + torchvision transforms, DataLoader({args.workers} workers)',
         f"{statistics.median(rates['baseline']):,.0f}"],
        ['sp-timm TensorLoader (in memory, batch-wise augmentation)', f"{statistics.median(rates['in_memory']):,.0f}"],
        ['speed-up', f'{ratio:.1f}x'],
    ]))


if __name__ == '__main__':
    main()
