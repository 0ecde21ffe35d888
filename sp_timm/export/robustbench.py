""" ``sp-timm export --robustbench``: a RobustBench submission folder for a checkpoint and its ``sp-timm eval``
reports, with no hand edits::

    OUT/
      model_info/<dataset>/<threat_model>/<name>.json   the leaderboard entry (RobustBench's repository path)
      models/<dataset>/<threat_model>/<name>.pt         a plain state dict of RobustBench's own class for the
                                                        architecture, for robustbench.utils.load_model(name,
                                                        model_dir=OUT/models)
      model_zoo_entry.py                                that class and the entry for robustbench/model_zoo/<dataset>.py
      new_model_issue.md                                RobustBench's "New Model" issue, filled in
      autoattack-<threat_model>.log                     the evaluation's AutoAttack log (sp-timm eval's autoattack.log)
      .sp-timm-export.json                              the marker: every file written, with its SHA-256

RobustBench has classes for two of sp-timm's architectures: ``WideResNet`` (``wrn*_cifar``) and ``PreActResNet``
with ``PreActBlockV2`` blocks and a final BN (``preact_resnet18_cifar``). sp-timm's models normalise their input
inside; the class of the entry does too, with the model's mean and std as buffers ``mu`` / ``sigma`` (RobustBench's
own convention, e.g. ``Rice2020OverfittingNet``), so the state dict loads strictly and gives the same logits.
"""
import dataclasses
import io
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..checkpoint import weights_sha256
from ..eval.config import FULL_TEST_SPLIT
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_text, public_text, safe_path_component
from ..model_source import load_model
from ..records import EvalReport, LeaderboardEntry, percent_value, to_json
from ..version import __version__
from .card import check_license
from .folder import check_replaceable, export_destination, export_folder
from .hub import check_one_report_per_threat_model, read_report

__all__ = ['export_robustbench', 'Submission', 'is_preview', 'issue_text', 'robustbench_architecture',
           'robustbench_state_dict', 'submission_name',
           'zoo_entry_source', 'ROBUSTBENCH_DATASETS', 'ZOO_ENTRY_FILE', 'ISSUE_FILE', 'RobustBenchArchitecture']

ROBUSTBENCH_DATASETS = ('cifar10', 'cifar100')  # RobustBench's leaderboards among the datasets sp-timm evaluates
ZOO_ENTRY_FILE = 'model_zoo_entry.py'
ISSUE_FILE = 'new_model_issue.md'
AUTOATTACK_LOG = 'autoattack.log'  # what sp-timm eval writes beside report.json (sp_timm.eval.runner.AUTOATTACK_LOG)
ISSUE_TEMPLATE = Path(__file__).resolve().parents[1] / 'templates' / 'new_model_issue.md'


class RobustBenchArchitecture:
    """RobustBench's class for an sp-timm model: its import, constructor arguments and name in a submission."""

    def __init__(self, class_name: str, module: str, imports: str, init_args: str, super_args: str, short_name: str,
                 architecture: str):
        self.class_name, self.module, self.imports = class_name, module, imports
        self.init_args, self.super_args = init_args, super_args
        self.short_name, self.architecture = short_name, architecture


