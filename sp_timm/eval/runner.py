""" ``sp-timm eval``: AutoAttack in the RobustBench protocol on an sp-timm checkpoint, a ``local-dir:`` / ``hf-hub:``
export or a RobustBench zoo model; sharded over processes with Accelerate and resumable.

An evaluation folder::

    OUT/
      report.json                         everything measured (schema: sp_timm.eval.report.build_report)
      summary.md                          the same, for people
      model_info/<dataset>/<threat_model>/<name>.json   the RobustBench leaderboard entry
      autoattack.log                      AutoAttack's own log of the evaluation (what RobustBench submitters attach)
      per_class.png, min_perturbation_cdf.png, robust_acc_vs_eps.png
      .work/                              per-chunk results (safetensors), kept so a rerun resumes
"""
import argparse
import hashlib
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..checkpoint import LINKS, resolve_checkpoint, weights_sha256
from ..formatting import format_ci
from ..files import atomic_write_json, atomic_write_text, check_output_folder, safe_path_component
from .args import DEFAULT_N_EXAMPLES, build_eval_parser  # the flags: sp_timm/eval/args.py (no torch)
from .attacks import (AUTOATTACK_LOGGER, STANDARD_ATTACKS, Chunks, autoattack_chunk, capture_autoattack_warnings,
                      fab_chunk, run_chunks)
from .audit import (AuditConfig, LossFn, audit_identity, check_surrogate, fab_robust_flags, run_audit,
                    training_loss_from_record)
from ..threat.budget import DEFAULT_EPS, THREAT_MODELS, check_eps, format_eps
from .plots import FigureContext, plot_min_perturbation_cdf, plot_per_class, plot_robust_accuracy_vs_eps
from .report import SP_PAPER, build_report, leaderboard_entry, placeholder, render_summary

__all__ = ['build_eval_parser', 'evaluate', 'evaluate_points', 'REPORT_FILE', 'AUTOATTACK_LOG', 'architecture_name']

REPORT_FILE = 'report.json'
AUTOATTACK_LOG = 'autoattack.log'
_ARCHITECTURES = {'wrn28_10_cifar': 'WideResNet-28-10', 'wrn34_10_cifar': 'WideResNet-34-10',
                  'wrn34_20_cifar': 'WideResNet-34-20', 'wrn70_16_cifar': 'WideResNet-70-16',
                  'preact_resnet18_cifar': 'PreActResNet-18', 'resnet20_cifar': 'ResNet-20', 'resnet32_cifar': 'ResNet-32',
                  'small_cnn_cifar': 'SmallCNN'}


def architecture_name(model_name: Optional[str]) -> str:
    """RobustBench's spelling of an architecture (``WideResNet-28-10``); timm's name otherwise."""
    return _ARCHITECTURES.get(model_name or '', model_name or '')


def _check_points(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device) -> int:
    """Clear errors for inputs AutoAttack would silently mis-evaluate; returns the model's number of classes."""
    if not torch.is_floating_point(images) or images.dim() != 4:
        raise ValueError(f'images must be a float tensor (N, C, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}.')
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f'images range over [{lo:.3g}, {hi:.3g}], not [0, 1]: AutoAttack perturbs pixels in [0, 1] and '
                         f'clips there. Pass unnormalised images (sp-timm models and RobustBench models normalise inside).')
    if labels.dim() != 1 or len(labels) != len(images) or torch.is_floating_point(labels):
        raise ValueError(f'labels must be class indices (N,) for the {len(images)} images, got {labels.dtype} {tuple(labels.shape)}.')
    with torch.no_grad():
        num_classes = model(images[:1].to(device)).shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f'labels span {labels.min().item()}..{labels.max().item()} but the model has {num_classes} '
                         f'outputs: a checkpoint for another dataset?')
    return num_classes


class _LogLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _autoattack_log() -> Iterator[List[str]]:
    """Every message of AutoAttack's logger (pyautoattack logs its progress at DEBUG) as lines, while the block
    runs. They do not propagate to the root logger meanwhile (no debug output on a user's console); the warnings
    still reach ``capture_autoattack_warnings``, whose handler sits on the same logger."""
    logger = logging.getLogger(AUTOATTACK_LOGGER)
    handler, level, propagate = _LogLines(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


_LOG_RECORD = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) ', re.M)
_LOG_MARKS = ('== ', '-- resumed: ', '(every stage restored')  # lines _logged_chunk writes between records


