""" The robustness study: does an SP loss buy robustness? Every SP member (defaults plus a small grid) against
CE, CE + label smoothing, CE with the same gradient clipping and, on the -lt settings, CE with deferred
re-weighting (CE-DRW, the long-tail literature's baseline), the balanced softmax (``ce_bs``, the adversarial long-tail
literature's baseline) and SP with logit adjustment (``sp_margin_m*_la``, screened apart from SP alone), on four
settings: digits and digits-lt (ratio 10),
standard training and PGD-AT (Linf 2/255, 3 steps). The network and recipe are the demo's (small_cnn_cifar,
sp_timm.demo.demo_train_flags); every run holds out its validation split (``--val-split auto``: 10 % of the
training split, stratified, seed 0).

Three phases, each resumable (one JSON per finished job; a rerun skips it), so the study continues across
sessions and machines:

1. ``screen``: every configuration x ``--screen-seeds`` seeds. Scored on the run's VALIDATION images only:
   clean accuracy and the white-box part of AutoAttack (APGD-CE then APGD-T, Linf ``--eps``).
2. ``select`` (cheap, automatic): per setting, the best configuration of each SP member and the chosen SP
   configuration, by validation robust accuracy (balanced over classes on the -lt settings) among those whose
   validation clean accuracy is within ``--clean-tolerance`` points of CE's. Written to ``selection.json``.
3. ``confirm``: the finalists -- CE, CE + LS, CE-DRW (-lt), the chosen SP configuration, the best of every
   other member, CE + clip 5 and, when the chosen configuration trains with clip 5, the same configuration
   without it (``<chosen>_noclip``: is the gain the loss's or the clipping's?) -- x ``--seeds`` seeds, trained
   again where the seed is new (on -lt also the balanced softmax and the best SP + logit adjustment; the CE models of
   seeds scored earlier are first trained again, side by side, as the audits' surrogates), scored on ALL test
   points with AutoAttack (standard), the adaptive audit (``sp-timm eval --audit``) and FAB minimal Linf
   perturbations. Per point flags are kept, so SP and CE are
   compared by paired tests on the same points. A finalist whose run trains the same weights as one already
   scored for that seed, with the same training loss (CE + clip 5 when the clip never acts, ``<chosen>_noclip``
   likewise), takes that job's saved stages -- the same model under the same seeded attacks -- and runs only the
   stages it lacked (the transfer attack, for CE's twin); its row says ``twin_of``. ``--finalists`` confirms a
   subset (and CE).

``summary`` (also run after every phase) writes OUT/summary.md: the screening table, the choice, and per setting
the finalists' mean and 95 % t-interval over seeds, audited robust accuracy, median minimal perturbation, and for
-lt the balanced and many / medium / few-shot accuracies; paired tests of the chosen SP configuration against CE,
CE + LS, CE-DRW (-lt) and its no-clip control.

    python benchmarks/robustness_study.py --out output/study --phase all            # everything (hours on 2 CPUs)
    python benchmarks/robustness_study.py --out output/study --phase screen --workers 1
    python benchmarks/robustness_study.py --out output/study --phase confirm --workers 14 --time-budget 420  # a GPU
"""
import argparse
import concurrent.futures as futures
import contextlib
import io
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIP = ['--clip-grad', '5']
CONFIGS: Dict[str, List[str]] = {  # name -> loss flags; the member is the --loss value
    'ce': ['--loss', 'ce'],
    'ce_ls0.1': ['--loss', 'ce', '--smoothing', '0.1'],
    'ce_clip5': ['--loss', 'ce'] + CLIP,  # control: sp_margin trains with this clipping
    'sp_ls_p0.8': ['--loss', 'sp_ls', '--sp-pstar', '0.8'],
    'sp_ls_p0.9': ['--loss', 'sp_ls', '--sp-pstar', '0.9'],
    'sp_ls_p0.95': ['--loss', 'sp_ls', '--sp-pstar', '0.95'],
    'sp_logit_l0.02': ['--loss', 'sp_logit', '--sp-lam', '0.02'],
    'sp_logit_l0.05': ['--loss', 'sp_logit', '--sp-lam', '0.05'],
    'sp_logit_l0.1': ['--loss', 'sp_logit', '--sp-lam', '0.1'],
    'sp_ce_p0.8': ['--loss', 'sp_ce', '--sp-pstar', '0.8'],
    'sp_ce_p0.9': ['--loss', 'sp_ce', '--sp-pstar', '0.9'],
    'sp_margin_m1': ['--loss', 'sp_margin', '--sp-margin', '1.0'] + CLIP,
    'sp_margin_m2': ['--loss', 'sp_margin', '--sp-margin', '2.0'] + CLIP,
    'sp_margin_m4': ['--loss', 'sp_margin', '--sp-margin', '4.0'] + CLIP,
    'sp_focal_g1_p0.9': ['--loss', 'sp_focal', '--sp-gamma', '1', '--sp-pstar', '0.9'],
    'sp_focal_g2_p0.9': ['--loss', 'sp_focal', '--sp-gamma', '2', '--sp-pstar', '0.9'],
    # the long-tail literature's reference (LDAM-DRW's deferred re-weighting, Cui et al.'s effective number);
    # DRW_EPOCH stands for 80 % of the run's epochs (160 of 200 in LDAM-DRW)
    'ce_drw': ['--loss', 'ce', '--class-weight', 'effective', '--class-weight-beta', '0.9999', '--drw-epoch',
               'DRW_EPOCH'],
    # the adversarial long-tail literature's baseline: balanced softmax (CE on z + log prior; AT-BSL, Yue et al. 2024)
    'ce_bs': ['--loss', 'ce', '--logit-adjust', '1'],
    # SP with logit adjustment: the member the -lt screening chose (sp_margin, with its clipping) on z + log prior
    'sp_margin_m1_la': ['--loss', 'sp_margin', '--sp-margin', '1.0', '--logit-adjust', '1'] + CLIP,
    'sp_margin_m2_la': ['--loss', 'sp_margin', '--sp-margin', '2.0', '--logit-adjust', '1'] + CLIP,
    'sp_margin_m4_la': ['--loss', 'sp_margin', '--sp-margin', '4.0', '--logit-adjust', '1'] + CLIP,
}
NO_CLIP = '_noclip'  # suffix of a confirmation-only control: the configuration without CLIP
BASELINES = ('ce', 'ce_ls0.1', 'ce_clip5', 'ce_drw', 'ce_bs')
# what the chosen configuration is paired with on the same points (CE + clip 5 is CE's control, not the chosen one's)
PAIRED_BASELINES = ('ce', 'ce_ls0.1', 'ce_drw', 'ce_bs')
# SP + logit adjustment: screened on -lt, never the chosen SP configuration (that is SP alone); its best is a finalist
LOGIT_ADJUSTED = ('sp_margin_m1_la', 'sp_margin_m2_la', 'sp_margin_m4_la')
LT_ONLY = ('ce_drw', 'ce_bs') + LOGIT_ADJUSTED  # re-balancing configurations: the -lt settings only
DRW_FRACTION = 0.8
PGD_AT = ['--adv', 'pgd', '--adv-steps', '3', '--adv-eps', '2/255', '--adv-step-size', '1/255']
SETTINGS: Dict[str, Tuple[str, List[str]]] = {  # name -> (dataset, extra training flags)
    'digits': ('digits', []),
    'digits-lt': ('digits-lt', []),
    'digits-pgdat': ('digits', PGD_AT),
    'digits-lt-pgdat': ('digits-lt', PGD_AT),
}
PHASES = ('screen', 'select', 'confirm', 'summary', 'all')


