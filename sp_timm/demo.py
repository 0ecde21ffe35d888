""" ``sp-timm demo``: the paper's claims, measured on real data in minutes on a CPU.

CE and the default SP loss train the same network with the same seed and budget on scikit-learn's digits and
on its long-tailed variant (``digits-lt``, imbalance ratio 10), as a client of sp-timm's Python API:
``train(TrainConfig)`` trains each, ``evaluate(EvalConfig)`` attacks it with AutoAttack (standard, Linf), audits it
and measures FAB minimal perturbations, ``export_model`` writes it as a Hub folder with its model card. A toy 2-D
problem shows where each loss puts the boundary between two classes. Output: ``results.json``, ``report.md``,
figures, leaderboard JSONs, Hub folders.
"""
import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .eval.config import ROBUST, STANDARD_ATTACKS, AuditConfig

if TYPE_CHECKING:  # imported where used: sp-timm demo --help imports neither torch nor timm
    from .eval.runner import Evaluation
    from .records import EvalReport, TrainConfig

__all__ = ['DEMO_LOSSES', 'DEMO_EPS', 'DEMO_RECIPE', 'DemoBudget', 'DEMO_BUDGETS', 'demo_train_config',
           'demo_train_flags', 'run_demo', 'toy_boundary', 'main', 'build_demo_parser']

# the default SP loss (chosen by benchmarks/robustness_study.py) against cross-entropy, as TrainConfig settings
# sp_margin's gradient grows with the margin error: it needs --clip-grad (see docs/training.md)
DEMO_LOSSES: Dict[str, Dict[str, Any]] = {'ce': {'loss': 'ce'},
                                          'sp': {'loss': 'sp_margin', 'sp_margin': 4.0, 'clip_grad': 5.0}}
# the recipe both losses train with (recipes/digits_small_cnn_{ce,sp}.yaml)
DEMO_RECIPE: Dict[str, Any] = {'model': 'small_cnn_cifar', 'batch_size': 64, 'opt': 'momentum', 'lr': 0.05,
                               'momentum': 0.9, 'weight_decay': 5e-4, 'sched': 'cosine', 'no_aug': True}
DEMO_EPS = 2 / 255  # digits are 8x8 images upsampled to 32x32: the median FAB Linf distance of its models is ~2.5/255
DEMO_IMBALANCE = 10.0
DEMO_DATASETS = ('digits', 'digits-lt')
DEMO_DESCRIPTION = ('Train the same small CNN with cross-entropy and with the default SP loss on digits and digits-lt, '
                    'attack both with AutoAttack and audit the result, measure FAB minimal perturbations, and write a '
                    'report, figures, leaderboard entries and Hub folders (5-17 minutes on 2 CPUs; --quick: about 2).')
LT_EPOCH_FACTOR = 2.5
# the adaptive audit (sp-timm eval --audit) at a CPU-sized budget; the SP model is also attacked with the CE
# model's adversarial examples (--surrogate)
DEMO_AUDIT = AuditConfig(restarts=2, margin_restarts=3, margin_steps=100, square_queries=1000, square_restarts=1)


@dataclass(frozen=True)
class DemoBudget:
    """How much the demo does: epochs (digits-lt trains ``LT_EPOCH_FACTOR`` times as many), test points attacked
    by AutoAttack, points and iterations of FAB's minimal perturbations and their norms, datasets, the audit."""
    epochs: int
    autoattack_points: int
    fab_points: int
    fab_iters: int
    fab_norms: Tuple[str, ...]
    datasets: Tuple[str, ...]
    audit: AuditConfig


DEMO_BUDGETS = {
    'full': DemoBudget(30, 100, 100, 30, ('Linf', 'L2'), DEMO_DATASETS, DEMO_AUDIT),
    'quick': DemoBudget(10, 24, 24, 10, ('Linf',), DEMO_DATASETS[:1], DEMO_AUDIT),
}