def robustbench_architecture(model: torch.nn.Module, model_name: Optional[str] = None) -> RobustBenchArchitecture:
    """RobustBench's class for ``model`` (an sp-timm ``WideResNet`` or ``PreActResNet``), or a ``ValueError``
    saying that RobustBench has none for it."""
    from ..models.preact_resnet import PreActResNet
    from ..models.wide_resnet import WideResNet
    name = model_name or type(model).__name__
    if isinstance(model, (WideResNet, PreActResNet)) and (model.in_chans != 3 or not model.num_classes):
        raise ValueError(f"'{name}' has {model.in_chans} input channels and {model.num_classes} classes; RobustBench's "
                         f"classes take 3-channel images and have a classifier.")
    k = model.num_classes if isinstance(model, (WideResNet, PreActResNet)) else 0
    if isinstance(model, WideResNet):
        blocks = len(model.stages[0])
        depth, widen = 6 * blocks + 4, model.stages[0][0].conv1.out_channels // 16
        return RobustBenchArchitecture(
            'WideResNet', 'robustbench.model_zoo.architectures.wide_resnet',
            'from robustbench.model_zoo.architectures.wide_resnet import WideResNet',
            f'depth={depth}, widen_factor={widen}, num_classes={k}',
            'depth=depth, widen_factor=widen_factor, num_classes=num_classes, sub_block1=False',
            f'WRN-{depth}-{widen}', f'WideResNet-{depth}-{widen}')
    if isinstance(model, PreActResNet):
        layers = [len(stage) for stage in model.stages]
        depth = 2 * sum(layers) + 2
        return RobustBenchArchitecture(
            'PreActResNet', 'robustbench.model_zoo.architectures.resnet',
            'from robustbench.model_zoo.architectures.resnet import PreActBlockV2, PreActResNet',
            f'num_classes={k}', f'PreActBlockV2, {layers}, num_classes=num_classes, bn_before_fc=True',
            f'PreActResNet-{depth}', f'PreActResNet-{depth}')
    raise ValueError(f"RobustBench has no model class for '{name}': its model zoo builds WideResNet and PreActResNet "
                     f"(sp-timm's wrn*_cifar and preact_resnet18_cifar), so --robustbench cannot write a checkpoint "
                     f"it loads. Train one of those, or submit the leaderboard JSON alone (sp-timm export without "
                     f"--robustbench writes it) with a link to your code.")


def _mapped_key(key: str, arch: RobustBenchArchitecture) -> str:
    """sp-timm's state-dict key -> RobustBench's for the same tensor."""
    fixed = {'normalize.mean': 'mu', 'normalize.std': 'sigma', 'conv_stem.weight': 'conv1.weight'}
    if key in fixed:
        return fixed[key]
    wrn = arch.class_name == 'WideResNet'
    match = re.fullmatch(r'stages\.(\d+)\.(\d+)\.(.+)', key)
    if match:
        stage, block, rest = int(match[1]), match[2], match[3]
        if rest == 'shortcut.weight':
            rest = 'convShortcut.weight' if wrn else 'shortcut.0.weight'
        return f'block{stage + 1}.layer.{block}.{rest}' if wrn else f'layer{stage + 1}.{block}.{rest}'
    match = re.fullmatch(r'final_norm\.0\.(.+)', key)
    if match:
        return f"{'bn1' if wrn else 'bn'}.{match[1]}"
    match = re.fullmatch(r'fc\.(weight|bias)', key)
    if match:
        return f"{'fc' if wrn else 'linear'}.{match[1]}"
    raise ValueError(f"no RobustBench {arch.class_name} key for sp-timm's '{key}'")