def configs_of(setting: str) -> List[str]:
    """The configurations screened in ``setting``."""
    return [c for c in CONFIGS if is_lt(setting) or c not in LT_ONLY]


def train_flags(setting: str, config: str, epochs: int, seed: int) -> List[str]:
    """The demo's recipe for ``config`` in ``setting`` as ``sp-timm train`` flags (no output folder)."""
    from sp_timm.demo import demo_train_flags
    dataset, extra = SETTINGS[setting]
    flags = demo_train_flags(config_flags(config), dataset, epochs, seed) + extra
    total = int(flags[flags.index('--epochs') + 1])
    flags = [str(round(DRW_FRACTION * total)) if f == 'DRW_EPOCH' else f for f in flags]
    return flags + (['--adv-val-examples', '0'] if extra else [])


def config_flags(config: str) -> List[str]:
    """The loss flags of ``config``: a screened configuration, or ``<screened>_noclip``, the same without
    ``--clip-grad 5`` (the clipping control of a chosen SP configuration that trains with it; never screened)."""
    base = config[:-len(NO_CLIP)] if config.endswith(NO_CLIP) else None
    at = _find(CONFIGS[base], CLIP) if base in CONFIGS and base not in BASELINES else None
    if at is not None:
        return CONFIGS[base][:at] + CONFIGS[base][at + len(CLIP):]
    if config not in CONFIGS:
        raise KeyError(f"unknown study configuration '{config}': one of {', '.join(CONFIGS)}, or an SP one of them "
                       f"that clips + '{NO_CLIP}'")
    return CONFIGS[config]


def member(config: str) -> str:
    flags = config_flags(config)
    return flags[flags.index('--loss') + 1]


def is_lt(setting: str) -> bool:
    return SETTINGS[setting][0].endswith('-lt')


# ---------------------------------------------------------------------------------------------------- jobs
def _run_dir(cfg: Dict[str, Any], setting: str, config: str, seed: int) -> Path:
    return Path(cfg['out']) / 'runs' / f'{setting}-{config}-s{seed}'


def _work_dir(cfg: Dict[str, Any], setting: str, config: str, seed: int) -> Path:
    return Path(cfg['out']) / 'eval-work' / f'{setting}-{config}-s{seed}'


def _train(setting: str, config: str, seed: int, cfg: Dict[str, Any]) -> Path:
    """Train (or finish, or reuse) one run; returns its ``last`` checkpoint."""
    from sp_timm.cli.train import parse_train_args
    from sp_timm.train import train
    from sp_timm.checkpoint import read_run_record
    run_dir = _run_dir(cfg, setting, config, seed)
    flags = train_flags(setting, config, cfg['epochs'], seed) + ['--output', str(run_dir), '--no-progress']
    total = int(flags[flags.index('--epochs') + 1])
    last = run_dir / 'last'
    if last.exists() and read_run_record(last).earlier_reduction():
        # trained when a class-weighted batch loss was the plain mean (every step smaller): train it again, and
        # drop its evaluation's saved stages, which belong to the old model
        print(f'{run_dir.name}: trained with the old class-weighted loss (plain batch mean); training it again.',
              flush=True)
        shutil.rmtree(run_dir)
        shutil.rmtree(_work_dir(cfg, setting, config, seed), ignore_errors=True)
    if last.exists() and json.loads((last / 'state.json').read_text())['epoch'] >= total:
        return last
    if last.exists():
        flags += ['--resume', str(run_dir)]
    with contextlib.redirect_stdout(io.StringIO()):
        train(parse_train_args(flags))
    return last