def _replay_warnings(text: str) -> None:
    """Log again the warnings (and worse) of a saved chunk log, at their level, on AutoAttack's logger: a resumed
    evaluation reports the warnings of the stages it restored, as the run that computed them did."""
    logger = logging.getLogger(AUTOATTACK_LOGGER)
    marks = list(_LOG_RECORD.finditer(text))
    propagate, logger.propagate = logger.propagate, False  # like the live ones: to our handlers, not the console
    try:
        for mark, following in zip(marks, marks[1:] + [None]):
            level = logging.getLevelName(mark.group(1))
            if isinstance(level, int) and level >= logging.WARNING:
                lines = text[mark.end():following.start() if following else len(text)].split('\n')
                cut = next((i for i, line in enumerate(lines) if i and line.startswith(_LOG_MARKS)), len(lines))
                logger.log(level, '%s', '\n'.join(lines[:cut]).rstrip('\n'))
    finally:
        logger.propagate = propagate


def _logged_chunk(compute, log_path: Optional[Path], title: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """``compute(on_stage)`` with AutoAttack's log captured: (its result, the chunk's log text). With ``log_path``
    the text is saved beside the chunk's results after every stage, as the stage's results are, so a run killed
    between stages keeps the log of the stages it finished, and a resumed evaluation their warnings (logged again,
    ``_replay_warnings``)."""
    before = log_path.read_text(encoding='utf-8') if log_path is not None and log_path.is_file() else ''
    _replay_warnings(before)
    ran: List[str] = []
    with _autoattack_log() as lines:
        def text() -> str:
            head = before or f'== {title} ==\n'
            if before and ran:
                head += f'-- resumed: {", ".join(ran)} --\n'
            return head + ''.join(line + '\n' for line in lines)

        def on_stage(stage: str) -> None:
            ran.append(stage)
            if log_path is not None:
                atomic_write_text(log_path, text())

        result = compute(on_stage)
    if ran:
        return result, text()
    if before:  # every stage was restored: the log of the run that computed them
        return result, before
    restored = text() + '(every stage restored from saved results; their log was not kept)\n'
    if log_path is not None:
        atomic_write_text(log_path, restored)
    return result, restored


POINTS_FILE = 'points.json'


def _check_work_dir(work_dir: Path, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    settings: Dict[str, Any], is_main: bool) -> None:
    """A work folder's saved stages belong to one model, one set of points and one seed, batch and chunk size: the
    first call records them in ``points.json``; a later call with others is refused (nothing is reused silently)."""
    points = hashlib.sha256(images.contiguous().numpy().tobytes() + labels.contiguous().numpy().tobytes()).hexdigest()
    identity = json.loads(json.dumps(dict(settings, model_sha256=weights_sha256(model), points_sha256=points,
                                          n_points=len(labels))))
    path = Path(work_dir) / POINTS_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in identity if saved.get(k) != identity[k])
        if changed:
            raise ValueError(f"work_dir '{work_dir}' holds the saved stages of another evaluation (other "
                             f"{', '.join(changed)}); give another work_dir, or delete it to start again (sp-timm eval: "
                             f"--restart, or another --out).")
    elif is_main:
        atomic_write_json(path, identity)


