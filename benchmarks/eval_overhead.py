""" sp-timm eval's overhead against calling pyautoattack directly, and the speed-up of a 2-process sharded
evaluation on CPU.

1. In one process, alternating (A, B, A, B, ...): ``AutoAttack(version='standard').run_standard_evaluation`` on
   the points, and ``sp_timm.eval.evaluate_points`` (one chunk holding all points, no FAB) on the same model and
   points. Ratio of medians; the two also give identical robust flags.
2. ``sp-timm eval`` as 1 process, then as 2 processes (``accelerate launch --multi_gpu --num_processes 2`` with
   ACCELERATE_USE_CPU=1, one thread each; the 1-process run gets both threads), on the same chunks.

    python benchmarks/eval_overhead.py --checkpoint output/demo/runs/digits-ce/last --n 64 --reps 2
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def overhead(checkpoint: str, n: int, eps: float, reps: int) -> None:
    import torch
    from pyautoattack import AutoAttack
    from sp_timm.model_source import load_model
    from sp_timm.data import create_dataset
    from sp_timm.eval import evaluate_points
    model, info = load_model(checkpoint)
    test = create_dataset(info.dataset, 'test')
    x, y = test.images[:n].float() / 255, test.labels[:n]
    times = {'pyautoattack': [], 'sp-timm': []}
    for _ in range(reps):
        start = time.perf_counter()
        _, y_adv = AutoAttack(model, eps=eps, norm='Linf', seed=0, version='standard').run_standard_evaluation(
            x, y, batch_size=n)
        times['pyautoattack'].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = evaluate_points(model, x, y, eps=eps, batch_size=n, min_pert_examples=0, progress=False,
                               echo_warnings=False)
        times['sp-timm'].append(time.perf_counter() - start)
        assert torch.equal(ours.aa['square'], y_adv == y), 'sp-timm and pyautoattack disagree'
    a, b = statistics.median(times['pyautoattack']), statistics.median(times['sp-timm'])
    print(f'| AutoAttack standard, {n} points, Linf eps {eps:.4g} | pyautoattack {a:.1f} s | sp-timm {b:.1f} s | '
          f'{b / a:.3f}x |')


def sharding(checkpoint: str, n: int, eps: float, chunk: int) -> None:
    launcher = str(Path(sys.executable).parent / 'accelerate')
    flags = ['--checkpoint', checkpoint, '--n-examples', str(n), '--batch-size', str(chunk), '--eps', repr(eps),
             '--min-pert-examples', '0', '--no-progress']
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command, extra_env in [
            ('1 process (2 threads)', [sys.executable, '-m', 'sp_timm', 'eval'], {}),
            ('2 processes (1 thread each)', [launcher, 'launch', '--multi_gpu', '--num_processes', '2',
                                             '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend',
                                             'no', '-m', 'sp_timm.eval'],
             {'ACCELERATE_USE_CPU': '1', 'OMP_NUM_THREADS': '1'})]:
            start = time.perf_counter()
            subprocess.run(command + flags + ['--out', str(Path(tmp) / name[0])], env=dict(env, **extra_env),
                           check=True, capture_output=True)
            seconds[name] = time.perf_counter() - start
    one, two = seconds.values()
    print(f'| sp-timm eval, {n} points in chunks of {chunk} | 1 process {one:.1f} s | 2 processes {two:.1f} s | '
          f'speed-up {one / two:.2f}x |')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--n', type=int, default=64)
    p.add_argument('--eps', default='2/255')
    p.add_argument('--reps', type=int, default=2)
    args = p.parse_args()
    from sp_timm.threat.budget import parse_eps
    eps = parse_eps(args.eps)
    print(f'machine: {os.cpu_count()} CPUs; command: python benchmarks/eval_overhead.py ' + ' '.join(sys.argv[1:]))
    overhead(args.checkpoint, args.n, eps, args.reps)
    sharding(args.checkpoint, args.n, eps, args.n // 2)


if __name__ == '__main__':
    main()