def _finished_run(setting: str, config: str, seed: int, cfg: Dict[str, Any], wait: float = 0) -> Optional[Path]:
    """The ``last`` checkpoint of a finished run, waiting up to ``wait`` seconds for another process to finish it."""
    flags = train_flags(setting, config, cfg['epochs'], seed)
    total = int(flags[flags.index('--epochs') + 1])
    last = _run_dir(cfg, setting, config, seed) / 'last'
    stop = time.time() + wait
    while True:
        try:
            if json.loads((last / 'state.json').read_text())['epoch'] >= total:
                return last
        except (OSError, ValueError, KeyError):
            pass
        if time.time() >= stop:
            return None
        time.sleep(5)


def _class_metrics(flags, labels, num_classes: int, groups: Optional[Dict[str, List[int]]]) -> Dict[str, Any]:
    from sp_timm.eval.stats import balanced_accuracy, group_accuracy, per_class_accuracy
    per_class = per_class_accuracy(flags, labels, num_classes)
    out = {'acc': 100 * flags.double().mean().item(), 'balanced': balanced_accuracy(per_class)}
    if groups is not None:
        out['groups'] = group_accuracy(per_class, groups)
    return out


def _validation_data(checkpoint: Path):
    """The run's own validation images, rebuilt from the run record (same split: same indices)."""
    from sp_timm.checkpoint import read_run_record
    from sp_timm.data import carve_validation, create_dataset
    from sp_timm.demo import DEMO_IMBALANCE
    record = read_run_record(checkpoint)
    train = create_dataset(record.dataset, 'train', imbalance_ratio=DEMO_IMBALANCE)
    _, val, split = carve_validation(train, record.config.val_split)
    if sorted(split['indices']) != sorted(record.validation.indices):
        raise RuntimeError(f'{checkpoint}: the validation split cannot be rebuilt (indices differ).')
    return val, record


def screen_job(job: Tuple[str, str, int, Dict[str, Any]]) -> Dict[str, Any]:
    """Train one configuration and score it on its validation split with APGD-CE + APGD-T."""
    import torch
    torch.set_num_threads(1)
    import sp_timm  # noqa: F401
    from accelerate import PartialState
    from pyautoattack import AutoAttack
    from sp_timm.model_source import load_model
    setting, config, seed, cfg = job
    start = time.perf_counter()
    checkpoint = _train(setting, config, seed, cfg)
    val, record = _validation_data(checkpoint)
    device = PartialState().device
    model, _ = load_model(str(checkpoint))
    model = model.to(device).eval()
    x, y = val.images.float() / 255, val.labels
    with torch.no_grad():
        clean = model(x.to(device)).argmax(1).cpu() == y
    adversary = AutoAttack(model, norm='Linf', eps=cfg['eps'], seed=0, device=device, version='standard')
    adversary.attacks_to_run = ['apgd-ce', 'apgd-t']
    robust = clean.clone()
    index = clean.nonzero().flatten()
    with contextlib.redirect_stdout(io.StringIO()):
        if len(index):
            _, pred = adversary.run_standard_evaluation(x[index], y[index], batch_size=512)
            robust[index] = pred.cpu() == y[index]
    groups = record.class_groups if is_lt(setting) else None
    return {'phase': 'screen', 'setting': setting, 'config': config, 'seed': seed, 'n_val': len(y),
            'eps': cfg['eps'], 'attack': 'APGD-CE + APGD-T (AutoAttack standard, white-box part)',
            'clean': _class_metrics(clean, y, val.num_classes, groups),
            'robust': _class_metrics(robust, y, val.num_classes, groups),
            'device': str(device), 'seconds': time.perf_counter() - start}


def confirm_job(job: Tuple[str, str, int, Dict[str, Any]]) -> Dict[str, Any]:
    """Train one finalist (or reuse its screening run) and score it on all test points: AutoAttack standard, the
    audit, FAB minimal Linf perturbations; per-point flags kept for the paired tests."""
    import torch
    torch.set_num_threads(1)
    import sp_timm  # noqa: F401
    from sp_timm.model_source import load_model
    from sp_timm.checkpoint import read_run_record
    from sp_timm.data import create_dataset
    from sp_timm.demo import DEMO_IMBALANCE
    from sp_timm.eval import evaluate_points
    from sp_timm.eval.attacks import STANDARD_ATTACKS
    from sp_timm.eval.report import perturbation_summary
    from sp_timm.records import to_json
    setting, config, seed, cfg = job
    start = time.perf_counter()
    checkpoint = _train(setting, config, seed, cfg)
    record = read_run_record(checkpoint)
    model, _ = load_model(str(checkpoint))
    test = create_dataset(SETTINGS[setting][0], 'test', imbalance_ratio=DEMO_IMBALANCE)
    n = min(cfg['n_examples'] or len(test), len(test))
    x, y = test.images[:n].float() / 255, test.labels[:n]
    work = _work_dir(cfg, setting, config, seed)
    audit = audit_kwargs(cfg, record, setting, config, seed)
    twin = find_twin(setting, config, seed, n, cfg, model, audit['train_loss'])
    if twin is not None:
        adopt_twin_stages(twin, config, work, cfg, audit, model, num_classes=test.num_classes)
    result = evaluate_points(model, x, y, eps=cfg['eps'], batch_size=512, chunk_size=n, work_dir=work,
                             min_pert_norms=['Linf'], fab_iters=cfg['fab_iters'], progress=False, echo_warnings=False,
                             **audit)
    aa = result.aa
    audited = result.audit_points['worst'] if result.audit is not None else None
    groups = record.class_groups if is_lt(setting) else None
    row = {'phase': 'confirm', 'setting': setting, 'config': config, 'seed': seed, 'n': n, 'eps': cfg['eps'],
           'clean': _class_metrics(aa['clean'], y, test.num_classes, groups),
           'autoattack': _class_metrics(aa[STANDARD_ATTACKS[-1]], y, test.num_classes, groups),
           'median_linf': perturbation_summary(result.min_perturbation['Linf']).median,
           'warnings': result.warnings, 'flags': {'clean': aa['clean'].int().tolist(),
                                                     'autoattack': aa[STANDARD_ATTACKS[-1]].int().tolist()},
           'device': str(next(model.parameters()).device), 'seconds': None}
    if audited is not None:
        row['audited'] = _class_metrics(audited, y, test.num_classes, groups)
        row['flags']['audited'] = audited.int().tolist()
        row['audit'] = to_json(result.audit)
    if twin is not None:
        row['twin_of'] = twin['config']
    row['seconds'] = time.perf_counter() - start
    return row


