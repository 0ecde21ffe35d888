""" ``sp-timm demo``: the paper's claims, measured on real data in minutes on a CPU.

CE and the default SP loss train the same network with the same seed and budget on scikit-learn's digits and
on its long-tailed variant (``digits-lt``, imbalance ratio 10), through ``sp-timm train``'s code; ``sp-timm
eval``'s code attacks each with AutoAttack (standard, Linf) and measures FAB minimal perturbations; ``sp-timm
export`` writes each as a Hub folder with its model card. A toy 2-D problem shows where each loss puts the
boundary between two classes. Output: ``results.json``, ``report.md``, figures, leaderboard JSONs, Hub folders.
"""
import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # imported where used: sp-timm demo --help imports neither torch nor timm
    import torch

__all__ = ['DEMO_LOSSES', 'DEMO_EPS', 'demo_train_flags', 'run_demo', 'toy_boundary', 'main', 'build_demo_parser']

# the default SP loss (chosen by benchmarks/robustness_study.py) against cross-entropy
# sp_margin's gradient grows with the margin error: it needs --clip-grad (see docs/training.md)
DEMO_LOSSES: Dict[str, List[str]] = {'ce': ['--loss', 'ce'],
                                     'sp': ['--loss', 'sp_margin', '--sp-margin', '4.0', '--clip-grad', '5']}
DEMO_EPS = 2 / 255  # digits are 8x8 images upsampled to 32x32: the median FAB Linf distance of its models is ~2.5/255
DEMO_IMBALANCE = 10.0
DEMO_DATASETS = ('digits', 'digits-lt')
DEMO_DESCRIPTION = ('Train the same small CNN with cross-entropy and with the default SP loss on digits and digits-lt, '
                    'attack both with AutoAttack and audit the result, measure FAB minimal perturbations, and write a report, figures, '
                    'leaderboard entries and Hub folders (5-17 minutes on 2 CPUs; --quick: about 2).')
LT_EPOCH_FACTOR = 2.5
# the adaptive audit (sp-timm eval --audit) at a CPU-sized budget; the SP model is also attacked with the CE
# model's adversarial examples (--surrogate)
DEMO_AUDIT = ('--audit', '--audit-restarts', '2', '--audit-margin-restarts', '3', '--audit-margin-steps', '100',
              '--audit-square-queries', '1000', '--audit-square-restarts', '1')
BUDGET_KEYS = ('epochs', 'autoattack_points', 'fab_points', 'fab_iters', 'fab_norms', 'datasets', 'audit_flags')
_BUDGETS = {  # (epochs, AutoAttack points, FAB points, FAB iterations, FAB norms, datasets, audit flags)
    'full': (30, 100, 100, 30, ('Linf', 'L2'), DEMO_DATASETS, DEMO_AUDIT),
    'quick': (10, 24, 24, 10, ('Linf',), DEMO_DATASETS[:1], DEMO_AUDIT),
}


def demo_train_flags(loss_flags: Sequence[str], dataset: str, epochs: int, seed: int = 0) -> List[str]:
    """The demo's recipe (recipes/digits_small_cnn_{ce,sp}.yaml) as ``sp-timm train`` flags. digits-lt (544
    training images at ratio 10) trains ``LT_EPOCH_FACTOR`` times as many epochs: about the same number of updates."""
    if dataset.endswith('-lt'):
        epochs = round(LT_EPOCH_FACTOR * epochs)
    flags = ['--dataset', dataset, '--model', 'small_cnn_cifar', '--epochs', str(epochs), '--batch-size', '64',
             '--opt', 'momentum', '--lr', '0.05', '--momentum', '0.9', '--weight-decay', '5e-4', '--sched', 'cosine',
             '--no-aug', '--seed', str(seed)] + list(loss_flags)
    if dataset.endswith('-lt'):
        flags += ['--imbalance-ratio', f'{DEMO_IMBALANCE:g}']
    return flags


