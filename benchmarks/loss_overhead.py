""" Forward + backward time of every SP member relative to ``F.cross_entropy``, measured side by side.

    python benchmarks/loss_overhead.py [--batch-size 512] [--classes 10 100 1000] [--rounds 30] [--device cpu]

Each round times CE, every member and two label-smoothed CE references once, in an order shuffled per round, on
the same logits and labels; the printed figure is the median over rounds of (member time / CE time of that round),
so load changes on a noisy machine hit both sides of a ratio alike.
"""
import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from timm.loss import LabelSmoothingCrossEntropy

from sp_timm import create_loss, list_losses
from sp_timm.formatting import format_table


def time_fwd_bwd(loss_fn, logits, target, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        logits.grad = None
        loss_fn(logits, target).backward()
    if logits.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch-size', type=int, default=512)
    parser.add_argument('--classes', type=int, nargs='+', default=[10, 100, 1000])
    parser.add_argument('--rounds', type=int, default=30)
    parser.add_argument('--iters', type=int, default=20, help='calls per timing')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    references = {  # other non-fused losses, for scale
        'F.cross_entropy(label_smoothing=0.1)': lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1),
        'timm LabelSmoothingCrossEntropy(0.1)': LabelSmoothingCrossEntropy(0.1),
    }
    losses = {'ce': F.cross_entropy, **{name: create_loss(name) for name in list_losses('sp_*')}, **references}
    members = [n for n in losses if n != 'ce']
    ratios = {n: {} for n in members}
    ce_ms = {}
    for num_classes in args.classes:
        logits = torch.randn(args.batch_size, num_classes, device=args.device, requires_grad=True)
        target = torch.randint(0, num_classes, (args.batch_size,), device=args.device)
        for fn in losses.values():  # warm-up
            time_fwd_bwd(fn, logits, target, 3)
        per_round = {n: [] for n in members}
        ce_times = []
        for _ in range(args.rounds):
            order = list(losses)
            random.shuffle(order)
            times = {n: time_fwd_bwd(losses[n], logits, target, args.iters) for n in order}
            ce_times.append(times['ce'])
            for n in members:
                per_round[n].append(times[n] / times['ce'])
        ce_ms[num_classes] = 1e3 * statistics.median(ce_times)
        for n in members:
            ratios[n][num_classes] = statistics.median(per_round[n])
    header = ['loss'] + [f'K={k}' for k in args.classes]
    rows = [['F.cross_entropy (ms)'] + [f'{ce_ms[k]:.3f} ms' for k in args.classes]]
    rows += [[n] + [f'{ratios[n][k]:.2f}x' for k in args.classes] for n in members]
    print(f'forward+backward, B={args.batch_size}, device={args.device}, torch {torch.__version__}, '
          f'threads={torch.get_num_threads()}, median of {args.rounds} rounds x {args.iters} calls')
    print(format_table(header, rows))


if __name__ == '__main__':
    main()
