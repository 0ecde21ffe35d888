""" ``evaluate(EvalConfig(...))`` (``sp-timm eval``): AutoAttack in the RobustBench protocol on an sp-timm checkpoint,
a ``local-dir:`` / ``hf-hub:`` export or a RobustBench zoo model; sharded over processes with Accelerate and
resumable.

An evaluation folder::

    OUT/
      report.json                         everything measured (``records.EvalReport``)
      summary.md                          the same, for people
      model_info/<dataset>/<threat_model>/<name>.json   the RobustBench leaderboard entry
      longtail_info/<dataset>/<threat_model>/<name>.json   a long-tailed evaluation's entry (RobustBench's format
                                          plus imbalance, balanced and per-group accuracies; no RobustBench board)
      external-evaluation/                with --audit, when it broke points AutoAttack counted robust: the adversarial
                                          images and RobustBench's "New evaluation" issue (``eval.external``)
      autoattack.log                      AutoAttack's own log of the evaluation (what RobustBench submitters attach)
      per_class.png, min_perturbation_cdf.png, robust_acc_vs_eps.png
      .work/                              per-chunk results (safetensors), kept so a rerun resumes
"""
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ..checkpoint import LINKS, resolve_checkpoint, weights_sha256
from ..errors import CheckpointError
from ..files import atomic_write_json, atomic_write_text, check_output_folder, safe_path_component
from ..formatting import format_ci
from ..model_source import default_model_name, load_model
from ..records import EvalReport, EvaluatedModel, ModelInfo, Protocol, to_json
from ..threat.budget import format_eps
from ..version import __version__
from .attacks import ROBUST
from .audit import training_loss_from_run
from .autoattack_log import AUTOATTACK_LOG, autoattack_log_text
from .external import EXTERNAL_FOLDER, external_bundle_note, write_external_bundle
from .config import (DEFAULT_N_EXAMPLES, FULL_TEST_SPLIT, LEADERBOARD_CLASSES, EvalConfig, LeaderboardMeta,
                     autoattack_plan)
from .plots import FigureContext, plot_min_perturbation_cdf, plot_per_class, plot_robust_accuracy_vs_eps
from .points import PointsResult, evaluate_points
from .report import SP_PAPER, LongTail, build_report, placeholder, render_summary

__all__ = ['evaluate', 'Evaluation', 'check_eval_folder', 'REPORT_FILE', 'AUTOATTACK_LOG', 'WORK_FOLDER',
           'LONGTAIL_FOLDER', 'architecture_name', 'is_full_test_split', 'write_figures', 'saved_stages']

REPORT_FILE = 'report.json'
LONGTAIL_FOLDER = 'longtail_info'
WORK_FOLDER = '.work'  # per-chunk results, kept so that a rerun resumes
_ARCHITECTURES = {'wrn28_10_cifar': 'WideResNet-28-10', 'wrn34_10_cifar': 'WideResNet-34-10',
                  'wrn34_20_cifar': 'WideResNet-34-20', 'wrn70_16_cifar': 'WideResNet-70-16',
                  'preact_resnet18_cifar': 'PreActResNet-18', 'resnet20_cifar': 'ResNet-20',
                  'resnet32_cifar': 'ResNet-32', 'small_cnn_cifar': 'SmallCNN'}


class Evaluation(NamedTuple):
    """What ``evaluate`` wrote: the evaluation folder and its report, and the per-point results behind them."""
    folder: Path
    report: EvalReport
    points: PointsResult


def architecture_name(model_name: Optional[str]) -> str:
    """RobustBench's spelling of an architecture (``WideResNet-28-10``); timm's name otherwise."""
    return _ARCHITECTURES.get(model_name or '', model_name or '')