def _train(loss: str, dataset: str, out: Path, epochs: int, progress: bool) -> Path:
    from .train import parse_train_args, train
    run = out / 'runs' / f'{dataset}-{loss}'
    flags = demo_train_flags(DEMO_LOSSES[loss], dataset, epochs) + ['--output', str(run)]
    total = int(flags[flags.index('--epochs') + 1])
    if (run / 'last').exists() and json.loads((run / 'last' / 'state.json').read_text())['epoch'] >= total:
        return run / 'last'  # finished by an earlier (interrupted) demo
    flags += ['--resume', str(run)] if (run / 'last').exists() else []
    flags += [] if progress else ['--no-progress']
    return train(parse_train_args(flags)) / 'last'


def _evaluate(checkpoint: Path, dataset: str, out: Path, budget: Tuple, eps: float, progress: bool,
              surrogate: Optional[Path] = None) -> Dict[str, Any]:
    from .eval import build_eval_parser, evaluate
    _, n_aa, n_fab, fab_iters, norms, _, audit = budget
    args = ['--checkpoint', str(checkpoint), '--dataset', dataset, '--eps', repr(eps), '--n-examples', str(n_aa),
            '--batch-size', '256', '--min-pert-examples', str(n_fab), '--fab-iters', str(fab_iters),
            '--min-pert-norms', *norms, '--out', str(out), *audit] + ([] if progress else ['--no-progress'])
    args += ['--surrogate', str(surrogate)] if surrogate is not None else []
    if dataset.endswith('-lt'):
        args += ['--imbalance-ratio', f'{DEMO_IMBALANCE:g}']
    evaluate(build_eval_parser().parse_args(args))
    return json.loads((out / 'report.json').read_text())


def toy_boundary(path: Path, steps: int = 1500, seed: int = 0) -> Dict[str, Any]:
    """Two Gaussian classes in 2-D (200 and 20 points, an imbalanced pair), the same MLP trained with CE and with
    the default SP loss by full-batch gradient descent; plots both decision boundaries and returns, per loss, the
    distance from the boundary to the nearest point of each class (the margins the paper is about)."""
    import torch
    from .eval.plots import pyplot, save_figure
    from .losses import create_classification_loss
    generator = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(200, 2, generator=generator) * 0.5 + torch.tensor([-1.5, 0.0]),
                   torch.randn(20, 2, generator=generator) * 0.5 + torch.tensor([1.5, 0.0])])
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    grid_x, grid_y = torch.meshgrid(torch.linspace(-4, 4, 240), torch.linspace(-3, 3, 180), indexing='xy')
    grid = torch.stack([grid_x.flatten(), grid_y.flatten()], 1)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    result = {}
    for ax, flags in zip(axes, DEMO_LOSSES.values()):
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 2))
        loss_name = flags[1]
        params = {f'sp_{flags[i][5:]}': float(flags[i + 1]) for i in range(2, len(flags), 2) if flags[i].startswith('--sp-')}
        loss_fn = create_classification_loss(loss_name, **params)
        optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(mlp(x), y).backward()
            torch.nn.utils.clip_grad_norm_(mlp.parameters(), 5.0)  # as the demo's recipe (sp_margin needs it)
            optimizer.step()
        with torch.no_grad():
            margin = mlp(grid)
            margin = (margin[:, 1] - margin[:, 0]).reshape(grid_x.shape)
            boundary = (margin[:, 1:] * margin[:, :-1] <= 0)  # sign changes along x
        xs = grid_x[:, 1:][boundary]
        ys = grid_y[:, 1:][boundary]
        points = torch.stack([xs, ys], 1)
        gaps = {int(c): torch.cdist(x[y == c], points).min().item() if len(points) else float('nan') for c in (0, 1)}
        result[loss_name] = {'distance_to_majority': gaps[0], 'distance_to_minority': gaps[1],
                             'train_acc': 100 * (mlp(x).argmax(1) == y).double().mean().item()}
        shading = ax.contourf(grid_x, grid_y, margin.clamp(-8, 8), levels=list(range(-8, 9)), cmap='RdBu_r', alpha=0.35)
        ax.contour(grid_x, grid_y, margin, levels=[0], colors='k', linewidths=2)
        ax.axvline(0, color='gray', linestyle=':', linewidth=1)
        ax.scatter(*x[y == 0].T, s=8, c='tab:blue', label='class 0 (200)')
        ax.scatter(*x[y == 1].T, s=16, c='tab:red', label='class 1 (20)')
        ax.set_title(f'{loss_name}: boundary to nearest point\n{gaps[0]:.2f} (class 0) / {gaps[1]:.2f} (class 1)', fontsize=9)
        ax.legend(fontsize=7, loc='lower left')
    fig.colorbar(shading, ax=list(axes), label='logit margin z1 - z0 (clipped at ±8)', shrink=0.9, pad=0.02)
    fig.suptitle('Where CE and SP put the decision boundary (black; dotted: the middle between the class means)',
                 y=1.04)
    save_figure(fig, path)
    return result