def robustbench_state_dict(model: torch.nn.Module,
                           model_name: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """``model``'s weights as a plain state dict of RobustBench's class (``robustbench_architecture``), on CPU,
    with the input normalisation as ``mu`` / ``sigma``."""
    arch = robustbench_architecture(model, model_name)
    return OrderedDict((_mapped_key(k, arch), v.detach().cpu().clone()) for k, v in model.state_dict().items())


def _float32_list(values: torch.Tensor) -> str:
    import numpy as np
    return '[' + ', '.join(str(np.float32(v)) for v in values.flatten().tolist()) + ']'


def zoo_entry_source(name: str, model: torch.nn.Module, threat_models: Sequence[str], dataset: str,
                     version: str) -> str:
    """``model_zoo_entry.py``: RobustBench's class for ``name`` (its architecture, normalising inside) and its
    entry for each threat model, as in ``robustbench/model_zoo/<dataset>.py``."""
    arch = robustbench_architecture(model, name)
    cls = re.sub(r'\W', '', name)
    cls = (cls if cls[:1].isalpha() else f'Model{cls}') + 'Net'
    entries = '\n'.join(
        f"# in the `{tm.lower()}` OrderedDict of robustbench/model_zoo/{dataset}.py:\n"
        f"{tm.upper()}_ENTRY = ('{name}', {{\n    'model': {cls},\n"
        f"    'gdrive_id': 'TO FILL IN: the Google Drive id of models/{dataset}/{tm}/{name}.pt',\n}})\n"
        for tm in threat_models)
    return f'''""" RobustBench model-zoo entry of {name}, written by sp-timm {version} export --robustbench.

Add the class to robustbench/model_zoo/{dataset}.py (it imports {arch.class_name} already) and each entry to the
OrderedDict of its threat model, with the Google Drive id of the uploaded .pt. Check it loads as RobustBench will:
    robustbench.utils.load_model('{name}', model_dir='models', dataset='{dataset}', threat_model=...)
"""
import torch
{arch.imports}


class {cls}({arch.class_name}):
    """{arch.architecture} trained with sp-timm: inputs in [0, 1], normalised inside with the training data's mean
    and std (buffers mu and sigma, saved in the state dict)."""

    def __init__(self, {arch.init_args}):
        super().__init__({arch.super_args})
        self.register_buffer('mu', torch.tensor({_float32_list(model.normalize.mean)}).view(1, 3, 1, 1))
        self.register_buffer('sigma', torch.tensor({_float32_list(model.normalize.std)}).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mu) / self.sigma
        return super().forward(x)


{entries}'''


def _surname(authors: str) -> str:
    first = re.split(r',|;|\band\b|&', authors.strip())[0].strip()
    words = [w for w in re.findall(r"[^\W\d_]+", first)]
    return words[-1][:1].upper() + words[-1][1:] if words else ''


def submission_name(authors: Optional[str], year: Optional[int], title: Optional[str], short_arch: str,
                    title_word: Optional[str] = None) -> str:
    """RobustBench's ``<Author><Year><Word>_<Arch>``: the first author's surname, the year, the first word of the
    paper's title (``title_word`` when given) and the architecture, e.g. ``Gao2023Stationary_WRN-28-10``. A
    ``ValueError`` names what is missing."""
    from ..eval.report import PLACEHOLDER_PREFIX
    def given(v):
        return v if v and not str(v).startswith(PLACEHOLDER_PREFIX) else None
    author = _surname(given(authors) or '')
    words = re.findall(r'[^\W\d_]+', given(title_word) or given(title) or '')
    word = words[0][:1].upper() + words[0][1:] if words else ''
    missing = [what for what, value in (("the first author's surname (--authors)", author), ('the year (--year)', year),
                                        ("a word of the paper's title (--title-word)", word)) if not value]
    if missing:
        raise ValueError(f"--robustbench names the model <Author><Year><Word>_<Arch> as RobustBench does; missing: "
                         f"{'; '.join(missing)}. Give them, or the whole name with --model-name.")
    return f'{author}{int(year)}{word}_{short_arch}'


def _year_of(venue: Optional[str]) -> Optional[int]:
    found = re.findall(r'\b(?:19|20)\d\d\b', venue or '')
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class Submission:
    """What a RobustBench submission says that no evaluation measured (``sp-timm export --robustbench``'s flags).

    The paper (``paper_title``, ``link``, ``authors``, ``venue``) is the one that proposes *this* model, the
    submitter's: given here or to ``sp-timm eval``; a placeholder left in the entry is an error. ``reported``: the
    robust accuracy the paper reports, ``ACC`` for one evaluation or ``THREAT=ACC`` each (every leaderboard entry
    carries it). ``preview``: accept evaluations of fewer points than the whole test split, said in the entry's
    footnote and the issue. ``model_zoo``: False for a private submission (the leaderboard only). ``hub_repo``: the
    model's Hub export (``sp-timm export --push --repo-id``), the checkpoint the issue points to; ``checkpoint_url``:
    where the RobustBench ``.pt`` is downloadable."""
    model_name: Optional[str] = None
    paper_title: Optional[str] = None
    link: Optional[str] = None
    authors: Optional[str] = None
    venue: Optional[str] = None
    year: Optional[int] = None
    title_word: Optional[str] = None
    reported: Tuple[str, ...] = ()
    preview: bool = False
    model_zoo: bool = True
    hub_repo: Optional[str] = None
    checkpoint_url: Optional[str] = None
    code_url: Optional[str] = None
    license: str = 'mit'
    weights: str = 'auto'

    def reported_for(self, threat_models: Sequence[str], from_eval: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """``reported`` per threat model, checked: a number in [0, 100] for each evaluation (given here, else the one
        given to ``sp-timm eval --reported``, ``from_eval``), or a ``ValueError`` naming the flag."""
        values: Dict[str, str] = {t: f'{float(v):.2f}' for t, v in (from_eval or {}).items() if v}
        for item in self.reported:
            threat, _, number = item.rpartition('=')
            if not threat and len(threat_models) > 1:
                raise ValueError(f"--reported {item!r}: with {len(threat_models)} evaluations give one per threat "
                                 f"model, e.g. --reported Linf=53.4 --reported L2=71.2.")
            threat, value = threat or threat_models[0], percent_value(number)
            if threat not in threat_models or not 0 <= value <= 100:
                raise ValueError(f"--reported {item!r}: expected the paper's robust accuracy in percent (0-100) for "
                                 f"one of {', '.join(threat_models)}.")
            values[threat] = f'{value:.2f}'
        missing = [t for t in threat_models if t not in values]
        if missing:
            raise ValueError(f"the robust accuracy the paper reports is missing for {', '.join(missing)}: every "
                             f"RobustBench entry carries it in 'reported'. Give --reported ACC (or THREAT=ACC per "
                             f"evaluation). Nothing was written.")
        return values


def is_preview(report: EvalReport) -> bool:
    """Whether ``report`` evaluated fewer points than the whole test split (reports of an older sp-timm, which did
    not record it, by their number of points)."""
    full = report.protocol.full_test_split
    return not full if full is not None else report.n_points < FULL_TEST_SPLIT


def _evaluation_method(report: EvalReport, version: str) -> str:
    p = report.protocol
    which = 'the first' if is_preview(report) else 'the whole'
    method = (f"AutoAttack, standard version ({', '.join(a.upper() for a in p.attacks)}), seed {p.seed}, batch size "
              f"{p.batch_size}, run by sp-timm {version} eval on {which} {p.n_examples} {p.dataset} test images"
              f"{' (a local copy of the test split)' if p.local_data else ''}; "
              f"the AutoAttack log is attached (autoattack-{p.threat_model}.log). AutoAttack's code: pyautoattack "
              f"{p.pyautoattack_version} (the AutoAttack authors' package), while RobustBench's benchmark() uses "
              f"AutoAttack from the git commit its setup.py pins; sp-timm's test suite runs RobustBench's own "
              f"benchmark() through pyautoattack and checks it gives the clean and robust accuracy of sp-timm eval")
    if is_preview(report):
        method += (f". PREVIEW: {p.n_examples} points, not the {FULL_TEST_SPLIT:,} of RobustBench's leaderboard; "
                   f"re-run sp-timm eval on the whole test split before submitting")
    if report.warnings:
        method += '. AutoAttack warned: ' + '; '.join(report.warnings)
    audit = report.audit
    if audit is not None:
        verdict = ('flagged unreliable: ' + '; '.join(audit.reasons)) if audit.unreliable else 'no sign of masking'
        method += f'. An adaptive-attack audit (sp-timm eval --audit) gives {audit.robust_acc:.2f}% ({verdict})'
    return method


def issue_text(name: str, reports: Sequence[EvalReport], entries: Sequence[LeaderboardEntry],
               arch: RobustBenchArchitecture, submission: Submission, version: str) -> str:
    """RobustBench's "New Model" issue (its template's sections and fields, plus a Dataset line per model), rendered
    from ``templates/new_model_issue.md``."""
    import jinja2
    first = entries[0]
    state_dict = f"; RobustBench's state dict {submission.checkpoint_url}" if submission.checkpoint_url else ''
    if submission.hub_repo:
        checkpoint = (f"the model's Hub export hf-hub:{submission.hub_repo} (timm's format: pip install sp-timm, "
                      f"import sp_timm, timm.create_model('hf-hub:{submission.hub_repo}', pretrained=True))"
                      + state_dict)
    elif submission.checkpoint_url:
        checkpoint = f'checkpoint {submission.checkpoint_url}'
    else:
        checkpoint = ('checkpoint TO FILL IN: the Hub export (sp-timm export --push --repo-id, then --hub-repo) or '
                      'the URL of the .pt (--checkpoint-url)')
    models = [dict(architecture=e.architecture, dataset=e.dataset, threat_model=r.protocol.threat_model, eps=e.eps,
                   clean_acc=e.clean_acc, robust_acc=e.autoattack_acc, reported=e.reported,
                   additional_data=str(bool(e.additional_data)).lower(), method=_evaluation_method(r, version))
              for r, e in zip(reports, entries)]
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        ISSUE_TEMPLATE.read_text(encoding='utf-8'))
    return template.render(
        name=name, paper=dict(name=first.name, link=first.link, authors=first.authors), models=models,
        checkpoint=checkpoint, code=submission.code_url or 'TO FILL IN: the URL of the training code (--code-url)',
        model_zoo=submission.model_zoo, arch_included=True,
        arch_note=f'({arch.class_name} of {arch.module}; the class and entry are in {ZOO_ENTRY_FILE})',
        mit=submission.license.lower() == 'mit', license=submission.license)


def export_robustbench(source: str, out: os.PathLike, reports: Sequence[os.PathLike],
                       submission: Submission = Submission()) -> Path:
    """Write the RobustBench submission folder of ``source`` (see the module docstring) from its ``sp-timm eval``
    reports (``report.json``, with ``autoattack.log`` beside it) and what ``submission`` says. Everything is checked
    before anything is written: each report is the standard protocol on the whole test split of a RobustBench
    dataset (or ``submission.preview``), the paper's fields and ``reported`` are given. The folder is built beside
    ``out`` and renamed into place when complete (an existing ``out`` is replaced only if it is an earlier export)."""
    from ..eval.report import PLACEHOLDER_PREFIX, SP_PAPER
    check_license(submission.license)
    if not reports:
        raise ValueError('--robustbench needs the evaluation to submit: give --eval OUT/report.json of sp-timm eval '
                         '(one per threat model).')
    out = export_destination(out)
    check_replaceable(out)
    model, info = load_model(source, weights=submission.weights)
    arch = robustbench_architecture(model, info.architecture)
    digest = weights_sha256(model)
    loaded = [read_report(path, digest, source) for path in reports]
    check_one_report_per_threat_model(reports, loaded)
    for path, report in zip(reports, loaded):
        _check_submittable(path, report, submission.preview)
    reported = submission.reported_for([r.protocol.threat_model for r in loaded],
                                       {r.protocol.threat_model: r.leaderboard.reported for r in loaded})
    paper = {k: v for k, v in (('name', submission.paper_title), ('link', submission.link),
                               ('authors', submission.authors), ('venue', submission.venue)) if v}
    logs, entries = [], []
    for path, report in zip(reports, loaded):
        log = Path(path).parent / AUTOATTACK_LOG
        if not log.is_file():
            raise ValueError(f"no {AUTOATTACK_LOG} beside '{path}': submitters attach AutoAttack's log. Re-run the "
                             f"same sp-timm eval command (it reuses its saved results and writes the log).")
        logs.append(public_text(log.read_text(encoding='utf-8')))  # its header names the model's and data's paths
        entry = dataclasses.replace(report.leaderboard, dataset=report.protocol.dataset,
                                    reported=reported[report.protocol.threat_model], **paper)
        if is_preview(report) and 'Preview' not in (entry.footnote or ''):
            entry = dataclasses.replace(entry, footnote='. '.join(filter(None, [entry.footnote, (
                f'Preview: the first {report.n_points} test images, not the whole test split')])))
        entries.append(entry)
    if not submission.paper_title and any((e.name, e.link) == (SP_PAPER['name'], SP_PAPER['link']) for e in entries):
        raise ValueError("the leaderboard entry names the SP-losses paper as this model's paper (an older sp-timm eval "
                         "filled it in): a RobustBench row names the paper that proposes this model. Give "
                         "--paper-title, --link, --authors and --venue (the same title if it is that paper's own "
                         "model). Nothing was written.")
    unfilled = sorted({k for e in entries for k, v in to_json(e).items()
                       if isinstance(v, str) and v.startswith(PLACEHOLDER_PREFIX)})
    if unfilled:
        flags = {'name': '--paper-title', 'link': '--link', 'authors': '--authors', 'venue': '--venue',
                 'architecture': "sp-timm eval's --architecture"}
        raise ValueError(f"the leaderboard entry still says 'TO FILL IN' for {', '.join(unfilled)}: a RobustBench row "
                         f"names the paper that proposes this model; give "
                         f"{', '.join(flags.get(k, k) for k in unfilled)}. Nothing was written.")
    name = submission.model_name or submission_name(entries[0].authors, submission.year or _year_of(entries[0].venue),
                                                    entries[0].name, arch.short_name, submission.title_word)
    safe_path_component(name, '--model-name')
    # it goes into model_zoo_entry.py's string literals and class name (a letter, then an identifier's characters)
    if not name[:1].isalpha() or not re.sub(r'[.\-]', '', name).isidentifier():
        raise ValueError(f"--model-name {name!r}: a RobustBench name holds letters, digits, '_', '-' and '.' only "
                         f"(no quotes or spaces), e.g. 'Gao2023Stationary_WRN-28-10'. Nothing was written.")
    state = io.BytesIO()
    torch.save(robustbench_state_dict(model, info.architecture), state)
    with export_folder(out, f'sp-timm {__version__} export --robustbench', digest) as tmp:
        threat_models = []
        for report, entry, log in zip(loaded, entries, logs):
            tm, dataset = report.protocol.threat_model, entry.dataset
            threat_models.append(tm)
            atomic_write_json(tmp / 'model_info' / dataset / tm / f'{name}.json', to_json(entry))
            atomic_write_bytes(tmp / 'models' / dataset / tm / f'{name}.pt', state.getvalue())
            atomic_write_text(tmp / f'autoattack-{tm}.log', log)
        atomic_write_text(tmp / ZOO_ENTRY_FILE, zoo_entry_source(name, model, threat_models, entries[0].dataset,
                                                                 __version__))
        atomic_write_text(tmp / ISSUE_FILE, issue_text(name, loaded, entries, arch, submission, __version__))
    return out


def _check_submittable(path: os.PathLike, report: EvalReport, preview: bool) -> None:
    """A ``ValueError`` unless ``report`` can go to a RobustBench leaderboard: its dataset has one, the entry exists
    (the standard protocol, unadapted), the points are the whole test split unless ``preview``."""
    dataset = report.protocol.dataset
    if dataset.endswith('-lt'):
        raise ValueError(f"'{path}' evaluated on {dataset}: RobustBench has no long-tail leaderboard. sp-timm eval "
                         f"wrote the long-tail entry (RobustBench's format plus imbalance, balanced and per-group "
                         f"accuracies) to longtail_info/ beside the report; collect those to compare long-tail "
                         f"results.")
    if dataset not in ROBUSTBENCH_DATASETS:
        raise ValueError(f"'{path}' evaluated on {dataset}; RobustBench's leaderboards are "
                         f"{', '.join(ROBUSTBENCH_DATASETS)} (and ImageNet): evaluate on its test set, e.g. sp-timm "
                         f"eval --dataset cifar10.")
    if report.leaderboard is None:
        raise ValueError(f"'{path}' has {report.leaderboard_note or 'no leaderboard entry'} (sp-timm eval decides when "
                         f"it writes one).")
    if is_preview(report) and not preview:
        raise ValueError(f"'{path}' evaluated {report.n_points} {dataset} test images, not the whole test split "
                         f"({FULL_TEST_SPLIT:,}): a leaderboard entry is measured on all of them. Re-run sp-timm eval "
                         f"without --n-examples (it reuses its saved chunks), or give --preview for a submission "
                         f"marked as a preview. Nothing was written.")