def evaluate_points(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, threat_model: str = 'Linf',
                    eps: Optional[float] = None, seed: int = 0, batch_size: int = 500, chunk_size: Optional[int] = None,
                    work_dir: Optional[Path] = None, min_pert_norms: Sequence[str] = THREAT_MODELS,
                    min_pert_examples: Optional[int] = None, fab_iters: int = 100, curve_eps: Sequence[float] = (),
                    progress: bool = True, echo_warnings: bool = True, audit: Union[bool, AuditConfig, None] = None,
                    surrogate: Optional[torch.nn.Module] = None, train_loss: Optional[LossFn] = None,
                    loss_note: str = '') -> Dict[str, Any]:
    """AutoAttack (standard) and FAB on ``images`` (float, [0, 1]) with ``labels``: the Python API of ``sp-timm eval``.

    Work is cut into chunks of ``chunk_size`` points (default ``batch_size``) that the processes of the current
    Accelerate state share; with ``work_dir`` every chunk (and every AutoAttack stage of a chunk) is saved and
    reused by a later call. Returns per-point tensors: ``aa`` (flags per stage, ``pred``, ``perturbation``),
    ``min_perturbation`` ({norm: distance}), ``curve`` ({eps: robust flags}), the AutoAttack ``warnings`` (those
    of this process's chunks; the checks over all points, on the main process only), and
    ``log``: AutoAttack's own log of every chunk (its DEBUG messages), one text per chunk in point order.

    With ``audit`` (True or an ``AuditConfig``), the adaptive-attack audit of ``sp_timm.eval.audit`` follows on
    the points AutoAttack left robust: ``audit`` (the report's section) and ``audit_points`` (per-point ``worst``
    and per-attack flags). ``train_loss`` (per-sample ``(logits, labels) -> (B,)``, e.g. an SP loss with
    ``reduction='none'``) adds the loss-aware attack, skipped with ``loss_note`` when None; ``surrogate`` (a model
    of the same classes and inputs) adds the transfer attack.
    """
    import logging
    from accelerate import PartialState
    from pyautoattack import checks
    if len(images) == 0:
        raise ValueError('no points to evaluate (0 images); pass at least one image and its label.')
    device, main_process = PartialState().device, PartialState().is_main_process
    eps = check_eps(DEFAULT_EPS[threat_model] if eps is None else eps, threat_model, images[0].numel())
    curve_eps = [check_eps(e, threat_model, images[0].numel()) for e in curve_eps if abs(e - eps) > 1e-12]
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError('--batch-size and --chunk-size must be >= 1.')
    model = model.to(device).eval()
    num_classes = _check_points(model, images, labels, device)
    config = AuditConfig() if audit is True else audit or None
    if config is not None and surrogate is not None:
        check_surrogate(surrogate, images, num_classes, device)
    if work_dir is not None:
        _check_work_dir(work_dir, model, images.cpu(), labels.cpu(), {'seed': seed, 'batch_size': batch_size,
                        'chunk_size': chunk_size or batch_size}, main_process)
    chunks = Chunks(len(labels), chunk_size or batch_size)
    path = lambda name, c: None if work_dir is None else Path(work_dir) / name / f'chunk-{c:05d}.safetensors'
    common = dict(seed=seed, batch_size=batch_size, device=device)

    logs: Dict[Tuple[str, int], str] = {}

    def autoattack_at(budget: float, name: str) -> Dict[str, torch.Tensor]:
        def compute(c: int, s: slice) -> Dict[str, torch.Tensor]:
            chunk_path = path(name, c)
            title = (f'AutoAttack {threat_model} eps {format_eps(budget)}, chunk {c} (points {s.start}..{s.stop - 1}), '
                     f'seed {seed}, batch size {batch_size}')
            out, logs[name, c] = _logged_chunk(
                lambda on_stage: autoattack_chunk(model, images[s], labels[s], eps=budget, norm=threat_model,
                                                  path=chunk_path, on_stage=on_stage, **common),
                None if chunk_path is None else chunk_path.with_suffix('.log'), title)
            return out
        return run_chunks(chunks, compute, f'AutoAttack {threat_model} {format_eps(budget)}', progress)

    result: Dict[str, Any] = {'eps': eps}
    with capture_autoattack_warnings(echo=echo_warnings) as warnings:
        result['aa'] = aa = autoattack_at(eps, f'autoattack-{threat_model}-{eps:.8g}')
        result['curve'] = {e: autoattack_at(e, f'autoattack-{threat_model}-{e:.8g}')[STANDARD_ATTACKS[-1]] for e in curve_eps}
        n_fab = len(labels) if min_pert_examples is None else min(min_pert_examples, len(labels))
        result['min_perturbation'] = {}
        if n_fab > 0:
            fab_chunks = Chunks(n_fab, chunk_size or batch_size)
            for norm in min_pert_norms:
                compute = lambda c, s, norm=norm: fab_chunk(model, images[s], labels[s], norm=norm, n_iter=fab_iters,
                                                            path=path(f'fab-{norm}-{fab_iters}', c), **common)
                result['min_perturbation'][norm] = run_chunks(fab_chunks, compute, f'FAB {norm} minimal perturbation',
                                                              progress)['distance']
        # AutoAttack's own check, run by run_standard_evaluation over all points when the attacks run in one call;
        # on the gathered results, so by one process (the warnings of all are gathered into the report)
        if main_process:
            stage_acc = {'clean': aa['clean'].double().mean().item()}
            stage_acc.update({a: aa[a].double().mean().item() for a in STANDARD_ATTACKS})
            checks.check_square_sr(stage_acc, logger=logging.getLogger(AUTOATTACK_LOGGER))
    result['warnings'] = list(warnings)
    from accelerate.utils import gather_object
    gathered = {key: text for part in gather_object([logs]) for key, text in part.items()}
    budgets = [f'autoattack-{threat_model}-{e:.8g}' for e in [eps, *curve_eps]]
    result['log'] = [gathered[key] for key in sorted(gathered, key=lambda k: (budgets.index(k[0]), k[1]))]
    if config is not None:  # its attacks' warnings go to the audit section: the audit's own checks judge them
        identity = audit_identity(surrogate, train_loss)
        with capture_autoattack_warnings(echo=echo_warnings) as audit_warnings:
            result['audit'], result['audit_points'] = run_audit(
                model, images, labels, aa, eps=eps, norm=threat_model, chunk_size=chunk_size or batch_size,
                config=config, num_classes=num_classes, curve=result['curve'], train_loss=train_loss,
                loss_note=loss_note, surrogate=surrogate, work_dir=work_dir, identity=identity,
                fab_distance=result['min_perturbation'].get(threat_model), progress=progress, **common)
        result['audit']['warnings'] = list(audit_warnings)
    if main_process and aa['perturbation'].max().item() > eps * (1 + 1e-4) + 1e-6:
        result['warnings'].append(f"an adversarial example exceeds the budget: {threat_model} norm "
                                  f"{aa['perturbation'].max().item():.6g} > eps {eps:.6g}")
    distance = result['min_perturbation'].get(threat_model)
    if distance is not None and main_process:  # FAB flipping a point within eps that AutoAttack counted robust: AutoAttack missed it
        missed = int((aa[STANDARD_ATTACKS[-1]] & ~fab_robust_flags(distance, eps, len(labels))).sum())
        if missed:
            result['warnings'].append(f'FAB (minimal perturbation) flipped {missed} points within eps that AutoAttack '
                                      f'left robust: the AutoAttack accuracy overestimates robustness.')
    return result