def surrogate_job(job: Tuple[str, str, int, Dict[str, Any]]) -> Dict[str, Any]:
    """Train (or finish) the CE run of a setting and seed whose confirmation was scored before (an audit's
    surrogate)."""
    import torch
    torch.set_num_threads(1)
    import sp_timm  # noqa: F401
    setting, config, seed, cfg = job
    start = time.perf_counter()
    last = _train(setting, config, seed, cfg)
    return {'phase': 'surrogate', 'setting': setting, 'config': config, 'seed': seed, 'checkpoint': str(last),
            'seconds': time.perf_counter() - start}


def find_twin(setting: str, config: str, seed: int, n: int, cfg: Dict[str, Any], model,
              train_loss) -> Optional[Dict[str, Any]]:
    """A finished confirmation job of the same setting, seed, points and budget whose run trained the same weights
    (SHA-256 of every tensor) and whose audit attacks the same training loss, with its evaluation stages saved here:
    e.g. CE + clip 5 where the clip never acts. Its stages are what this model's evaluation would compute again (every
    attack is seeded and the model is the same function), so ``adopt_twin_stages`` copies them. None otherwise."""
    from sp_timm.model_source import load_model
    from sp_timm.checkpoint import read_run_record, weights_sha256
    from sp_timm.eval.audit import loss_identity, training_loss_from_run
    mine, loss = None, loss_identity(train_loss)
    for path in sorted((Path(cfg['out']) / 'confirm').glob(f'{setting}-*-s{seed}.json')):
        row = json.loads(path.read_text())
        other = row.get('config')
        if (row.get('setting'), row.get('seed'), row.get('eps'), row.get('n')) != (setting, seed, cfg['eps'], n) \
                or other == config:
            continue
        last = _run_dir(cfg, setting, other, seed) / 'last'
        if not (last / 'model.safetensors').is_file() or not _work_dir(cfg, setting, other, seed).is_dir():
            continue
        mine = mine or weights_sha256(model)
        if weights_sha256(load_model(str(last))[0]) != mine:
            continue
        if loss_identity(training_loss_from_run(read_run_record(last))[0]) == loss:
            return row
    return None


def _place(work: Path, name: str, fill) -> bool:
    """Create ``work / name`` whole or not at all: ``fill(folder)`` writes into a private staging folder that is then
    renamed into place. False (and nothing changed) where it exists already, e.g. made meanwhile by another process."""
    from sp_timm.files import staging_folder
    if (work / name).exists():
        return False
    with staging_folder(work, name) as staging:
        fill(staging)
        try:
            staging.rename(work / name)
        except OSError:
            if (work / name).exists():
                return False
            raise
    return True


def adopt_twin_stages(twin: Dict[str, Any], config: str, work: Path, cfg: Dict[str, Any], audit: Dict[str, Any],
                      model, num_classes: int) -> List[str]:
    """Seed ``work`` (the evaluation folder of finalist ``config``) with the twin's saved stages: its AutoAttack
    folders (their log, so their warnings, included) and FAB folders as they are, and its audit's chunks re-filed
    under this job's audit key, keeping only the stages this audit runs (CE, the twin of CE + clip 5, drops the
    transfer attack from itself); stages the twin lacks (the transfer attack from CE, for CE's twin) still run.
    Nothing in ``work`` is overwritten. Returns the folders adopted."""
    from sp_timm.files import load_tensors, save_tensors
    from sp_timm.eval.audit import CHECK_STAGES, POINT_KEYS, audit_folder, audit_identity, audit_stages
    from sp_timm.eval.audit_attacks import AuditInputs
    source = _work_dir(cfg, twin['setting'], twin['config'], twin['seed'])
    adopted = [folder.name for folder in sorted(source.iterdir())
               if folder.is_dir() and folder.name[0] != '.' and not folder.name.startswith('audit-')
               and _place(work, folder.name, lambda staging, folder=folder: shutil.copytree(folder, staging,
                                                                                             dirs_exist_ok=True))]
    # the study's surrogate is the CE model of the seed (``audit_kwargs``): none for CE; for the twin of a CE job,
    # that job's model, i.e. this one
    twin_surrogate = None if twin['config'] == 'ce' else model if config == 'ce' else audit['surrogate']
    if twin['config'] != 'ce' and twin_surrogate is None:
        return adopted  # this job's CE surrogate did not come: the twin's audit key cannot be rebuilt
    budgets = audit['audit']
    twin_audit = audit_folder(source, 'Linf', cfg['eps'], budgets, 0,
                              audit_identity(twin_surrogate, audit['train_loss']))
    target = audit_folder(work, 'Linf', cfg['eps'], budgets, 0, audit_identity(audit['surrogate'], audit['train_loss']))
    stages, _ = audit_stages(num_classes, AuditInputs(audit['surrogate'], audit['train_loss']))
    keep = set(stages) | set(CHECK_STAGES) | set(POINT_KEYS)

    def refile(staging: Path) -> None:
        for chunk in sorted(twin_audit.glob('chunk-*.safetensors')):
            save_tensors(staging / chunk.name, {k: v for k, v in load_tensors(chunk).items() if k in keep})

    if twin_audit.is_dir() and _place(work, target.name, refile):
        adopted.append(target.name)
    return adopted