def _row(report: Dict[str, Any]) -> Dict[str, Any]:
    pert = report.get('min_perturbation', {}).get('Linf', {})
    groups = report.get('groups', {})
    rare = list(groups.values())[-1] if groups else {}  # few (shot rule) or tail (thirds rule)
    return {'clean_acc': report['clean_acc'], 'clean_ci': report['clean_ci'], 'robust_acc': report['robust_acc'],
            'robust_ci': report['robust_ci'], 'median_linf': pert.get('median'),
            'median_l2': report.get('min_perturbation', {}).get('L2', {}).get('median'),
            'balanced_clean_acc': report['balanced_clean_acc'], 'balanced_robust_acc': report['balanced_robust_acc'],
            'few_clean_acc': rare.get('clean_acc'), 'few_robust_acc': rare.get('robust_acc'),
            'group_rule': report.get('group_rule', {}).get('description') if report.get('long_tailed') else None,
            'audited_acc': (report.get('audit') or {}).get('robust_acc'),
            'audited_ci': (report.get('audit') or {}).get('robust_ci'),
            'audit_reasons': (report.get('audit') or {}).get('reasons', []),
            'unreliable': report['unreliable'], 'warnings': report['warnings']}


def _table(results: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    from .formatting import format_table
    fmt = lambda v, d=2: '–' if v is None else f'{v:.{d}f}'
    rows = []
    for dataset, by_loss in results.items():
        for loss, r in by_loss.items():
            rows.append([dataset, loss, f"{fmt(r['clean_acc'])} [{fmt(r['clean_ci'][0], 1)}, {fmt(r['clean_ci'][1], 1)}]",
                         f"{fmt(r['robust_acc'])} [{fmt(r['robust_ci'][0], 1)}, {fmt(r['robust_ci'][1], 1)}]",
                         '–' if r.get('audited_acc') is None else
                         f"{fmt(r['audited_acc'])} [{fmt(r['audited_ci'][0], 1)}, {fmt(r['audited_ci'][1], 1)}]",
                         fmt(None if r['median_linf'] is None else 255 * r['median_linf']),
                         fmt(r['balanced_clean_acc']), fmt(r['few_clean_acc']), fmt(r['few_robust_acc']),
                         'yes' if r['unreliable'] else 'no'])
    return format_table(['data', 'loss', 'clean % [95% CI]', 'AutoAttack % [95% CI]', 'audited AA % [95% CI]',
                         'median FAB Linf (x/255)', 'balanced clean %', 'few-shot clean %', 'few-shot AA %',
                         'unreliable'], rows)


def run_demo(out: Path, quick: bool = False, eps: float = DEMO_EPS, progress: bool = True,
             workers: int = 1) -> Dict[str, Any]:
    """Train, attack, compare and export; returns the results written to ``out/results.json``."""
    from .files import atomic_write_json, atomic_write_text
    from .eval.stats import paired_test
    from .threat.budget import format_eps
    budget = _BUDGETS['quick' if quick else 'full']
    start = time.perf_counter()
    out = Path(out)
    results: Dict[str, Any] = {'eps': eps, 'eps_str': format_eps(eps), 'quick': quick,
        'budget': dict(zip(BUDGET_KEYS, budget)), 'losses': DEMO_LOSSES,
        'imbalance_ratio': DEMO_IMBALANCE, 'table': {}, 'paired': {}}
    reports: Dict[str, Dict[str, Any]] = {}
    figures = ['toy_boundary.png']
    _claim_folder(out, results['budget'], eps)
    print(f"sp-timm demo: CE vs {' '.join(DEMO_LOSSES['sp'][1:])} on {', '.join(budget[5])} "
          f"({budget[0]} epochs, AutoAttack Linf eps {format_eps(eps)} on {budget[1]} test points) -> {out}")
    results['toy'] = toy_boundary(out / figures[0])
    jobs = [(dataset, loss, str(out), budget, eps) for dataset in budget[5] for loss in DEMO_LOSSES]
    _run_phase(_train_job, jobs, workers, progress, 'demo 1/2: train', _TrainProgress(out, budget))
    done = _run_phase(_attack_job, jobs, workers, progress, 'demo 2/2: attack, audit, export', _AttackProgress(out, jobs))
    for (dataset, loss, *_), report in zip(jobs, done):
        reports.setdefault(dataset, {})[loss] = report
        results['table'].setdefault(dataset, {})[loss] = _row(report)
    for dataset in budget[5]:
        flags = {loss: _final_flags(out / 'eval' / f'{dataset}-{loss}') for loss in DEMO_LOSSES}
        results['paired'][dataset] = dict(paired_test(flags['ce'], flags['sp']), test="McNemar exact, AutoAttack flags")
        figures += _figures(out, dataset, reports[dataset], eps)
    results['seconds'] = time.perf_counter() - start
    table = _table(results['table'])
    atomic_write_json(out / 'results.json', results)
    atomic_write_text(out / 'report.md', _markdown(results, table, figures))
    print('\n' + table + '\n')
    for dataset, p in results['paired'].items():
        print(f"{dataset}: AutoAttack-robust only under CE: {p['only_first']} points, only under SP: {p['only_second']} "
              f"(McNemar exact p = {p['p_value']:.3g})")
    toy = results['toy']
    print('toy 2-D problem, distance from the boundary to the nearest majority / minority point: ' + '; '.join(
        f"{k} {v['distance_to_majority']:.2f} / {v['distance_to_minority']:.2f}" for k, v in toy.items()))
    print(f"wrote {out / 'report.md'}, {out / 'results.json'}, figures, eval/*/model_info, hub/* "
          f"in {results['seconds']:.0f} s")
    return results


DEMO_SETTINGS_FILE = 'demo.json'


def _claim_folder(out: Path, budget: Dict[str, Any], eps: float) -> None:
    """Record in ``out/demo.json`` what the demo's runs and evaluations are made with (budget, eps, losses and every
    training command), so that a rerun reuses them only for the same demo: a ``ValueError`` naming what differs,
    before anything is written, for another one (``--quick`` then the full demo, another ``--eps``, another sp-timm's
    recipe), or for a folder holding runs or evaluations without that record."""
    from .files import atomic_write_json, read_json_object
    settings = json.loads(json.dumps({
        'budget': budget, 'eps': eps, 'losses': DEMO_LOSSES, 'imbalance_ratio': DEMO_IMBALANCE,
        'train_flags': {f'{d}-{loss}': demo_train_flags(flags, d, budget['epochs'])
                        for d in budget['datasets'] for loss, flags in DEMO_LOSSES.items()}}))
    path = out / DEMO_SETTINGS_FILE
    fix = f'Choose another --out, or delete {out} to start again.'
    if path.is_file():
        recorded = read_json_object(path, 'the demo record')
        differ = [k for k in settings if recorded.get(k) != settings[k]]
        if differ:
            jsonable = lambda obj: json.loads(json.dumps(obj))
            modes = {'quick': '--quick', 'full': 'the full demo'}
            mode = lambda b: next((modes[name] for name, values in _BUDGETS.items()
                                   if jsonable(dict(zip(BUDGET_KEYS, values))) == b), "another sp-timm's budget")
            what = [f"{mode(recorded.get('budget'))} -> {mode(settings['budget'])}" if k == 'budget'
                    else f'eps {recorded.get(k)!r} -> {eps!r}' if k == 'eps' else k for k in differ]
            raise ValueError(f"--out {out} holds a demo made with other settings ({'; '.join(what)}): its trainings "
                             f"and evaluations are not this demo's. {fix}")
        return
    if (out / 'runs').exists() or (out / 'eval').exists():
        raise ValueError(f"--out {out} holds runs or evaluations without {DEMO_SETTINGS_FILE} (a demo of an "
                         f"earlier sp-timm, or not a demo): they cannot be told to be this demo's. {fix}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _worker_init(workers: int) -> None:
    """Threads shared out between the workers; their per-epoch lines silenced (the parent shows progress,
    the reports keep every number), AutoAttack's warnings still reach stderr."""
    import os
    import sys
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    sys.stdout = open(os.devnull, 'w')


def _run_phase(fn, jobs: Sequence[Tuple], workers: int, progress: bool, desc: str, monitor: '_Progress') -> List[Any]:
    """``fn`` over the (dataset, loss) jobs, in ``workers`` spawned processes when > 1; a bar that ``monitor``
    moves by reading what the jobs have written so far (epochs, attack stages), refreshed every 2 s."""
    import threading
    from tqdm.auto import tqdm
    bar = tqdm(total=monitor.total, desc=desc, disable=not progress, dynamic_ncols=True, unit=monitor.unit)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(2.0):
            bar.n, text = monitor.poll()
            bar.set_postfix_str(text, refresh=False)
            bar.refresh()
    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    try:
        if workers > 1:  # the pipelines are independent: one process each, the CPU's threads shared out
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                                     initializer=_worker_init, initargs=(workers,)) as pool:
                return list(pool.map(fn, jobs))
        return [fn(job + (False,)) for job in jobs]
    finally:
        stop.set()
        thread.join()
        bar.n, text = monitor.poll()
        bar.set_postfix_str(text)
        bar.close()


class _Progress:
    unit = 'step'
    total = 0

    def poll(self) -> Tuple[int, str]:
        raise NotImplementedError


class _TrainProgress(_Progress):
    """Epochs finished, read from each run's metrics.jsonl."""
    unit = 'epoch'

    def __init__(self, out: Path, budget: Tuple):
        self.runs = {f'{d}-{l}': (out / 'runs' / f'{d}-{l}' / 'metrics.jsonl',
                                  round(budget[0] * (LT_EPOCH_FACTOR if d.endswith('-lt') else 1)))
                     for d in budget[5] for l in DEMO_LOSSES}
        self.total = sum(n for _, n in self.runs.values())

    def poll(self) -> Tuple[int, str]:
        done = {}
        for name, (path, n) in self.runs.items():
            try:
                done[name] = min(n, sum(1 for line in path.read_text().splitlines() if line.strip()))
            except OSError:
                done[name] = 0
        return sum(done.values()), ', '.join(f'{k} {v}/{self.runs[k][1]}' for k, v in done.items())


class _AttackProgress(_Progress):
    """Evaluation stages finished (clean, the four AutoAttack attacks, FAB, each audit attack, export), read
    from the saved stage files of each evaluation."""
    unit = 'stage'

    def __init__(self, out: Path, jobs: Sequence[Tuple]):
        self.evals = {f'{d}-{l}': (out / 'eval' / f'{d}-{l}', out / 'hub' / f'{d}-{l}', self.expected(d, l, budget))
                      for d, l, _, budget, *_ in jobs}
        self.total = sum(expected for *_, expected in self.evals.values())

    @staticmethod
    def expected(dataset: str, loss: str, budget: Tuple) -> int:
        """Saved keys of one demo evaluation, plus its export: AutoAttack's (clean, each attack, predictions,
        perturbations), one per FAB norm, the audit's stages and checks (the SP model's audit also has its training
        loss and the CE surrogate)."""
        from .data.sources import dataset_spec
        from .eval.attacks import STANDARD_ATTACKS
        from .eval.audit import CHECK_STAGES, audit_stages
        sp = loss != 'ce'
        stages, _ = audit_stages(dataset_spec(dataset).num_classes, has_loss=sp, has_surrogate=sp)
        audit = len(stages) + len(CHECK_STAGES)
        return len(STANDARD_ATTACKS) + 3 + len(budget[4]) + audit + 1

    @staticmethod
    def _stages(folder: Path, hub: Path, expected: int) -> int:
        from safetensors import safe_open
        from .eval.audit import POINT_KEYS
        count = 0
        for chunk in (folder / '.work').glob('*/chunk-*.safetensors'):
            try:
                with safe_open(str(chunk), 'pt') as f:
                    count += sum(1 for key in f.keys() if key not in POINT_KEYS)
            except Exception:  # being written
                continue
        return min(expected - 1, count) + (1 if (hub / 'README.md').exists() else 0)

    def poll(self) -> Tuple[int, str]:
        done = {name: (self._stages(*paths), paths[2]) for name, paths in self.evals.items()}
        return sum(v for v, _ in done.values()), ', '.join(f'{k} {v}/{n}' for k, (v, n) in done.items())


def _train_job(job: Tuple) -> str:
    dataset, loss, out, budget = job[:4]
    progress = job[5] if len(job) > 5 else False
    return str(_train(loss, dataset, Path(out), budget[0], progress))


def _attack_job(job: Tuple) -> Dict[str, Any]:
    """Evaluate (AutoAttack, FAB, the audit; the SP model also with the CE model's adversarial examples) and export
    one trained (dataset, loss) of the demo; returns the evaluation report."""
    from .export.hub import export_model
    dataset, loss, out, budget, eps = job[:5]
    progress = job[5] if len(job) > 5 else False
    out = Path(out)
    checkpoint = out / 'runs' / f'{dataset}-{loss}' / 'last'
    surrogate = out / 'runs' / f'{dataset}-ce' / 'last' if loss != 'ce' else None
    evaluation = out / 'eval' / f'{dataset}-{loss}'
    report = _evaluate(checkpoint, dataset, evaluation, budget, eps, progress, surrogate)
    export_model(str(checkpoint), out / 'hub' / f'{dataset}-{loss}', reports=[evaluation / 'report.json'])
    return report


def _final_flags(evaluation: Path) -> 'torch.Tensor':
    import torch
    from safetensors.torch import load_file
    from .eval import STANDARD_ATTACKS
    chunks = sorted((evaluation / '.work').glob('autoattack-*/chunk-*.safetensors'))
    return torch.cat([load_file(str(c))[STANDARD_ATTACKS[-1]] for c in chunks])


def _figures(out: Path, dataset: str, reports: Dict[str, Dict[str, Any]], eps: float) -> List[str]:
    import torch
    from safetensors.torch import load_file
    from .eval.plots import FigureContext, plot_min_perturbation_cdf, plot_per_class, plot_robust_accuracy_vs_eps
    context = FigureContext('CE vs SP, small_cnn_cifar', dataset, 'Linf', eps)
    distances = {}
    for loss in reports:
        distances[loss] = {}
        for norm in reports[loss].get('min_perturbation', {}):
            chunks = sorted((out / 'eval' / f'{dataset}-{loss}' / '.work').glob(f'fab-{norm}-*/chunk-*.safetensors'))
            distances[loss][norm] = torch.cat([load_file(str(c))['distance'] for c in chunks])
    names = [f'{dataset}_robust_acc_vs_eps.png', f'{dataset}_min_perturbation_cdf.png', f'{dataset}_per_class.png']
    plot_robust_accuracy_vs_eps(out / names[0], {loss: {'distances': distances[loss].get('Linf'),
                                                        'points': [(r['eps'], r['robust_acc']) for r in rep['eps_curve']]}
                                                 for loss, rep in reports.items()}, 'Linf', 3 * eps, context=context)
    plot_min_perturbation_cdf(out / names[1], distances, {'Linf': eps}, context=context)
    first = next(iter(reports.values()))
    counts = [c.get('train_count') for c in first['per_class']] if dataset.endswith('-lt') else None
    plot_per_class(out / names[2], [c['name'] for c in first['per_class']],
                   {loss: ([c['clean_acc'] for c in r['per_class']], [c['robust_acc'] for c in r['per_class']])
                    for loss, r in reports.items()}, counts, test_counts=[c['n'] for c in first['per_class']],
                   context=context)
    return names


def _markdown(results: Dict[str, Any], table: str, figures: Sequence[str]) -> str:
    b = results['budget']
    lines = ['# sp-timm demo: CE vs SP on digits', '',
             f"small_cnn_cifar, {b['epochs']} epochs, seed 0, same recipe for both losses (CE: `{' '.join(DEMO_LOSSES['ce'])}`, "
             f"SP: `{' '.join(DEMO_LOSSES['sp'])}`)"
             + (f"; digits-lt: imbalance ratio {results['imbalance_ratio']:g}" if 'digits-lt' in b['datasets'] else '')
             + f". Each run's `last` checkpoint (the end of its fixed recipe) is evaluated. "
             f"AutoAttack (standard) Linf eps {results['eps_str']} on the first {b['autoattack_points']} test images; FAB "
             f"minimal perturbations ({b['fab_iters']} iterations) on the first {b['fab_points']}. One seed: the "
             f"intervals are over test points only; benchmarks/robustness_study.py repeats over seeds.", '', table, '']
    for dataset, p in results['paired'].items():
        lines.append(f"- {dataset}: points robust only under CE: {p['only_first']}, only under SP: {p['only_second']} "
                     f"(McNemar exact p = {p['p_value']:.3g}).")
    toy = results['toy']
    lines += ['', 'Toy 2-D problem (200 vs 20 points): distance from the learnt boundary to the nearest point of the '
              'majority / minority class: ' + '; '.join(f"{k} {v['distance_to_majority']:.2f} / {v['distance_to_minority']:.2f}"
                                                        for k, v in toy.items()) + '.', '']
    rules = {d: r['group_rule'] for d, by_loss in results['table'].items() for r in by_loss.values() if r.get('group_rule')}
    lines += [f'Long-tail groups of {d} (the few-shot columns: the last group): {rule}.' for d, rule in rules.items()]
    lines += [''] if rules else []
    warned = [(d, l) for d, by_loss in results['table'].items() for l, r in by_loss.items() if r['unreliable']]
    if warned:
        lines += ["AutoAttack's checks warned for: " + ', '.join(f'{d}/{l}' for d, l in warned) +
                  ' (see eval/*/summary.md).', '']
    lines += [f'![{f}]({f})' for f in figures]
    return '\n'.join(lines) + '\n'


def build_demo_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The flags of ``sp-timm demo`` (into ``parser`` when given, e.g. a subcommand's)."""
    from .options import DefaultsHelpFormatter
    from .threat.budget import parse_eps
    p = parser or argparse.ArgumentParser(prog='sp-timm demo')
    p.formatter_class = DefaultsHelpFormatter
    p.description = DEMO_DESCRIPTION
    p.add_argument('--out', default='output/demo', help='output folder (a rerun of the same demo reuses its finished runs and evaluations; '
                                                        'another demo there is refused)')
    p.add_argument('--quick', action='store_true',
                   help='digits only (no digits-lt), 10 epochs, 24 test points, Linf FAB only: about 2 minutes')
    p.add_argument('--eps', type=parse_eps, default=DEMO_EPS, help='AutoAttack Linf budget (default: 2/255)')
    p.add_argument('--workers', type=int, default=None,
                   help='processes running the (dataset, loss) pipelines side by side (default: 2 if the CPU has 2+ cores)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p


def main(args: argparse.Namespace) -> int:
    import os
    from .threat.budget import check_eps
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f'--workers must be >= 1, got {workers}.')
    check_eps(args.eps, 'Linf', 3 * 32 * 32)  # before any training: --eps 8 means 8/255
    run_demo(Path(args.out), quick=args.quick, eps=args.eps, progress=not args.no_progress, workers=max(1, workers))
    return 0