def _load_robustbench_model(name: str, model_dir: str, dataset: str, threat_model: str) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    from ..compat import install_robustbench_compat
    if not install_robustbench_compat() and not _has_module('robustbench'):
        raise ValueError("--robustbench-model needs the [robustbench] extra: pip install 'sp-timm[robustbench]'.")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model as rb_load_model
    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except ValueError:
        raise ValueError(f"RobustBench has no {dataset} / {threat_model} leaderboard (it has cifar10, cifar100, imagenet).") from None
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
    return model.eval(), {'model': name, 'name': name, 'dataset': dataset, 'source': f'robustbench:{name}'}


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _prepare_work(out: Path, identity: Dict[str, Any], restart: bool, is_main: bool) -> Path:
    """The ``.work`` folder of ``out``; its saved chunks are reused only by the same evaluation."""
    work = out / '.work'
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
                             f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}); choose another --out "
                             f"or add --restart to discard it.")
    elif is_main:
        atomic_write_json(config, identity)
    return work


def _default_out(args: argparse.Namespace, record: Dict[str, Any], eps: float) -> Path:
    tag = f"eval-{args.threat_model}-{format_eps(eps).replace('/', '_')}"
    if record.get('model_ema') and record.get('weights') == 'raw':  # a --model-ema run's raw weights: beside the EMA's
        tag += '-raw'
    source = args.checkpoint or ''
    if source and not source.startswith(('local-dir:', 'hf-hub:')):
        checkpoint = resolve_checkpoint(source).resolve()
        if checkpoint.name.startswith('epoch-') and any((checkpoint.parent / link).is_symlink() for link in LINKS):
            # a run's epoch folder is deleted once no link names it: the evaluation goes beside it, in RUN/eval/
            return checkpoint.parent / 'eval' / f'{checkpoint.name}-{tag}'
        return checkpoint / tag
    folder = (safe_path_component(record['name'], "the record's name") if record.get('name')
              else ''.join('_' if c in '/\\:' else c for c in str(record.get('model'))))
    return Path('output') / 'eval' / folder / tag