def audit_kwargs(cfg: Dict[str, Any], record, setting: str, config: str, seed: int) -> Dict[str, Any]:
    """``evaluate_points``'s audit arguments: the study's budgets (``--audit-restarts``, ``--audit-queries``), the
    model's own training loss, and as surrogate the CE model of the same setting and seed (transfer attack)."""
    from sp_timm.model_source import load_model
    from sp_timm.eval.audit import training_loss_from_run
    from sp_timm.eval.config import AuditConfig
    train_loss, note = training_loss_from_run(record)
    surrogate = None
    if config != 'ce':
        if (Path(cfg['out']) / 'confirm' / f'{setting}-ce-s{seed}.json').exists():
            ce_last = _train(setting, 'ce', seed, cfg)  # scored earlier, perhaps on another machine: (re)train it here
        else:  # the CE job of this seed is queued first: wait for it rather than train it twice at once
            ce_last = _finished_run(setting, 'ce', seed, cfg, wait=cfg.get('surrogate_wait', 900))
        if ce_last is not None:
            surrogate, _ = load_model(str(ce_last))
    return {'audit': AuditConfig(restarts=cfg['audit_restarts'], square_queries=cfg['audit_queries'],
                                 square_restarts=cfg['audit_square_restarts']),
            'train_loss': train_loss, 'loss_note': note, 'surrogate': surrogate}


# ---------------------------------------------------------------------------------------------- scheduling
def run_jobs(fn, jobs: Sequence[tuple], folder: Path, workers: int, deadline: Optional[float], desc: str) -> None:
    """Run the jobs not finished before in ``workers`` spawned processes; each result is one JSON in ``folder``.
    New jobs start only before ``deadline`` (a wall-clock time): the rest waits for the next call."""
    from tqdm import tqdm
    from sp_timm.files import atomic_write_json
    def name(j):
        return f'{j[0]}-{j[1]}-s{j[2]}.json'
    todo = [j for j in jobs if not (folder / name(j)).exists()]
    print(f'{desc}: {len(jobs)} jobs, {len(jobs) - len(todo)} done before, {len(todo)} to go on {workers} workers',
          flush=True)
    if not todo:
        return
    bar = tqdm(total=len(todo), desc=desc, dynamic_ncols=True)
    pending = list(reversed(todo))
    with futures.ProcessPoolExecutor(workers, mp_context=mp.get_context('spawn'), max_tasks_per_child=1) as pool:
        running = {}
        while pending or running:
            while pending and len(running) < workers and (deadline is None or time.time() < deadline):
                job = pending.pop()
                running[pool.submit(fn, job)] = job
            if not running:
                break
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                bar.update()
                try:
                    row = future.result()
                except Exception as err:  # one broken job must not lose the others
                    tqdm.write(f'{desc} {name(job)} FAILED: {type(err).__name__}: {err}')
                    continue
                atomic_write_json(folder / name(job), row)
                tqdm.write(f"{desc} {name(job)[:-5]}: " + _headline(row))
    bar.close()
    if pending:
        print(f'{desc}: time budget reached, {len(pending)} jobs left for the next call (rerun the same command).')


def _headline(row: Dict[str, Any]) -> str:
    if row['phase'] == 'surrogate':
        return f"trained, {row['seconds']:.0f} s"
    if row['phase'] == 'screen':
        return (f"val clean {row['clean']['acc']:.1f}, val APGD {row['robust']['acc']:.1f} "
                f"(balanced {row['robust']['balanced']:.1f}), {row['seconds']:.0f} s")
    audited = row.get('audited', {}).get('acc')
    return (f"clean {row['clean']['acc']:.1f}, AA {row['autoattack']['acc']:.1f}, audited "
            f"{'–' if audited is None else f'{audited:.1f}'}, {row['seconds']:.0f} s")


def _rows(folder: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob('*.json'))] if folder.exists() else []