def evaluate(config: EvalConfig) -> Optional[Evaluation]:
    """Run one evaluation as ``config`` says; returns the folder and report on the main process (None elsewhere)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env
    import pyautoattack
    config.check()
    state = PartialState(cpu=parse_flag_from_env('ACCELERATE_USE_CPU'))
    start = time.perf_counter()
    model, info = _load(config)
    data = _EvalData.load(config, info, state.is_main_process)
    eps = config.attack.budget(data.images[0].numel())
    inputs, surrogate_name = _audit_inputs(config, info, data.num_classes, data.dataset)
    name = safe_path_component(config.leaderboard.model_name or default_model_name(info), 'the model name')
    out = Path(config.out) if config.out else _default_out(config, info, eps)
    out = Path(broadcast_object_list([str(out)])[0])
    check_output_folder(out, '--out')
    check_eval_folder(out)
    state.wait_for_everyone()  # every process has looked at --out before the main one writes into it
    weights = weights_sha256(model)
    attack = config.attack
    identity = {'model_sha256': weights, 'dataset': data.dataset, 'n_examples': data.n,
                'threat_model': attack.threat_model, 'eps': eps, 'seed': attack.seed, 'batch_size': attack.batch_size,
                'chunk_size': attack.chunk, 'pyautoattack': pyautoattack.__version__}
    work = _prepare_work(out, identity, config.restart, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        print(f"sp-timm eval: {info.source} on the first {data.n} {data.dataset} test images, "
              f"{autoattack_plan(data.num_classes, attack.protocol).describe()}, "
              f"{attack.threat_model} eps {format_eps(eps)}, {state.num_processes} process(es) on {state.device}, out "
              f"{out}" + (f", {info.weights} weights" if info.weights else ''))
    result = evaluate_points(model, data.images, data.labels, attack, work_dir=work, progress=not config.no_progress,
                             echo_warnings=state.is_main_process, **inputs)
    warnings = [w for part in gather_object([result.warnings]) for w in part]
    if result.audit is not None:
        result.audit.surrogate = surrogate_name
        result.audit.warnings = [w for part in gather_object([result.audit.warnings]) for w in part]
    if not state.is_main_process:
        return None
    protocol = Protocol(
        dataset=data.dataset, split='test', threat_model=attack.threat_model, eps=format_eps(eps), eps_value=eps,
        n_examples=data.n, version=result.plan.protocol, attacks=list(result.plan.attacks), seed=attack.seed,
        batch_size=attack.batch_size, chunk_size=attack.chunk, num_processes=state.num_processes,
        device=str(state.device), pyautoattack_version=pyautoattack.__version__, fab_iters=attack.fab_iters,
        min_pert_examples=len(next(iter(result.min_perturbation.values()), [])), data_source=data.source,
        n_target_classes=result.plan.n_target_classes if result.plan.num_classes < 10 else None,
        adaptation=result.plan.adaptation, full_test_split=data.full_test_split, local_data=bool(config.data_dir))
    run = info.run
    evaluated = EvaluatedModel(
        name=name, source=info.source, weights_sha256=weights, architecture=info.architecture,
        loss=run.loss if run else None, loss_params=run.loss_params if run else None,
        adversarial_training=run.config.adv if run and run.config else None, trained_on=info.dataset,
        weights=info.weights)  # 'ema' (--model-ema's average) or 'raw'
    report = build_report(result, data.labels, data.classes, protocol=protocol, model=evaluated, warnings=warnings,
                          long_tail=data.long_tail, model_name=name, seconds=time.perf_counter() - start,
                          meta=_leaderboard_meta(config.leaderboard, info))
    _remove_stale_outputs(out)
    figures = write_figures(out, report, result, data.classes, name)
    if report.leaderboard is not None:
        atomic_write_json(out / 'model_info' / data.dataset / attack.threat_model / f'{name}.json',
                          to_json(report.leaderboard))
    if report.longtail_entry is not None:
        atomic_write_json(out / LONGTAIL_FOLDER / data.dataset / attack.threat_model / f'{name}.json',
                          to_json(report.longtail_entry))
    atomic_write_json(out / REPORT_FILE, to_json(report))
    atomic_write_text(out / 'summary.md', render_summary(report, figures))
    atomic_write_text(out / AUTOATTACK_LOG, autoattack_log_text(report, result.log))
    _print_headline(report, out)
    _external_bundle(out, report, result, model, data, config, info, state.device)
    return Evaluation(out, report, result)


def _external_bundle(out: Path, report: EvalReport, result: PointsResult, model: torch.nn.Module, data: '_EvalData',
                     config: EvalConfig, info: ModelInfo, device: Any) -> None:
    """With an audit that broke points AutoAttack left robust: the external-evaluation bundle (``eval.external``)."""
    if report.audit is None:
        return
    why_not = external_bundle_note(report, result.audit_points, result.aa[ROBUST])
    if why_not is not None:
        print(f'external-evaluation bundle: none ({why_not})')
        return
    folder = write_external_bundle(out, report, model, data.images, data.labels, result.audit_points, result.aa,
                                   result.adversarial, device=device, source=info.source,
                                   zoo_model=bool(config.robustbench_model), version=__version__)
    print(f"external-evaluation bundle: {folder} (the audit's adversarial examples and RobustBench's \"New "
          f"evaluation\" issue text; {EXTERNAL_FOLDER}/new-evaluation-issue.md)")


def _load(config: EvalConfig) -> Tuple[torch.nn.Module, ModelInfo]:
    if config.robustbench_model:
        return _load_robustbench_model(config.robustbench_model, config.robustbench_dir, config.dataset,
                                       config.attack.threat_model)
    return load_model(config.checkpoint, weights=config.weights)


class _EvalData(NamedTuple):
    """The evaluated points: the first ``n`` test images in [0, 1] and their labels, and what the report says of
    the data (classes, source, the long-tail groups of the training distribution)."""
    dataset: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    source: str
    long_tail: LongTail
    full_test_split: bool  # the points are a leaderboard dataset's whole test split (``is_full_test_split``)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @staticmethod
    def load(config: EvalConfig, info: ModelInfo, main: bool) -> '_EvalData':
        from ..data import create_dataset
        dataset = config.dataset or info.dataset
        if not dataset:
            raise ValueError(f"'{config.checkpoint}' does not record its dataset; give --dataset.")
        test = create_dataset(dataset, 'test', config.data_dir, config.imbalance_ratio, config.imbalance_profile)
        n = config.n_examples if config.n_examples is not None else min(DEFAULT_N_EXAMPLES, len(test))
        if not 1 <= n <= len(test):
            raise ValueError(f'--n-examples {n}: the {dataset} test set has {len(test)} images; choose 1..{len(test)}.')
        labels = test.labels[:n].long()
        missing = sorted(set(test.labels.tolist()) - set(labels.tolist()))
        if missing and main:  # e.g. an image folder, read class by class
            print(f"sp-timm eval: warning: the first {n} {dataset} test images hold no image of {len(missing)} of its "
                  f"{test.num_classes} classes ({', '.join(test.classes[c] for c in missing[:5])}"
                  f"{', ...' if len(missing) > 5 else ''}), so the accuracies are about the others only (a split "
                  f"ordered by class, as an image folder is read, does this); a larger --n-examples, or none (the "
                  f"whole split), covers them.", file=sys.stderr)
        if info.num_classes and info.num_classes != test.num_classes:
            raise ValueError(f"'{config.checkpoint}' was trained for {info.num_classes} classes ({info.dataset}); "
                             f"{dataset} has {test.num_classes}.")
        return _EvalData(dataset, test.images[:n].float().div_(255), labels, list(test.classes), test.source,
                         _long_tail(config, info, dataset), is_full_test_split(dataset, test.labels, test.images, n))


def is_full_test_split(dataset: str, labels: torch.Tensor, images: torch.Tensor, n: int) -> bool:
    """Whether the first ``n`` of a test split (``labels``, ``images``) are what a RobustBench entry is measured on:
    the whole split of CIFAR-10 / CIFAR-100 (or their -lt variants, whose test split is the balanced one), 10,000
    images of balanced classes at 32x32."""
    from ..data import LT_SUFFIX
    classes = LEADERBOARD_CLASSES.get(dataset[:-len(LT_SUFFIX)] if dataset.endswith(LT_SUFFIX) else dataset)
    if classes is None or not n == len(labels) == FULL_TEST_SPLIT or tuple(images.shape[-2:]) != (32, 32):
        return False
    counts = torch.bincount(labels.long(), minlength=classes)
    return len(counts) == classes and bool((counts == FULL_TEST_SPLIT // classes).all())


def _long_tail(config: EvalConfig, info: ModelInfo, dataset: str) -> LongTail:
    """The training images per class (the run record's, else the count formula) and the groups; the groups come
    from the whole training split (before the validation split), as the literature counts them."""
    from ..data import LT_SUFFIX, class_groups, dataset_spec, group_rule, longtail_counts
    long_tailed = dataset.endswith(LT_SUFFIX)
    run = info.run if info.run is not None and info.run.dataset == dataset else None
    if run is not None:
        train_counts = run.train_class_counts
    elif not dataset_spec(dataset).num_classes:  # the user's own data: no count formula to know its training split
        return LongTail(long_tailed)
    else:  # the count formula, without loading the training split
        spec = dataset_spec(dataset)
        train_counts = (longtail_counts(spec.train_per_class, spec.num_classes, config.imbalance_ratio,
                                        config.imbalance_profile) if long_tailed
                        else [spec.train_per_class] * spec.num_classes)
    group_counts = run.split_class_counts if run is not None else train_counts
    rule = group_rule(group_counts)
    return LongTail(long_tailed, train_counts, class_groups(group_counts, rule), rule)


def _load_robustbench_model(name: str, model_dir: str, dataset: str,
                            threat_model: str) -> Tuple[torch.nn.Module, ModelInfo]:
    from ..compat import install_robustbench_compat
    if not install_robustbench_compat() and not _has_module('robustbench'):
        raise ValueError("--robustbench-model needs the [robustbench] extra: pip install 'sp-timm[robustbench]'.")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model as rb_load_model
    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except ValueError:
        raise ValueError(f"RobustBench has no {dataset} / {threat_model} leaderboard (it has cifar10, cifar100, "
                         f"imagenet).") from None
    if name not in zoo:
        import difflib
        close = difflib.get_close_matches(name, list(zoo), n=3)
        raise ValueError(f"'{name}' is not in RobustBench's {dataset} {threat_model} zoo"
                         + (f"; did you mean {', '.join(close)}?" if close else '.'))
    weights = Path(model_dir) / dataset / threat_model / f'{name}.pt'
    try:
        model = rb_load_model(name, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
    except Exception as err:
        raise ValueError(f"Cannot load RobustBench model '{name}' ({type(err).__name__}: {str(err)[:200]}). Without "
                         f"network access, place its checkpoint at {weights}.") from err
    return model.eval(), ModelInfo(source=f'robustbench:{name}', weights=None, architecture=name, name=name,
                                   zoo_dataset=dataset)


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def saved_stages(folder: Path) -> int:
    """How many stages (AutoAttack's, FAB's, the audit's attacks and checks, each per chunk) the evaluation in
    ``folder`` has saved so far: progress, read from outside the process that runs it. Files being written count 0."""
    from safetensors import safe_open
    from .attacks import ADVERSARIAL_SUFFIX
    from .audit import ADV_KEYS, POINT_KEYS
    count = 0
    for chunk in (Path(folder) / WORK_FOLDER).glob('*/chunk-*.safetensors'):
        if chunk.name.endswith(ADVERSARIAL_SUFFIX):  # images kept beside a chunk, no stage
            continue
        try:
            with safe_open(str(chunk), 'pt') as f:
                count += sum(1 for key in f.keys() if key not in POINT_KEYS + ADV_KEYS)
        except Exception:  # noqa: BLE001 -- being written
            continue
    return count


def check_eval_folder(out: Path) -> None:
    """``out`` is new, empty or an earlier ``sp-timm eval``'s (its ``.work/config.json``): an evaluation never
    replaces a user's files of the same names (``report.json``, ``summary.md``, figures)."""
    if not out.is_dir() or (out / WORK_FOLDER / 'config.json').is_file():
        return
    held = sorted(p.name for p in out.iterdir())
    if held:
        listed = ', '.join(held[:5]) + (f' and {len(held) - 5} more' if len(held) > 5 else '')
        raise CheckpointError(f"--out '{out}' holds files sp-timm eval did not write ({listed}); its report, summary "
                              f"and figures could replace files of the same names. Choose a new or empty folder, or "
                              f"leave --out out. Nothing was written.")


def _remove_stale_outputs(out: Path) -> None:
    """An earlier evaluation's leaderboard entries and figures (another --model-name, threat model, protocol, or
    without FAB) go before the new report is written: a finished folder holds only what its report describes.
    ``check_eval_folder`` has made sure ``out`` is an evaluation folder."""
    shutil.rmtree(out / 'model_info', ignore_errors=True)
    shutil.rmtree(out / LONGTAIL_FOLDER, ignore_errors=True)
    shutil.rmtree(out / EXTERNAL_FOLDER, ignore_errors=True)
    for figure in EVAL_FIGURES:
        (out / figure).unlink(missing_ok=True)


def _prepare_work(out: Path, identity: Dict[str, Any], restart: bool, is_main: bool) -> Path:
    """The ``.work`` folder of ``out``; its saved chunks are reused only by the same evaluation."""
    work = out / WORK_FOLDER
    config = work / 'config.json'
    if restart and not is_main:  # the main process discards the folder and writes the new settings
        return work
    if restart and work.exists():
        shutil.rmtree(work)
    if config.exists():
        saved = json.loads(config.read_text())
        changed = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
        if changed:
            raise ValueError(f"--out {out} holds a partial evaluation with other settings "
                             f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}); choose another "
                             f"--out or add --restart to discard it.")
    elif is_main:
        atomic_write_json(config, identity)
    return work


