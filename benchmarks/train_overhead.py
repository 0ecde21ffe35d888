""" Training throughput of sp-timm's loop (Accelerate, TensorLoader, timm optimizer and scheduler, metrics)
against a minimal hand-written PyTorch loop on the same model, data, batch and loss, alternated round by round
in one process. Prints images/s of both and the median of the per-round ratios (goal: >= 0.95x).

    .venv/bin/python benchmarks/train_overhead.py [--model resnet20_cifar] [--rounds 5] [--adv none|pgd]
"""
import argparse
import statistics
import time

import timm
import torch

from sp_timm.cli.train import parse_train_args
from sp_timm.threat.pgd import pgd_attack
from sp_timm.train.trainer import reseed, Trainer


def hand_loop_epoch(model, optimizer, loss_fn, images, labels, batch_size, adv, eps, steps):
    """The minimal loop: fixed-order slices of float tensors already on the device, SGD, nothing else."""
    model.train()
    for start in range(0, len(labels) - batch_size + 1, batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if adv == 'pgd':
            x = pgd_attack(model, x, y, eps, eps / 4, steps)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(labels) // batch_size) * batch_size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--model', default='resnet20_cifar')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--adv', default='none', choices=('none', 'pgd'))
    parser.add_argument('--adv-steps', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    opts = parser.parse_args()

    flags = ['--dataset', 'digits', '--model', opts.model, '--batch-size', str(opts.batch_size), '--no-aug',
             '--no-progress', '--epochs', str(opts.rounds + 1), '--val-examples', '1', '--adv', opts.adv,
             '--adv-steps', str(opts.adv_steps), '--adv-step-size', '2/255', '--loss', 'sp_ls', '--output',
             f'/tmp/sp-timm-bench-{time.time_ns()}', '--lr', '0.01', '--sched', 'step', '--opt', 'momentum']
    trainer = Trainer(parse_train_args(flags))
    images, labels = trainer.train_loader.images.float().div(255), trainer.train_loader.labels
    model = timm.create_model(opts.model, **trainer.record.model_args).to(images.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = trainer.loss_fn

    hand_loop_epoch(model, optimizer, loss_fn, images, labels, opts.batch_size, opts.adv, 8 / 255, opts.adv_steps)
    trainer.train_epoch(0)  # warm-up of both
    ours, hand, ratios = [], [], []
    for round_index in range(1, opts.rounds + 1):
        reseed(0, round_index, 0)
        start = time.perf_counter()
        metrics = trainer.train_epoch(round_index)
        ours_rate = (len(trainer.train_loader) * opts.batch_size) / (time.perf_counter() - start)
        start = time.perf_counter()
        count = hand_loop_epoch(model, optimizer, loss_fn, images, labels, opts.batch_size, opts.adv, 8 / 255,
                                opts.adv_steps)
        hand_rate = count / (time.perf_counter() - start)
        ours.append(ours_rate), hand.append(hand_rate), ratios.append(ours_rate / hand_rate)
        print(f'round {round_index}: sp-timm {ours_rate:.1f} img/s (train_loss {metrics["train_loss"]:.3f}), '
              f'hand loop {hand_rate:.1f} img/s, ratio {ratios[-1]:.3f}')
    print(f'\n{opts.model}, batch {opts.batch_size}, adv {opts.adv}, {torch.get_num_threads()} threads, '
          f'device {opts.device}: '
          f'sp-timm {statistics.median(ours):.1f} img/s, hand loop {statistics.median(hand):.1f} img/s, '
          f'median ratio {statistics.median(ratios):.3f}x (goal >= 0.95x)')


if __name__ == '__main__':
    main()
