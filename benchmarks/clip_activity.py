""" How often does ``--clip-grad`` act? Retrains study runs (the robustness study's recipe, same flags and seed)
with the trainer's gradient-norm log and reports, per configuration, the total gradient norm ||g||_2 before
clipping and the percentage of steps the clip cut, by epoch.

The study's ``ce_clip5`` control trains the same weights as CE (its clip never acts), while ``sp_margin`` trains
with the same ``--clip-grad 5``: this says when and how much the clip acts on each. Where the study's own run of
that configuration and seed exists (``--study``), the retrained weights are compared byte for byte with it, so the
log describes the very models the study scored.

    python benchmarks/clip_activity.py --configs ce_clip5 sp_margin_m4 --settings digits digits-lt --seeds 1 2 3 4 5
    python benchmarks/clip_activity.py --from-json benchmarks/results/clip/clip_activity.json   # the table again
"""
import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _saved_table import print_saved, publish  # noqa: E402  (benchmarks/ is on sys.path above)


def retrain(setting: str, config: str, seed: int, work: Path, study: Optional[Path], epochs: int) -> Dict[str, Any]:
    """One run with the gradient-norm log: its metrics rows and whether its weights equal the study's run."""
    import robustness_study
    from sp_timm.cli.train import parse_train_args
    from sp_timm.train import read_metrics, train
    name = f'{setting}-{config}-s{seed}'
    flags = robustness_study.train_flags(setting, config, epochs, seed) + ['--output', str(work / name),
                                                                           '--no-progress']
    args = parse_train_args(flags)
    if args.clip_grad is None:
        raise SystemExit(f"clip_activity: '{config}' trains without --clip-grad, so there is nothing to measure; "
                         f"pick a configuration that clips (e.g. ce_clip5, sp_margin_m4).")
    with contextlib.redirect_stdout(io.StringIO()):
        out = train(args)
    reference = None if study is None else study / 'runs' / name / 'last' / 'model.safetensors'
    same = None
    if reference is not None and reference.exists():
        same = (out / 'last' / 'model.safetensors').read_bytes() == reference.read_bytes()
    return {'setting': setting, 'config': config, 'seed': seed, 'clip': args.clip_grad,
            'rows': read_metrics(out / 'metrics.jsonl'), 'same_as_study': same}


def summarize(runs: List[Dict[str, Any]]) -> str:
    """Markdown: per setting and configuration, over seeds, the steps clipped (all epochs), the last epoch that
    clipped, the largest norm, and the mean norm in the first and last epoch."""
    lines = ['| setting | configuration | seeds | clip | steps clipped % | last epoch that clipped (of N) | '
             'max ‖g‖ | mean ‖g‖, epoch 1 → last | weights = study run |', '|' + '---|' * 9]
    for key in dict.fromkeys((r['setting'], r['config']) for r in runs):
        group = [r for r in runs if (r['setting'], r['config']) == key]
        clipped = [statistics.mean(row['clipped_pct'] for row in r['rows']) for r in group]
        last = [max([row['epoch'] for row in r['rows'] if row['clipped_pct'] > 0], default=0) for r in group]
        epochs = len(group[0]['rows'])
        last_clipped = f'{min(last)}–{max(last)} (of {epochs})' if max(last) else f'never (of {epochs})'
        def norms(r, i):
            return r['rows'][i].get('grad_norm_mean', float('nan'))
        same = [r['same_as_study'] for r in group if r['same_as_study'] is not None]
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | {group[0]['clip']:g} | "
                     f"{statistics.mean(clipped):.1f} (seeds {min(clipped):.1f}–{max(clipped):.1f}) | "
                     f"{last_clipped} | "
                     f"{max(row.get('grad_norm_max', float('nan')) for r in group for row in r['rows']):.2f} | "
                     f"{statistics.mean(norms(r, 0) for r in group):.2f} → "
                     f"{statistics.mean(norms(r, -1) for r in group):.2f} | "
                     + (f'{sum(same)} of {len(same)}' if same else 'no study run') + ' |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    import robustness_study
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', nargs='+', default=['ce_clip5', 'sp_margin_m4'], choices=list(robustness_study.CONFIGS))
    p.add_argument('--settings', nargs='+', default=['digits', 'digits-lt'], choices=list(robustness_study.SETTINGS))
    p.add_argument('--seeds', nargs='+', type=int, default=[1, 2, 3, 4, 5])
    p.add_argument('--epochs', type=int, default=30, help="the study's --epochs (x2.5 on digits-lt)")
    p.add_argument('--study', default='benchmarks/results/study',
                   help="the study's folder; its runs/ (not in git) hold the weights compared ('': no comparison)")
    p.add_argument('--out', default=None, help='write the table (markdown) and the per-epoch log (JSON) here')
    p.add_argument('--from-json', default=None,
                   help='print the table of a saved log (OUT/clip_activity.json); no training')
    args = p.parse_args()
    if args.from_json:
        print_saved(args.from_json, 'runs', summarize)
        return
    import torch
    from tqdm import tqdm
    torch.set_num_threads(1)  # the study's workers train single-threaded: the same arithmetic, the same weights
    jobs = [(s, c, seed) for s in args.settings for c in args.configs for seed in args.seeds]
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for setting, config, seed in tqdm(jobs, desc='clip activity'):
            runs.append(retrain(setting, config, seed, Path(work), Path(args.study) if args.study else None,
                                args.epochs))
    publish(runs, 'runs', summarize, args.out, 'clip_activity')


if __name__ == '__main__':
    main()