def _default_out(config: EvalConfig, info: ModelInfo, eps: float) -> Path:
    tag = f"eval-{config.attack.threat_model}-{format_eps(eps).replace('/', '_')}"
    if info.run is not None and info.run.model_ema is not None and info.weights == 'raw':
        tag += '-raw'  # a --model-ema run's raw weights: beside the EMA's
    source = config.checkpoint or ''
    if source and not source.startswith(('local-dir:', 'hf-hub:')):
        checkpoint = resolve_checkpoint(source).resolve()
        if checkpoint.name.startswith('epoch-') and any((checkpoint.parent / link).is_symlink() for link in LINKS):
            # a run's epoch folder is deleted once no link names it: the evaluation goes beside it, in RUN/eval/
            return checkpoint.parent / 'eval' / f'{checkpoint.name}-{tag}'
        return checkpoint / tag
    folder = (safe_path_component(info.name, "the record's name") if info.name
              else ''.join('_' if c in '/\\:' else c for c in str(info.architecture)))
    return Path('output') / 'eval' / folder / tag


def _leaderboard_meta(meta: LeaderboardMeta, info: ModelInfo) -> Dict[str, Any]:
    """RobustBench's model_info fields: the paper's (title, link, authors, venue) from the flags only, else a
    placeholder naming the flag -- a leaderboard row names the paper that proposes that model, which a training
    record cannot know; the footnote cites the SP-losses paper as the loss an SP model was trained with. ``reported``
    only from --reported: it is the paper's number, not this measurement."""
    from ..losses import is_sp_loss
    run = info.run
    loss = run.loss if run is not None else None
    footnote = meta.footnote
    if footnote is None and loss and is_sp_loss(loss):
        params = ', '.join(f'{k}={v}' for k, v in run.loss_params.items())
        footnote = f"Trained with the SP loss {loss}" + (f' ({params})' if params else '') + \
            f" of {SP_PAPER['name']} ({SP_PAPER['link']})"
    given = {'name': meta.paper_title, 'link': meta.link, 'authors': meta.authors, 'venue': meta.venue}
    asks = {'name': ('the title of the paper that proposes this model', '--paper-title'),
            'link': ('URL of that paper or its code', '--link'), 'authors': ('the authors', '--authors'),
            'venue': ('the venue, e.g. NeurIPS 2023', '--venue')}
    fields = {k: given[k] or placeholder(*asks[k]) for k in asks}
    architecture = meta.architecture or architecture_name(info.architecture)
    return dict(fields, architecture=architecture or placeholder("RobustBench's architecture name", '--architecture'),
                additional_data=meta.additional_data, reported=meta.reported, footnote=footnote,
                preview=meta.preview)