def _check_settings(args: argparse.Namespace) -> None:
    """The flags that need no model or data, checked before anything is loaded or written (a rerun with a
    corrected flag then finds no ``.work/config.json`` of the mistaken one)."""
    problems = []
    for flag, low in (('batch_size', 1), ('chunk_size', 1), ('n_examples', 1), ('min_pert_examples', 0), ('fab_iters', 1)):
        value = getattr(args, flag, None)
        if value is not None and value < low:
            problems.append(f"--{flag.replace('_', '-')} must be >= {low}, got {value}.")
    for eps in ([args.eps] if args.eps is not None else []) + list(args.curve_eps or []):
        try:
            check_eps(eps, args.threat_model)
        except ValueError as err:
            problems.append(str(err))
    checks = [lambda: safe_path_component(args.model_name, '--model-name')] if args.model_name is not None else []
    checks += [lambda: check_output_folder(args.out, '--out')] if args.out else []
    for check in checks:
        try:
            check()
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError(' '.join(problems))


def _leaderboard_meta(args: argparse.Namespace, record: Dict[str, Any]) -> Dict[str, Any]:
    """RobustBench's model_info fields: the flags; else what the training record implies (the SP-losses paper for
    SP models, a description of the run for the other sp-timm models, e.g. CE baselines); else a placeholder that
    says what to fill in. ``reported`` only from --reported: it is the paper's number, not this measurement."""
    from ..losses import is_sp_loss
    loss = record.get('loss')
    sp = bool(loss) and is_sp_loss(loss)
    adv = record.get('args', {}).get('adv')
    training = f'{adv.upper()} adversarial training' if adv not in (None, 'none') else 'standard training'
    architecture = args.architecture or architecture_name(record.get('model'))
    footnote = args.footnote
    if footnote is None and loss:
        params = ', '.join(f'{k}={v}' for k, v in record.get('loss_params', {}).items())
        footnote = f"sp-timm, loss {loss}" + (f' ({params})' if params else '') + f', {training}'
    if sp:
        known = SP_PAPER
    elif loss:
        known = {'name': f'{architecture or record.get("model")} trained with the {loss} loss, {training} (sp-timm baseline)'}
    else:
        known = {'name': record.get('name')}
    given = {'name': args.paper_title, 'link': args.link, 'authors': args.authors, 'venue': args.venue}
    asks = {'name': ('the paper title', '--paper-title'), 'link': 'URL of the paper or code', 'authors': 'the authors',
            'venue': 'the venue, e.g. NeurIPS 2023'}
    meta = {k: given[k] or known.get(k) or placeholder(*(ask if isinstance(ask, tuple) else (ask, f'--{k}')))
            for k, ask in asks.items()}
    return dict(meta, architecture=architecture or placeholder("RobustBench's architecture name", '--architecture'),
                additional_data=args.additional_data, reported=args.reported, footnote=footnote)


def _audit_inputs(args: argparse.Namespace, record: Dict[str, Any], num_classes: int, load_model) -> Dict[str, Any]:
    """``evaluate_points``'s audit arguments from the flags: the budgets, the surrogate (loaded like --checkpoint)
    and the training loss the run record names."""
    if not getattr(args, 'audit', False):
        if getattr(args, 'surrogate', None):
            raise ValueError('--surrogate is an attack of the audit: add --audit.')
        return {}
    config = AuditConfig(restarts=args.audit_restarts, n_iter=args.audit_iters, max_targets=args.audit_targets,
                         margin_restarts=args.audit_margin_restarts, margin_steps=args.audit_margin_steps,
                         square_queries=args.audit_square_queries, square_restarts=args.audit_square_restarts,
                         large_eps_factor=args.audit_large_eps_factor, threshold=args.audit_threshold)
    surrogate = None
    if args.surrogate:
        surrogate, surrogate_record = load_model(args.surrogate)
        trained_for = surrogate_record.get('num_classes')
        if trained_for and trained_for != num_classes:
            raise ValueError(f"--surrogate '{args.surrogate}' was trained for {trained_for} classes "
                             f"({surrogate_record.get('dataset')}); the evaluated data has {num_classes}.")
    train_loss, loss_note = training_loss_from_record(record)
    return {'audit': config, 'surrogate': surrogate, 'train_loss': train_loss, 'loss_note': loss_note}