def _recipe(dataset: str, epochs: int, seed: int) -> Dict[str, Any]:
    """The demo's recipe for ``dataset``, in the order of its flags: digits-lt (544 training images at ratio 10)
    trains ``LT_EPOCH_FACTOR`` times as many epochs, about the same number of updates."""
    lt = dataset.endswith('-lt')
    recipe = dict(dataset=dataset, model=DEMO_RECIPE['model'], epochs=round(LT_EPOCH_FACTOR * epochs) if lt else epochs)
    recipe.update({k: v for k, v in DEMO_RECIPE.items() if k != 'model'}, seed=seed)
    return recipe


def demo_train_config(loss: Dict[str, Any], dataset: str, epochs: int, seed: int = 0, **run: Any) -> 'TrainConfig':
    """The demo's recipe with the loss settings ``loss`` (a value of ``DEMO_LOSSES``), as a ``TrainConfig``; ``run``:
    where and how it runs (``output``, ``resume``, ``no_progress``)."""
    from .records import TrainConfig
    imbalance = {'imbalance_ratio': DEMO_IMBALANCE} if dataset.endswith('-lt') else {}
    return TrainConfig(**_recipe(dataset, epochs, seed), **loss, **imbalance, **run)


def demo_train_flags(loss_flags: Sequence[str], dataset: str, epochs: int, seed: int = 0) -> List[str]:
    """The same recipe as ``sp-timm train`` flags, with the loss flags ``loss_flags`` (the study's recipes are flags:
    benchmarks/robustness_study.py)."""
    from .options import as_flags
    from .records import TrainConfig
    flags = as_flags(TrainConfig, _recipe(dataset, epochs, seed)) + list(loss_flags)
    return flags + (['--imbalance-ratio', f'{DEMO_IMBALANCE:g}'] if dataset.endswith('-lt') else [])


def _train(loss: str, dataset: str, out: Path, epochs: int, progress: bool) -> Path:
    from .train import train
    run = out / 'runs' / f'{dataset}-{loss}'
    config = demo_train_config(DEMO_LOSSES[loss], dataset, epochs, output=str(run), no_progress=not progress)
    if (run / 'last').exists() and json.loads((run / 'last' / 'state.json').read_text())['epoch'] >= config.epochs:
        return run / 'last'  # finished by an earlier (interrupted) demo
    if (run / 'last').exists():
        config = replace(config, resume=str(run))
    return train(config) / 'last'


def _evaluate(checkpoint: Path, dataset: str, out: Path, budget: DemoBudget, eps: float, progress: bool,
              surrogate: Optional[Path] = None) -> 'Evaluation':
    from .eval.config import AttackConfig, EvalConfig, LeaderboardMeta
    from .eval.runner import evaluate
    attack = AttackConfig(eps=eps, batch_size=256, min_pert_examples=budget.fab_points, fab_iters=budget.fab_iters,
                          min_pert_norms=budget.fab_norms, audit=budget.audit)
    imbalance = {'imbalance_ratio': DEMO_IMBALANCE} if dataset.endswith('-lt') else {}
    return evaluate(EvalConfig(checkpoint=str(checkpoint), dataset=dataset, n_examples=budget.autoattack_points,
                               out=str(out), no_progress=not progress, attack=attack,
                               surrogate=None if surrogate is None else str(surrogate),
                               leaderboard=LeaderboardMeta(preview=True), **imbalance))  # digits: the format only


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
    for ax, settings in zip(axes, DEMO_LOSSES.values()):
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 2))
        loss_name = settings['loss']
        loss_fn = create_classification_loss(loss_name, **{k: v for k, v in settings.items() if k.startswith('sp_')})
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
        ax.set_title(f'{loss_name}: boundary to nearest point\n{gaps[0]:.2f} (class 0) / {gaps[1]:.2f} (class 1)',
                     fontsize=9)
        ax.legend(fontsize=7, loc='lower left')
        ax.set_xlabel('input feature x1 (class means at -1.5 and 1.5)', fontsize=9)
    axes[0].set_ylabel('input feature x2', fontsize=9)
    fig.colorbar(shading, ax=list(axes), label='logit margin z1 - z0 (clipped at ±8)', shrink=0.9, pad=0.02)
    fig.suptitle('Where CE and SP put the decision boundary (black; dotted: the middle between the class means)',
                 y=1.04)
    save_figure(fig, path)
    return result