# ---------------------------------------------------------------------------------------------- selection
def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def select(screen: List[Dict[str, Any]], clean_tolerance: float) -> Dict[str, Any]:
    """Per setting: the best configuration of each SP member, the chosen SP configuration and (-lt) the best SP +
    logit adjustment configuration, on validation only.
    Score: validation robust accuracy (balanced over classes for -lt), among configurations whose validation
    clean accuracy (balanced for -lt) is within ``clean_tolerance`` points of CE's; ties go to higher clean."""
    selection = {}
    for setting in SETTINGS:
        key = 'balanced' if is_lt(setting) else 'acc'
        score = {}
        for config in CONFIGS:
            runs = [r for r in screen if r['setting'] == setting and r['config'] == config]
            if runs:
                score[config] = (_mean([r['robust'][key] for r in runs]), _mean([r['clean'][key] for r in runs]),
                                 len(runs))
        if 'ce' not in score:
            continue
        floor = score['ce'][1] - clean_tolerance
        best_of = {}
        def best(candidates):
            eligible = [c for c in candidates if score[c][1] >= floor]
            pool = eligible or candidates
            return {'config': max(pool, key=lambda c: score[c][:2]), 'within_clean_tolerance': bool(eligible)}
        sp_alone = [c for c in score if c not in BASELINES + LOGIT_ADJUSTED]
        best_of = {m: best([c for c in sp_alone if member(c) == m]) for m in sorted({member(c) for c in sp_alone})}
        eligible = [v['config'] for v in best_of.values() if v['within_clean_tolerance']]
        chosen = max(eligible, key=lambda c: score[c][:2]) if eligible else None
        selection[setting] = {'metric': f'validation robust accuracy ({"balanced" if key == "balanced" else "plain"}), '
                                        f'clean within {clean_tolerance:g} points of CE',
                              'scores': {c: {'robust': s[0], 'clean': s[1], 'seeds': s[2]} for c, s in score.items()},
                              'best_of_member': best_of, 'chosen': chosen}
        adjusted = [c for c in score if c in LOGIT_ADJUSTED]
        if adjusted:
            selection[setting]['best_logit_adjusted'] = best(adjusted)
    return selection


def finalists(selection_of_setting: Dict[str, Any]) -> List[str]:
    """In priority order (a time budget finishes the first ones first): CE, the chosen SP configuration, CE + LS,
    when the chosen configuration trains with clip 5 its two controls (is the gain the loss's or the clipping's?):
    CE + clip 5 and the chosen configuration without the clipping, then CE-DRW, the balanced softmax and the best SP
    + logit adjustment (where screened), every other member's best, and CE + clip 5 otherwise."""
    chosen = selection_of_setting.get('chosen')
    others = [v['config'] for v in selection_of_setting['best_of_member'].values() if v['config'] != chosen]
    clip_control = ['ce_clip5', chosen + NO_CLIP] if chosen and _uses(CONFIGS[chosen], CLIP) else []
    screened = selection_of_setting['scores']
    adjusted = selection_of_setting.get('best_logit_adjusted')
    baselines = (['ce_ls0.1'] + clip_control + [c for c in ('ce_drw', 'ce_bs') if c in screened]
                 + ([adjusted['config']] if adjusted else []))
    return list(dict.fromkeys(['ce'] + ([chosen] if chosen else []) + baselines + others + ['ce_clip5']))


def _find(flags: Sequence[str], part: Sequence[str]) -> Optional[int]:
    """Where ``part`` first occurs in ``flags`` as a contiguous run, or None."""
    return next((i for i in range(len(flags) - len(part) + 1) if list(flags[i:i + len(part)]) == list(part)), None)


def _uses(flags: Sequence[str], part: Sequence[str]) -> bool:
    """Whether ``part`` occurs in ``flags`` as a contiguous run."""
    return _find(flags, part) is not None


# ------------------------------------------------------------------------------------------------ summary
def _fmt(pair: Tuple[Optional[float], Optional[float]], scale: float = 1.0, digits: int = 1) -> str:
    mean, half = pair
    if mean is None:
        return '–'
    return f'{mean * scale:.{digits}f}' + ('' if half is None else f' ± {half * scale:.{digits}f}')