def _audit_inputs(config: EvalConfig, info: ModelInfo, num_classes: int,
                  dataset: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """``evaluate_points``'s audit inputs: the surrogate (loaded like --checkpoint; its record, where it has one,
    must name the evaluated data's dataset, with or without -lt) and the training loss the run record names; and how
    the report names the surrogate (its source and weights' SHA-256)."""
    from ..data import LT_SUFFIX
    if config.attack.audit is None:
        return {}, None
    surrogate = name = None
    if config.surrogate:
        surrogate, surrogate_info = load_model(config.surrogate)
        trained_for = surrogate_info.num_classes
        if trained_for and trained_for != num_classes:
            raise ValueError(f"--surrogate '{config.surrogate}' was trained for {trained_for} classes "
                             f"({surrogate_info.dataset}); the evaluated data has {num_classes}.")
        def base(name: str) -> str:
            return name[:-len(LT_SUFFIX)] if name.endswith(LT_SUFFIX) else name
        if surrogate_info.dataset and base(surrogate_info.dataset) != base(dataset):
            raise ValueError(f"--surrogate '{config.surrogate}' was trained on {surrogate_info.dataset}, the evaluated "
                             f"data is {dataset}: a transfer attack needs a model of the same task. Give a surrogate "
                             f"trained on {base(dataset)}.")
        name = f"{config.surrogate} (weights SHA-256 {weights_sha256(surrogate)[:16]})"
    train_loss, loss_note = training_loss_from_run(info.run)
    return {'surrogate': surrogate, 'train_loss': train_loss, 'loss_note': loss_note}, name


EVAL_FIGURES = ('per_class.png', 'min_perturbation_cdf.png', 'robust_acc_vs_eps.png')


def write_figures(out: Path, report: EvalReport, result: PointsResult, classes: Sequence[str], label: str) -> List[str]:
    """The evaluation's PNGs; returns their names relative to ``out``."""
    protocol = report.protocol
    norm, eps = protocol.threat_model, protocol.eps_value
    context = FigureContext(label, protocol.dataset, norm, eps)
    train_counts = [c.train_count for c in report.per_class] if report.long_tailed else None
    figures = ['per_class.png']
    plot_per_class(out / 'per_class.png', classes,
                   {label: ([c.clean_acc for c in report.per_class], [c.robust_acc for c in report.per_class])},
                   train_counts, test_counts=[c.n for c in report.per_class], context=context)
    if result.min_perturbation:
        figures.append('min_perturbation_cdf.png')
        plot_min_perturbation_cdf(out / figures[-1], {label: result.min_perturbation}, {norm: eps}, context=context)
    figures.append('robust_acc_vs_eps.png')
    points = [(row.eps, row.robust_acc) for row in report.eps_curve]
    plot_robust_accuracy_vs_eps(out / figures[-1], {label: {'distances': result.min_perturbation.get(norm),
                                                            'points': points}}, norm, 2.5 * max(p[0] for p in points),
                                context=context)
    return figures


def _print_headline(report: EvalReport, out: Path) -> None:
    p = report.protocol
    print(f"clean {report.clean_acc:.2f}% {format_ci(report.clean_ci)}, AutoAttack {report.robust_acc:.2f}% "
          f"{format_ci(report.robust_ci)} ({p.threat_model} eps {p.eps}, n={p.n_examples}, 95% CI); stages: "
          + ' -> '.join(f"{s.stage} {s.acc:.2f}" for s in report.stages))
    for norm, s in (report.min_perturbation or {}).items():
        median = '–' if s.median is None else f"{s.median:.4g}"
        print(f"FAB minimal {norm} perturbation: median {median} over {s.n} points")
    audit = report.audit
    if audit is not None:
        print(f"audit: robust {audit.robust_acc:.2f}% {format_ci(audit.robust_ci)} "
              f"(AutoAttack {audit.autoattack_acc:.2f}%), "
              f"{audit.broke_beyond_aa} points broken beyond AutoAttack; checks: "
              + ', '.join(f"{k} {'ok' if c['passed'] else 'FAILED'}" for k, c in audit.checks.items()))
        if audit.unreliable:
            print('UNRELIABLE: the audit ' + '; '.join(audit.reasons), file=sys.stderr)
    if report.warnings:
        print('UNRELIABLE: AutoAttack warned:\n  ' + '\n  '.join(report.warnings), file=sys.stderr)
    entry = 'the leaderboard JSON' if report.leaderboard is not None else report.leaderboard_note
    print(f"wrote {out / REPORT_FILE}, {out / 'summary.md'}, {out / AUTOATTACK_LOG}, plots; {entry}")
