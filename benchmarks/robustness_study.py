""" Robustness study: every SP member (a small parameter grid) against CE and CE + label smoothing (the known
baseline), over seeds, on digits and digits-lt, standard training and PGD-AT. Each run trains the demo's network
with the demo's recipe (sp_timm.demo.demo_train_flags), then measures clean accuracy, AutoAttack (standard, Linf)
accuracy and the median FAB minimal Linf perturbation on the first --n-examples test images.

Resumable: every finished run is one JSON file in OUT/runs/; a rerun skips them. Runs go to --workers processes
(one thread each). The summary (mean and 95% t-interval over seeds) goes to OUT/summary.md and is printed, with
the choice of the default SP loss: the SP configuration with the highest mean AutoAttack accuracy on digits
(standard training) among those whose mean clean accuracy is within 1 point of CE's.

    python benchmarks/robustness_study.py --out output/study            # the README's table
    python benchmarks/robustness_study.py --out output/study --seeds 1 --settings digits   # a smaller look
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

LOSSES = {  # name -> loss flags
    'ce': ['--loss', 'ce'],
    'ce_ls0.1': ['--loss', 'ce', '--smoothing', '0.1'],
    'ce_clip5': ['--loss', 'ce', '--clip-grad', '5'],  # control: sp_margin trains with this clipping
    'sp_ls_p0.9': ['--loss', 'sp_ls', '--sp-pstar', '0.9'],
    'sp_ls_p0.8': ['--loss', 'sp_ls', '--sp-pstar', '0.8'],
    'sp_logit_l0.05': ['--loss', 'sp_logit', '--sp-lam', '0.05'],
    'sp_ce_p0.9': ['--loss', 'sp_ce', '--sp-pstar', '0.9'],
    'sp_margin_m2': ['--loss', 'sp_margin', '--sp-margin', '2.0', '--clip-grad', '5'],
    'sp_focal_g2_p0.9': ['--loss', 'sp_focal', '--sp-gamma', '2', '--sp-pstar', '0.9'],
}
SETTINGS = {  # name -> (dataset, extra training flags)
    'digits': ('digits', []),
    'digits-lt': ('digits-lt', []),
    'digits-pgdat': ('digits', ['--adv', 'pgd', '--adv-steps', '3', '--adv-eps', '2/255', '--adv-step-size', '1/255',
                                '--adv-val-examples', '0']),
    'digits-lt-pgdat': ('digits-lt', ['--adv', 'pgd', '--adv-steps', '3', '--adv-eps', '2/255', '--adv-step-size', '1/255',
                                      '--adv-val-examples', '0']),
}


def run_one(job):
    """Train and evaluate one (setting, loss, seed); returns the measurements."""
    import torch
    torch.set_num_threads(1)
    import sp_timm  # noqa: F401
    from sp_timm.checkpoint import load_model
    from sp_timm.data import create_dataset
    from sp_timm.demo import DEMO_IMBALANCE, demo_train_flags
    from sp_timm.eval import evaluate_points
    from sp_timm.eval.report import perturbation_summary
    from sp_timm.train import parse_train_args, train
    setting, loss, seed, cfg = job
    dataset, extra = SETTINGS[setting]
    run_dir = Path(cfg['out']) / 'work' / f'{setting}-{loss}-s{seed}'
    flags = demo_train_flags(LOSSES[loss], dataset, cfg['epochs'], seed) + extra + ['--output', str(run_dir), '--no-progress']
    if (run_dir / 'last').exists():
        flags += ['--resume', str(run_dir)]
    start = time.perf_counter()
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        train(parse_train_args(flags))
        model, _ = load_model(str(run_dir / 'last'))
        test = create_dataset(dataset, 'test', imbalance_ratio=DEMO_IMBALANCE)
        n = cfg['n_examples']
        x, y = test.images[:n].float() / 255, test.labels[:n]
        result = evaluate_points(model, x, y, eps=cfg['eps'], batch_size=256, min_pert_norms=['Linf'],
                                 fab_iters=cfg['fab_iters'], progress=False, echo_warnings=False)
    aa = result['aa']
    return {'setting': setting, 'loss': loss, 'seed': seed, 'n': n, 'eps': cfg['eps'],
            'clean_acc': 100 * aa['clean'].double().mean().item(), 'robust_acc': 100 * aa['square'].double().mean().item(),
            'median_linf': perturbation_summary(result['min_perturbation']['Linf'])['median'],
            'warnings': result['warnings'], 'seconds': time.perf_counter() - start}


def _mean_ci(values):
    from scipy.stats import t
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def summarize(rows, command):
    fmt = lambda m, h, scale=1.0, d=2: '–' if m is None else (f'{m * scale:.{d}f}' + ('' if h is None else f' ± {h * scale:.{d}f}'))
    lines = [f'Command: `{command}`', '',
             '| setting | loss | seeds | clean % | AutoAttack % | median FAB Linf (x/255) | AA warned |',
             '|---|---|---|---|---|---|---|']
    table = {}
    for setting in SETTINGS:
        for loss in LOSSES:
            runs = [r for r in rows if r['setting'] == setting and r['loss'] == loss]
            if not runs:
                continue
            stats = {k: _mean_ci([r[k] for r in runs]) for k in ('clean_acc', 'robust_acc', 'median_linf')}
            table[setting, loss] = stats
            lines.append(f"| {setting} | {loss} | {len(runs)} | {fmt(*stats['clean_acc'])} | {fmt(*stats['robust_acc'])} | "
                         f"{fmt(*stats['median_linf'], scale=255)} | {sum(bool(r['warnings']) for r in runs)} |")
    lines += ['', 'mean ± half-width of the 95% t-interval over seeds.']
    ce = table.get(('digits', 'ce'))
    if ce:
        eligible = [(s['robust_acc'][0], loss) for (setting, loss), s in table.items()
                    if setting == 'digits' and loss.startswith('sp_') and s['clean_acc'][0] >= ce['clean_acc'][0] - 1]
        if eligible:
            best_acc, best = max(eligible)
            verdict = 'beats' if best_acc > ce['robust_acc'][0] else 'does NOT beat'
            lines += ['', f"Default SP loss (highest mean AutoAttack accuracy on digits among SP configurations within 1 "
                          f"point of CE's clean accuracy): **{best}**, {best_acc:.2f}% vs CE {ce['robust_acc'][0]:.2f}%: it "
                          f"{verdict} CE."]
        else:
            lines += ['', 'No SP configuration is within 1 point of CE clean accuracy on digits.']
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='output/study')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--settings', nargs='*', default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument('--losses', nargs='*', default=list(LOSSES), choices=list(LOSSES))
    p.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--n-examples', type=int, default=100)
    p.add_argument('--eps', default='3/255')
    p.add_argument('--fab-iters', type=int, default=20)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sp_timm.eval.budget import parse_eps
    from sp_timm.checkpoint import atomic_write_json, atomic_write_text
    cfg = {'out': args.out, 'epochs': args.epochs, 'n_examples': args.n_examples,
           'eps': parse_eps(args.eps), 'fab_iters': args.fab_iters}
    runs = Path(args.out) / 'runs'
    jobs = [(s, l, seed, cfg) for s in args.settings for seed in range(args.seeds) for l in args.losses]
    todo = [j for j in jobs if not (runs / f'{j[0]}-{j[1]}-s{j[2]}.json').exists()]
    print(f'{len(jobs)} runs, {len(jobs) - len(todo)} done before, {len(todo)} to go on {args.workers} workers')
    from tqdm import tqdm
    import multiprocessing as mp
    with mp.get_context('spawn').Pool(args.workers, maxtasksperchild=1) as pool:
        for row in tqdm(pool.imap_unordered(run_one, todo), total=len(todo), desc='study'):
            atomic_write_json(runs / f"{row['setting']}-{row['loss']}-s{row['seed']}.json", row)
            tqdm.write(f"{row['setting']} {row['loss']} seed {row['seed']}: clean {row['clean_acc']:.1f}, AA "
                       f"{row['robust_acc']:.1f}, median FAB {255 * (row['median_linf'] or 0):.2f}/255 ({row['seconds']:.0f} s)")
    rows = [json.loads(f.read_text()) for f in sorted(runs.glob('*.json'))]
    command = 'python benchmarks/robustness_study.py ' + ' '.join(sys.argv[1:])
    summary = summarize(rows, command)
    atomic_write_text(Path(args.out) / 'summary.md', summary)
    print(summary)


if __name__ == '__main__':
    main()