def _device_counts(rows: Sequence[Dict[str, Any]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for r in rows:
        device = str(r.get('device', '?')).split(':')[0]
        counts[device] = counts.get(device, 0) + 1
    return counts


def summarize(out: Path, command: str, clean_tolerance: float) -> str:
    from sp_timm.eval.stats import mean_ci
    screen, confirm = _rows(out / 'screen'), _rows(out / 'confirm')
    selection = json.loads((out / 'selection.json').read_text()) if (out / 'selection.json').exists() else {}
    lines = [f'Command: `{command}`', '']
    for setting in SETTINGS:
        sel = selection.get(setting)
        rows = [r for r in screen if r['setting'] == setting]
        if not rows:
            continue
        lt = is_lt(setting)
        lines += [f'### {setting}', '',
                  f"Screening on the validation split ({rows[0]['n_val']} images, {len({r['seed'] for r in rows})} "
                  f"seed(s), {rows[0]['attack']}, Linf {rows[0]['eps'] * 255:.0f}/255)"
                  + (', balanced over classes' if lt else '') + '; runs by device: '
                  + ', '.join(f'{d} {n}' for d, n in sorted(_device_counts(rows).items())) + ':', '',
                  '| configuration | val clean % | val robust % | choice |', '|---|---|---|---|']
        for config in CONFIGS:
            s = (sel or {}).get('scores', {}).get(config)
            if s is None:
                continue
            mark = []
            if sel and sel.get('chosen') == config:
                mark.append('**chosen SP**')
            if sel and any(v['config'] == config for v in sel['best_of_member'].values()):
                mark.append(f'best {member(config)}')
            if sel and sel.get('best_logit_adjusted', {}).get('config') == config:
                mark.append('best SP + logit adjustment')
            lines.append(f"| {config} | {s['clean']:.1f} | {s['robust']:.1f} | {', '.join(mark)} |")
        done = [r for r in confirm if r['setting'] == setting]
        if done:
            n = done[0]['n']
            head = ['finalist', 'seeds', 'clean %', 'AutoAttack %', 'audited AA %', 'median FAB Linf (x/255)',
                    'unreliable']
            if lt:
                head += ['balanced clean %', 'balanced audited %'] + [f'{g} audited %'
                                                                      for g in done[0]['audited'].get('groups', {})] \
                    if 'audited' in done[0] else []
            lines += ['', f"Confirmation on all {n} test points (AutoAttack standard + audit, Linf "
                          f"{done[0]['eps'] * 255:.0f}/255; mean ± 95 % t-interval over seeds; runs by device: "
                          + ', '.join(f'{d} {k}' for d, k in sorted(_device_counts(done).items())) + '):', '',
                      '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
            for config in finalists(sel) if sel else sorted({r['config'] for r in done}):
                runs = [r for r in done if r['config'] == config]
                if not runs:
                    continue
                def get(key, sub='acc'):
                    return mean_ci([r.get(key, {}).get(sub) for r in runs])
                cells = [config, str(len(runs)), _fmt(get('clean')), _fmt(get('autoattack')), _fmt(get('audited')),
                         _fmt(mean_ci([r['median_linf'] for r in runs]), 255, 2),
                         str(sum(bool(r.get('audit', {}).get('unreliable')) for r in runs))]
                if lt and 'audited' in runs[0]:
                    cells += [_fmt(get('clean', 'balanced')), _fmt(get('audited', 'balanced'))]
                    cells += [_fmt(mean_ci([r['audited']['groups'].get(g) for r in runs]))
                              for g in runs[0]['audited'].get('groups', {})]
                lines.append('| ' + ' | '.join(cells) + ' |')
            chosen = (sel or {}).get('chosen')
            if chosen:
                for control in PAIRED_BASELINES + (chosen + NO_CLIP,):
                    lines += _paired_line(done, chosen, control)
            adjusted = (sel or {}).get('best_logit_adjusted', {}).get('config')
            if adjusted:  # SP + logit adjustment against SP alone and the long-tail baselines
                for control in ((chosen,) if chosen else ()) + ('ce_bs', 'ce_drw'):
                    lines += _paired_line(done, adjusted, control)
            lines += _twin_lines(done)
        lines.append('')
    return '\n'.join(lines) + '\n'


def _twin_lines(done: List[Dict[str, Any]]) -> List[str]:
    """Which finalists trained the same weights as another on some seeds (``find_twin``), so their evaluation reused
    the other's saved stages."""
    twins: Dict[Tuple[str, str], List[int]] = {}
    for r in done:
        if r.get('twin_of'):
            twins.setdefault((r['config'], r['twin_of']), []).append(r['seed'])
    return [line for (config, twin), seeds in twins.items() for line in (
        '', f"{config} trained the same weights as {twin} (every tensor equal) on seed(s) "
            f"{', '.join(map(str, sorted(seeds)))}: its evaluation took {twin}'s saved stages and ran only those "
            f"{twin}'s lacked.")]


def _paired_line(done: List[Dict[str, Any]], config: str, control: str) -> List[str]:
    """The paired comparison of ``config`` with ``control`` on the seeds both have: the mean difference of robust
    accuracy (audited where both rows have it) with its 95 % t-interval, and McNemar's p per seed (same points)."""
    import torch
    from sp_timm.eval.stats import mean_ci, paired_test
    pairs = [(a, b) for a in done if a['config'] == config
             for b in done if b['config'] == control and b['seed'] == a['seed']]
    if not pairs:
        return []
    key = 'audited' if all('audited' in a['flags'] and 'audited' in b['flags'] for a, b in pairs) else 'autoattack'
    diffs = [a[key]['acc'] - b[key]['acc'] for a, b in pairs]
    tests = [paired_test(torch.tensor(a['flags'][key]), torch.tensor(b['flags'][key])) for a, b in pairs]
    return ['', f"Paired, {config} vs {control} ({key} robust accuracy, same points, same seed): difference "
                f"{_fmt(mean_ci(diffs))} points over {len(pairs)} seed(s); McNemar p per seed: "
                + ', '.join(f"{t['p_value']:.2g}" for t in tests)]


def figure_rows(confirm: List[Dict[str, Any]],
                selection: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Dict[int, float]]]]:
    """The confirmation per seed for ``plots.seed_points_figure``: metric -> setting -> finalist -> seed -> value
    (robust accuracy: audited where the row has it, else AutoAttack's)."""
    metrics = {'clean %': lambda r: r['clean']['acc'],
               'audited AutoAttack %': lambda r: r.get('audited', r['autoattack'])['acc'],
               'median FAB Linf (x/255)': lambda r: None if r['median_linf'] is None else 255 * r['median_linf']}
    rows: Dict[str, Dict[str, Dict[str, Dict[int, float]]]] = {m: {} for m in metrics}
    for setting in SETTINGS:
        done = [r for r in confirm if r['setting'] == setting]
        order = finalists(selection[setting]) if setting in selection else sorted({r['config'] for r in done})
        chosen = selection.get(setting, {}).get('chosen')
        if chosen and chosen + NO_CLIP in order:  # drawn beside the configuration it controls
            order.remove(chosen + NO_CLIP)
            order.insert(order.index(chosen) + 1, chosen + NO_CLIP)
        for metric, value in metrics.items():
            groups = {c: {r['seed']: value(r) for r in done if r['config'] == c} for c in order}
            rows[metric][setting] = {c: v for c, v in groups.items() if v}
    return rows


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='output/study')
    p.add_argument('--phase', choices=PHASES, default='all')
    p.add_argument('--settings', nargs='*', default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument('--configs', nargs='*', default=list(CONFIGS), choices=list(CONFIGS), help='screened configurations')
    p.add_argument('--screen-seeds', type=int, default=1)
    p.add_argument('--seeds', type=int, default=5, help='seeds of every finalist')
    p.add_argument('--finalists', nargs='+', default=None, metavar='CONFIG',
                   help='confirm only these finalists (names or shell patterns, e.g. \'*_la\') and CE, every audit\'s '
                        'surrogate (default: every finalist, in priority order)')
    p.add_argument('--workers', type=int, default=1, help='parallel jobs (processes, one thread each)')
    p.add_argument('--time-budget', type=float, default=None, help='seconds after which no new job starts')
    p.add_argument('--epochs', type=int, default=30, help="the demo's epochs (x2.5 on digits-lt)")
    p.add_argument('--n-examples', type=int, default=0, help='test points of the confirmation (0: all, 413)')
    p.add_argument('--eps', default='2/255')
    p.add_argument('--fab-iters', type=int, default=30)
    p.add_argument('--clean-tolerance', type=float, default=2.0)
    p.add_argument('--audit-restarts', type=int, default=2, help="the audit's APGD restarts in the study")
    p.add_argument('--audit-queries', type=int, default=5000, help="the audit's Square queries in the study")
    p.add_argument('--audit-square-restarts', type=int, default=1, help="the audit's Square restarts in the study")
    args = p.parse_args()
    from sp_timm.files import atomic_write_json, atomic_write_text
    from sp_timm.threat.budget import parse_eps
    out = Path(args.out)
    cfg = {'out': str(out), 'epochs': args.epochs, 'n_examples': args.n_examples, 'eps': parse_eps(args.eps),
           'fab_iters': args.fab_iters, 'audit_restarts': args.audit_restarts, 'audit_queries': args.audit_queries,
           'audit_square_restarts': args.audit_square_restarts}
    deadline = None if args.time_budget is None else time.time() + args.time_budget
    phases = ('screen', 'select', 'confirm') if args.phase == 'all' else (args.phase,)
    if 'screen' in phases:
        jobs = [(s, c, seed, cfg) for seed in range(args.screen_seeds) for s in args.settings for c in args.configs
                if c in configs_of(s)]
        run_jobs(screen_job, jobs, out / 'screen', args.workers, deadline, 'screen')
    if 'select' in phases or 'confirm' in phases:
        selection = select(_rows(out / 'screen'), args.clean_tolerance)
        atomic_write_json(out / 'selection.json', selection)
        for setting, sel in selection.items():
            print(f"{setting}: chosen SP configuration {sel['chosen']}; finalists {', '.join(finalists(sel))}")
    if 'confirm' in phases:
        selection = json.loads((out / 'selection.json').read_text())
        order = [(s, c) for s in args.settings if s in selection for c in finalists(selection[s])]
        # CE and the chosen SP configuration first, paired seed by seed; then the other finalists, seed-major: a
        # time budget leaves the central comparison done first, with both sides of every seed
        tiers = max((len(finalists(selection[s])) for s in args.settings if s in selection), default=0)
        groups = [(0, 1)] + [(tier,) for tier in range(2, tiers)]
        # new seeds: the screening seeds' models took part in the choice (a winner's curse), so none is reused
        seeds = range(args.screen_seeds, args.screen_seeds + args.seeds)
        if args.finalists is not None:
            import fnmatch
            known = {c for _, c in order}
            unknown = sorted(f for f in args.finalists if not fnmatch.filter(known, f))
            if unknown:
                p.error(f"--finalists {' '.join(unknown)}: not a finalist of {', '.join(args.settings)}; the finalists "
                        f"are {', '.join(dict.fromkeys(c for _, c in order))}")
            order = [(s, c) for s, c in order if any(fnmatch.fnmatch(c, f) for f in args.finalists) or c == 'ce']
        jobs = [(s, c, seed, cfg) for group in groups for seed in seeds for s, c in order
                if finalists(selection[s]).index(c) in group]
        # CE models scored earlier (their runs not kept) are the audits' surrogates: train each once, side by side,
        # before jobs of the same seed would train it at once into the same folder
        todo = [j for j in jobs if not (out / 'confirm' / f'{j[0]}-{j[1]}-s{j[2]}.json').exists()]
        surrogates = [(s, 'ce', seed, cfg) for s, seed in sorted({(s, seed) for s, c, seed, _ in todo if c != 'ce'})
                      if (out / 'confirm' / f'{s}-ce-s{seed}.json').exists()]
        run_jobs(surrogate_job, surrogates, out / 'eval-work' / 'surrogates', args.workers, deadline, 'surrogates')
        run_jobs(confirm_job, jobs, out / 'confirm', args.workers, deadline, 'confirm')
    command = 'python benchmarks/robustness_study.py ' + ' '.join(sys.argv[1:])
    summary = summarize(out, command, args.clean_tolerance)
    atomic_write_text(out / 'summary.md', summary)
    confirm = _rows(out / 'confirm')
    if confirm:
        from sp_timm.eval.plots import plot_seed_points
        selection = json.loads((out / 'selection.json').read_text()) if (out / 'selection.json').exists() else {}
        plot_seed_points(out / 'summary.png', figure_rows(confirm, selection),
                         f"Confirmation on all {confirm[0]['n']} test points, Linf {confirm[0]['eps'] * 255:.0f}/255: "
                         'per seed (dots), mean and 95 % t-interval (bars); lines join one seed')
    print(summary)


if __name__ == '__main__':
    main()