def _row(report: 'EvalReport') -> Dict[str, Any]:
    pert = report.min_perturbation or {}
    rare = list(report.groups.values())[-1] if report.groups else None  # few (shot rule) or tail (thirds rule)
    audit = report.audit
    return {'clean_acc': report.clean_acc, 'clean_ci': report.clean_ci, 'robust_acc': report.robust_acc,
            'robust_ci': report.robust_ci, 'median_linf': pert['Linf'].median if 'Linf' in pert else None,
            'median_l2': pert['L2'].median if 'L2' in pert else None,
            'balanced_clean_acc': report.balanced_clean_acc, 'balanced_robust_acc': report.balanced_robust_acc,
            'few_clean_acc': rare.clean_acc if rare else None, 'few_robust_acc': rare.robust_acc if rare else None,
            'group_rule': report.group_rule.description if report.long_tailed and report.group_rule else None,
            'audited_acc': audit.robust_acc if audit else None, 'audited_ci': audit.robust_ci if audit else None,
            'audit_reasons': audit.reasons if audit else [], 'unreliable': report.unreliable,
            'warnings': report.warnings}


def _table(results: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    from .formatting import format_table
    def fmt(v, d=2):
        return '–' if v is None else f'{v:.{d}f}'
    rows = []
    for dataset, by_loss in results.items():
        for loss, r in by_loss.items():
            rows.append([dataset, loss,
                         f"{fmt(r['clean_acc'])} [{fmt(r['clean_ci'][0], 1)}, {fmt(r['clean_ci'][1], 1)}]",
                         f"{fmt(r['robust_acc'])} [{fmt(r['robust_ci'][0], 1)}, {fmt(r['robust_ci'][1], 1)}]",
                         '–' if r.get('audited_acc') is None else
                         f"{fmt(r['audited_acc'])} [{fmt(r['audited_ci'][0], 1)}, {fmt(r['audited_ci'][1], 1)}]",
                         fmt(None if r['median_linf'] is None else 255 * r['median_linf']),
                         fmt(r['balanced_clean_acc']), fmt(r['few_clean_acc']), fmt(r['few_robust_acc']),
                         'yes' if r['unreliable'] else 'no'])
    return format_table(['data', 'loss', 'clean % [95% CI]', 'AutoAttack % [95% CI]', 'audited AA % [95% CI]',
                         'median FAB Linf (x/255)', 'balanced clean %', 'few-shot clean %', 'few-shot AA %',
                         'unreliable'], rows)


def _loss_text(loss: str) -> str:
    """A demo loss as its ``sp-timm train`` flags, e.g. ``--loss sp_margin --sp-margin 4 --clip-grad 5``."""
    from .options import as_flags
    from .records import TrainConfig
    return ' '.join(as_flags(TrainConfig, DEMO_LOSSES[loss]))


def run_demo(out: Path, quick: bool = False, eps: float = DEMO_EPS, progress: bool = True,
             workers: int = 1) -> Dict[str, Any]:
    """Train, attack, compare and export; returns the results written to ``out/results.json``."""
    from .eval.stats import paired_test
    from .files import atomic_write_json, atomic_write_text
    from .records import to_json
    from .threat.budget import format_eps
    budget = DEMO_BUDGETS['quick' if quick else 'full']
    start = time.perf_counter()
    out = Path(out)
    results: Dict[str, Any] = {'eps': eps, 'eps_str': format_eps(eps), 'quick': quick, 'budget': to_json(budget),
                               'losses': DEMO_LOSSES, 'imbalance_ratio': DEMO_IMBALANCE, 'table': {}, 'paired': {}}
    figures = ['toy_boundary.png']
    _claim_folder(out, budget, eps)
    print(f"sp-timm demo: CE vs {_loss_text('sp').split(' ', 1)[1]} on {', '.join(budget.datasets)} "
          f"({budget.epochs} epochs, AutoAttack Linf eps {format_eps(eps)} on {budget.autoattack_points} test points) "
          f"-> {out}")
    results['toy'] = toy_boundary(out / figures[0])
    jobs = [(dataset, loss, str(out), budget, eps) for dataset in budget.datasets for loss in DEMO_LOSSES]
    _run_phase(_train_job, jobs, workers, progress, 'demo 1/2: train', _TrainProgress(out, budget))
    done = _run_phase(_attack_job, jobs, workers, progress, 'demo 2/2: attack, audit, export',
                      _AttackProgress(out, jobs))
    evaluations: Dict[str, Dict[str, Any]] = {}
    for (dataset, loss, *_), evaluation in zip(jobs, done):
        evaluations.setdefault(dataset, {})[loss] = evaluation
        results['table'].setdefault(dataset, {})[loss] = _row(evaluation.report)
    for dataset in budget.datasets:
        final = {loss: e.points.aa[ROBUST] for loss, e in evaluations[dataset].items()}
        results['paired'][dataset] = dict(paired_test(final['ce'], final['sp']), test="McNemar exact, AutoAttack flags")
        figures += _figures(out, dataset, evaluations[dataset], eps)
    results['seconds'] = time.perf_counter() - start
    table = _table(results['table'])
    atomic_write_json(out / 'results.json', results)
    atomic_write_text(out / 'report.md', _markdown(results, table, figures))
    print('\n' + table + '\n')
    for dataset, p in results['paired'].items():
        print(f"{dataset}: AutoAttack-robust only under CE: {p['only_first']} points, only under SP: "
              f"{p['only_second']} (McNemar exact p = {p['p_value']:.3g})")
    toy = results['toy']
    print('toy 2-D problem, distance from the boundary to the nearest majority / minority point: ' + '; '.join(
        f"{k} {v['distance_to_majority']:.2f} / {v['distance_to_minority']:.2f}" for k, v in toy.items()))
    print(f"wrote {out / 'report.md'}, {out / 'results.json'}, figures, eval/*/model_info, hub/* "
          f"in {results['seconds']:.0f} s")
    return results


DEMO_SETTINGS_FILE = 'demo.json'


def _claim_folder(out: Path, budget: DemoBudget, eps: float) -> None:
    """Record in ``out/demo.json`` what the demo's runs and evaluations are made with (budget, eps, losses and every
    training config), so that a rerun reuses them only for the same demo: a ``ValueError`` naming what differs,
    before anything is written, for another one (``--quick`` then the full demo, another ``--eps``, another sp-timm's
    recipe), or for a folder holding runs or evaluations without that record."""
    from .files import atomic_write_json, read_json_object
    from .records import to_json
    settings = json.loads(json.dumps({
        'budget': to_json(budget), 'eps': eps, 'losses': DEMO_LOSSES, 'imbalance_ratio': DEMO_IMBALANCE,
        'train_configs': {f'{d}-{loss}': to_json(demo_train_config(settings, d, budget.epochs))
                          for d in budget.datasets for loss, settings in DEMO_LOSSES.items()}}))
    path = out / DEMO_SETTINGS_FILE
    fix = f'Choose another --out, or delete {out} to start again.'
    if path.is_file():
        recorded = read_json_object(path, 'the demo record')
        differ = [k for k in settings if recorded.get(k) != settings[k]]
        if differ:
            modes = {'quick': '--quick', 'full': 'the full demo'}
            def mode(b):
                return next((modes[name] for name, known in DEMO_BUDGETS.items()
                             if json.loads(json.dumps(to_json(known))) == b), "another sp-timm's budget")
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

    def __init__(self, out: Path, budget: DemoBudget):
        self.runs = {f'{d}-{loss}': (out / 'runs' / f'{d}-{loss}' / 'metrics.jsonl',
                                  round(budget.epochs * (LT_EPOCH_FACTOR if d.endswith('-lt') else 1)))
                     for d in budget.datasets for loss in DEMO_LOSSES}
        self.total = sum(n for _, n in self.runs.values())

    def poll(self) -> Tuple[int, str]:
        from .train import read_metrics
        done = {name: min(n, len(read_metrics(path))) for name, (path, n) in self.runs.items()}
        return sum(done.values()), ', '.join(f'{k} {v}/{self.runs[k][1]}' for k, v in done.items())


class _AttackProgress(_Progress):
    """Evaluation stages finished (clean, the four AutoAttack attacks, FAB, each audit attack, export), counted in
    what each evaluation has saved so far (``eval.runner.saved_stages``)."""
    unit = 'stage'

    def __init__(self, out: Path, jobs: Sequence[Tuple]):
        self.evals = {f'{d}-{loss}': (out / 'eval' / f'{d}-{loss}', out / 'hub' / f'{d}-{loss}',
                                      self.expected(d, loss, budget))
                      for d, loss, _, budget, *_ in jobs}
        self.total = sum(expected for *_, expected in self.evals.values())

    @staticmethod
    def expected(dataset: str, loss: str, budget: DemoBudget) -> int:
        """Saved keys of one demo evaluation, plus its export: AutoAttack's (clean, each attack, predictions,
        perturbations), one per FAB norm, the audit's stages and checks (the SP model's audit also has its training
        loss and the CE surrogate)."""
        from .data.sources import dataset_spec
        from .eval.audit import CHECK_STAGES, audit_stages
        from .eval.audit_attacks import AuditInputs
        sp = loss != 'ce'
        inputs = AuditInputs(surrogate=object() if sp else None, train_loss=(lambda z, y: z) if sp else None)
        stages, _ = audit_stages(dataset_spec(dataset).num_classes, inputs)
        return len(STANDARD_ATTACKS) + 3 + len(budget.fab_norms) + len(stages) + len(CHECK_STAGES) + 1

    @staticmethod
    def _stages(folder: Path, hub: Path, expected: int) -> int:
        from .eval.runner import saved_stages
        return min(expected - 1, saved_stages(folder)) + (1 if (hub / 'README.md').exists() else 0)

    def poll(self) -> Tuple[int, str]:
        done = {name: (self._stages(*paths), paths[2]) for name, paths in self.evals.items()}
        return sum(v for v, _ in done.values()), ', '.join(f'{k} {v}/{n}' for k, (v, n) in done.items())


def _train_job(job: Tuple) -> str:
    dataset, loss, out, budget = job[:4]
    progress = job[5] if len(job) > 5 else False
    return str(_train(loss, dataset, Path(out), budget.epochs, progress))


def _attack_job(job: Tuple) -> 'Evaluation':
    """Evaluate (AutoAttack, FAB, the audit; the SP model also with the CE model's adversarial examples) and export
    one trained (dataset, loss) of the demo; returns the evaluation (its report and per-point results)."""
    from .export.hub import export_model
    from .eval.runner import REPORT_FILE
    dataset, loss, out, budget, eps = job[:5]
    progress = job[5] if len(job) > 5 else False
    out = Path(out)
    checkpoint = out / 'runs' / f'{dataset}-{loss}' / 'last'
    surrogate = out / 'runs' / f'{dataset}-ce' / 'last' if loss != 'ce' else None
    evaluation = _evaluate(checkpoint, dataset, out / 'eval' / f'{dataset}-{loss}', budget, eps, progress, surrogate)
    export_model(str(checkpoint), out / 'hub' / f'{dataset}-{loss}', reports=[evaluation.folder / REPORT_FILE])
    return evaluation


def _figures(out: Path, dataset: str, evaluations: Dict[str, 'Evaluation'], eps: float) -> List[str]:
    from .eval.plots import FigureContext, plot_min_perturbation_cdf, plot_per_class, plot_robust_accuracy_vs_eps
    context = FigureContext('CE vs SP, small_cnn_cifar', dataset, 'Linf', eps)
    reports = {loss: e.report for loss, e in evaluations.items()}
    distances = {loss: dict(e.points.min_perturbation) for loss, e in evaluations.items()}
    names = [f'{dataset}_robust_acc_vs_eps.png', f'{dataset}_min_perturbation_cdf.png', f'{dataset}_per_class.png']
    plot_robust_accuracy_vs_eps(out / names[0], {loss: {'distances': distances[loss].get('Linf'),
                                                        'points': [(r.eps, r.robust_acc) for r in rep.eps_curve]}
                                                 for loss, rep in reports.items()}, 'Linf', 3 * eps, context=context)
    plot_min_perturbation_cdf(out / names[1], distances, {'Linf': eps}, context=context)
    first = next(iter(reports.values()))
    counts = [c.train_count for c in first.per_class] if dataset.endswith('-lt') else None
    plot_per_class(out / names[2], [c.name for c in first.per_class],
                   {loss: ([c.clean_acc for c in r.per_class], [c.robust_acc for c in r.per_class])
                    for loss, r in reports.items()}, counts, test_counts=[c.n for c in first.per_class],
                   context=context)
    return names


def _markdown(results: Dict[str, Any], table: str, figures: Sequence[str]) -> str:
    b = results['budget']
    lines = ['# sp-timm demo: CE vs SP on digits', '',
             f"small_cnn_cifar, {b['epochs']} epochs, seed 0, same recipe for both losses (CE: `{_loss_text('ce')}`, "
             f"SP: `{_loss_text('sp')}`)"
             + (f"; digits-lt: imbalance ratio {results['imbalance_ratio']:g}" if 'digits-lt' in b['datasets'] else '')
             + f". Each run's `last` checkpoint (the end of its fixed recipe) is evaluated. "
             f"AutoAttack (standard) Linf eps {results['eps_str']} on the first {b['autoattack_points']} test images; "
             f"FAB minimal perturbations ({b['fab_iters']} iterations) on the first {b['fab_points']}. One seed: the "
             f"intervals are over test points only; benchmarks/robustness_study.py repeats over seeds.", '', table, '']
    for dataset, p in results['paired'].items():
        lines.append(f"- {dataset}: points robust only under CE: {p['only_first']}, only under SP: {p['only_second']} "
                     f"(McNemar exact p = {p['p_value']:.3g}).")
    toy = results['toy']
    lines += ['', 'Toy 2-D problem (200 vs 20 points): distance from the learnt boundary to the nearest point of the '
              'majority / minority class: '
              + '; '.join(f"{k} {v['distance_to_majority']:.2f} / {v['distance_to_minority']:.2f}"
                          for k, v in toy.items()) + '.', '']
    rules = {d: r['group_rule'] for d, by_loss in results['table'].items() for r in by_loss.values()
             if r.get('group_rule')}
    lines += [f'Long-tail groups of {d} (the few-shot columns: the last group): {rule}.' for d, rule in rules.items()]
    lines += [''] if rules else []
    warned = [(d, loss) for d, by_loss in results['table'].items() for loss, r in by_loss.items() if r['unreliable']]
    if warned:
        lines += ["AutoAttack's checks warned for: " + ', '.join(f'{d}/{loss}' for d, loss in warned) +
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
    p.add_argument('--out', default='output/demo',
                   help='output folder (a rerun of the same demo reuses its finished runs and evaluations; '
                        'another demo there is refused)')
    p.add_argument('--quick', action='store_true',
                   help='digits only (no digits-lt), 10 epochs, 24 test points, Linf FAB only: about 2 minutes')
    p.add_argument('--eps', type=parse_eps, default=DEMO_EPS, help='AutoAttack Linf budget (default: 2/255)')
    p.add_argument('--workers', type=int, default=None,
                   help='processes running the (dataset, loss) pipelines side by side '
                        '(default: 2 if the CPU has 2+ cores)')
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