def evaluate(args: argparse.Namespace) -> Optional[Path]:
    """Run ``sp-timm eval``; returns the evaluation folder (on the main process)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env
    from ..model_source import default_model_name, load_model
    from ..data import LT_SUFFIX, class_groups, create_dataset, dataset_spec, group_rule, longtail_counts
    import pyautoattack
    _check_settings(args)
    state = PartialState(cpu=parse_flag_from_env('ACCELERATE_USE_CPU'))
    start = time.perf_counter()
    if args.robustbench_model:
        if not args.dataset:
            raise ValueError('--robustbench-model needs --dataset (cifar10 or cifar100).')
        model, record = _load_robustbench_model(args.robustbench_model, args.robustbench_dir, args.dataset, args.threat_model)
    else:
        model, record = load_model(args.checkpoint, weights=getattr(args, 'weights', 'auto'))
        record.setdefault('source', args.checkpoint)
    dataset = args.dataset or record.get('dataset')
    if not dataset:
        raise ValueError(f"'{args.checkpoint}' does not record its dataset; give --dataset.")
    test = create_dataset(dataset, 'test', args.data_dir, args.imbalance_ratio, args.imbalance_profile)
    n = args.n_examples if args.n_examples is not None else min(DEFAULT_N_EXAMPLES, len(test))
    if not 1 <= n <= len(test):
        raise ValueError(f'--n-examples {n}: the {dataset} test set has {len(test)} images; choose 1..{len(test)}.')
    eps = check_eps(DEFAULT_EPS[args.threat_model] if args.eps is None else args.eps, args.threat_model,
                    test.images[0].numel())
    images, labels = test.images[:n].float().div_(255), test.labels[:n].long()
    missing = sorted(set(test.labels.tolist()) - set(labels.tolist()))
    if missing and state.is_main_process:  # e.g. an image folder, read class by class
        print(f"sp-timm eval: warning: the first {n} {dataset} test images hold no image of {len(missing)} of its "
              f"{test.num_classes} classes ({', '.join(test.classes[c] for c in missing[:5])}"
              f"{', ...' if len(missing) > 5 else ''}), so the accuracies are about the others only (a split ordered "
              f"by class, as an image folder is read, does this); a larger --n-examples, or none (the whole split), "
              f"covers them.",
              file=sys.stderr)
    if record.get('num_classes') and record['num_classes'] != test.num_classes:
        raise ValueError(f"'{args.checkpoint}' was trained for {record['num_classes']} classes ({record.get('dataset')}); "
                         f"{dataset} has {test.num_classes}.")
    audit_inputs = _audit_inputs(args, record, test.num_classes, load_model)

    long_tailed = dataset.endswith(LT_SUFFIX)
    if record.get('train_class_counts') and record.get('dataset') == dataset:
        train_counts = record['train_class_counts']
    else:  # the count formula, without loading the training split
        spec = dataset_spec(dataset)
        train_counts = (longtail_counts(spec.train_per_class, spec.num_classes, args.imbalance_ratio, args.imbalance_profile)
                        if long_tailed else [spec.train_per_class] * spec.num_classes)
    name = args.model_name or default_model_name(record)
    out = Path(args.out) if args.out else _default_out(args, record, eps)
    out = Path(broadcast_object_list([str(out)])[0])
    check_output_folder(out, '--out')
    weights = weights_sha256(model)
    identity = {'model_sha256': weights, 'dataset': dataset, 'n_examples': n,
                'threat_model': args.threat_model, 'eps': eps, 'seed': args.seed, 'batch_size': args.batch_size,
                'chunk_size': args.chunk_size or args.batch_size, 'pyautoattack': pyautoattack.__version__}
    work = _prepare_work(out, identity, args.restart, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        print(f"sp-timm eval: {record.get('source')} on the first {n} {dataset} test images, AutoAttack standard, "
              f"{args.threat_model} eps {format_eps(eps)}, {state.num_processes} process(es) on {state.device}, out {out}"
              + (f", {record['weights']} weights" if record.get('weights') else ''))
    result = evaluate_points(model, images, labels, threat_model=args.threat_model, eps=eps, seed=args.seed,
                             batch_size=args.batch_size, chunk_size=args.chunk_size, work_dir=work,
                             min_pert_norms=args.min_pert_norms, min_pert_examples=args.min_pert_examples,
                             fab_iters=args.fab_iters, curve_eps=args.curve_eps, progress=not args.no_progress,
                             echo_warnings=state.is_main_process, **audit_inputs)
    from accelerate.utils import gather_object
    warnings = [w for part in gather_object([result['warnings']]) for w in part]
    if 'audit' in result:
        result['audit']['warnings'] = [w for part in gather_object([result['audit']['warnings']]) for w in part]
    if not state.is_main_process:
        return None
    protocol = {'dataset': dataset, 'split': 'test', 'threat_model': args.threat_model, 'eps': format_eps(eps),
                'eps_value': eps, 'n_examples': n, 'version': 'standard', 'attacks': list(STANDARD_ATTACKS),
                'seed': args.seed, 'batch_size': args.batch_size, 'chunk_size': args.chunk_size or args.batch_size,
                'num_processes': state.num_processes, 'device': str(state.device),
                'pyautoattack_version': pyautoattack.__version__, 'fab_iters': args.fab_iters,
                'min_pert_examples': len(next(iter(result['min_perturbation'].values()), [])),
                'data_source': test.source}
    model_meta = {'name': name, 'source': record.get('source'), 'weights_sha256': weights, 'architecture': record.get('model'),
                  'loss': record.get('loss'), 'loss_params': record.get('loss_params'),
                  'adversarial_training': record.get('args', {}).get('adv'), 'trained_on': record.get('dataset'),
                  'weights': record.get('weights')}  # 'ema' (--model-ema's average) or 'raw'
    # groups from the whole training split (before the validation split), as the literature counts them
    group_counts = (record['split_class_counts'] if record.get('split_class_counts') and record.get('dataset') == dataset
                    else train_counts)
    rule = group_rule(group_counts)
    groups = class_groups(group_counts, rule)
    report = build_report(result['aa'], labels, classes=test.classes, protocol=protocol, model=model_meta,
                          warnings=warnings, train_counts=train_counts, class_groups=groups, group_rule=rule,
                          long_tailed=long_tailed, min_perturbation=result['min_perturbation'], curve=result['curve'],
                          audit=result.get('audit'))
    report['model_name'] = name
    report['seconds'] = time.perf_counter() - start
    report['leaderboard'] = entry = leaderboard_entry(report, _leaderboard_meta(args, record))
    figures = write_figures(out, report, result, test.classes, train_counts if long_tailed else None, name)
    atomic_write_json(out / 'model_info' / dataset / args.threat_model / f'{name}.json', entry)
    atomic_write_json(out / REPORT_FILE, report)
    atomic_write_text(out / 'summary.md', render_summary(report, figures))
    atomic_write_text(out / AUTOATTACK_LOG, autoattack_log_text(report, result['log']))
    _print_headline(report, out)
    return out


def autoattack_log_text(report: Dict[str, Any], chunk_logs: Sequence[str]) -> str:
    """``autoattack.log``: what was evaluated and how, AutoAttack's own log of every chunk (``evaluate_points``'s
    ``log``), then the numbers of the report."""
    from .. import __version__
    p, model = report['protocol'], report.get('model') or {}
    head = [f"sp-timm {__version__} eval of {model.get('source') or report.get('model_name')} "
            f"(weights SHA-256 {model.get('weights_sha256')})",
            f"{p['dataset']} {p.get('split', 'test')} split, the first {p['n_examples']} images ({p.get('data_source')}); "
            f"AutoAttack version={p.get('version', 'standard')} ({', '.join(p.get('attacks', []))}), pyautoattack "
            f"{p.get('pyautoattack_version')}, {p['threat_model']} eps {p['eps']}, seed {p.get('seed')}, batch size "
            f"{p.get('batch_size')}, chunks of {p.get('chunk_size')} points, {p.get('num_processes')} process(es) on "
            f"{p.get('device')}",
            'Each chunk runs the standard attacks one run_standard_evaluation call each, on the points still robust '
            '(the loop run_standard_evaluation runs itself): the accuracies AutoAttack logs are of those points.', '']
    tail = ['== result ==', f"clean accuracy: {report['clean_acc']:.2f}% {format_ci(report['clean_ci'])}",
            *[f"robust accuracy after {s['stage'].upper()}: {s['acc']:.2f}%" for s in report['stages'][1:]],
            f"robust accuracy: {report['robust_acc']:.2f}% {format_ci(report['robust_ci'])} (n={p['n_examples']}, 95% CI)"]
    tail += [f'AutoAttack warning: {w}' for w in report.get('warnings', [])]
    return '\n'.join(head) + '\n' + ''.join(text if text.endswith('\n') else text + '\n' for text in chunk_logs) \
        + '\n'.join(tail) + '\n'


def write_figures(out: Path, report: Dict[str, Any], result: Dict[str, Any], classes: Sequence[str],
                  train_counts: Optional[Sequence[int]], label: str) -> List[str]:
    """The evaluation's PNGs; returns their names relative to ``out``."""
    protocol = report['protocol']
    norm, eps = protocol['threat_model'], protocol['eps_value']
    context = FigureContext(label, protocol['dataset'], norm, eps)
    figures = ['per_class.png']
    plot_per_class(out / 'per_class.png', classes,
                   {label: ([c['clean_acc'] for c in report['per_class']], [c['robust_acc'] for c in report['per_class']])},
                   train_counts, test_counts=[c['n'] for c in report['per_class']], context=context)
    if result['min_perturbation']:
        figures.append('min_perturbation_cdf.png')
        plot_min_perturbation_cdf(out / figures[-1], {label: result['min_perturbation']}, {norm: eps}, context=context)
    figures.append('robust_acc_vs_eps.png')
    points = [(row['eps'], row['robust_acc']) for row in report['eps_curve']]
    plot_robust_accuracy_vs_eps(out / figures[-1], {label: {'distances': result['min_perturbation'].get(norm),
                                                            'points': points}}, norm, 2.5 * max(p[0] for p in points),
                                context=context)
    return figures


def _print_headline(report: Dict[str, Any], out: Path) -> None:
    p = report['protocol']
    print(f"clean {report['clean_acc']:.2f}% {format_ci(report['clean_ci'])}, AutoAttack {report['robust_acc']:.2f}% "
          f"{format_ci(report['robust_ci'])} ({p['threat_model']} eps {p['eps']}, n={p['n_examples']}, 95% CI); stages: "
          + ' -> '.join(f"{s['stage']} {s['acc']:.2f}" for s in report['stages']))
    for norm, s in report.get('min_perturbation', {}).items():
        median = '–' if s['median'] is None else f"{s['median']:.4g}"
        print(f"FAB minimal {norm} perturbation: median {median} over {s['n']} points")
    audit = report.get('audit')
    if audit:
        print(f"audit: robust {audit['robust_acc']:.2f}% {format_ci(audit['robust_ci'])} (AutoAttack {audit['autoattack_acc']:.2f}%), "
              f"{audit['broke_beyond_aa']} points broken beyond AutoAttack; checks: "
              + ', '.join(f"{k} {'ok' if c['passed'] else 'FAILED'}" for k, c in audit['checks'].items()))
        if audit['unreliable']:
            print('UNRELIABLE: the audit ' + '; '.join(audit['reasons']), file=sys.stderr)
    if report['warnings']:
        print('UNRELIABLE: AutoAttack warned:\n  ' + '\n  '.join(report['warnings']), file=sys.stderr)
    print(f"wrote {out / REPORT_FILE}, {out / 'summary.md'}, {out / AUTOATTACK_LOG}, the leaderboard JSON and plots")
