""" AutoAttack's own log: every message of its logger (pyautoattack logs its progress at DEBUG) captured per chunk
and saved beside the chunk's results after every stage, so a resumed evaluation keeps the log of the stages it
restored and reports their warnings again; and ``autoattack.log``, the file RobustBench submitters attach: what was
evaluated and how, AutoAttack's log of every chunk, then the numbers of the report. """
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..files import atomic_write_text
from ..records import EvalReport
from .attacks import AUTOATTACK_LOGGER

__all__ = ['AUTOATTACK_LOG', 'logged_chunk', 'autoattack_log_text']

AUTOATTACK_LOG = 'autoattack.log'


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


_LOG_MARKS = ('== ', '-- resumed: ', '(every stage restored')  # lines logged_chunk writes between records


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


def logged_chunk(compute: Callable, log_path: Optional[Path], title: str) -> Tuple[Dict[str, torch.Tensor], str]:
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


def autoattack_log_text(report: EvalReport, chunk_logs: Sequence[str]) -> str:
    """``autoattack.log``: what was evaluated and how, AutoAttack's own log of every chunk (``evaluate_points``'s
    ``log``), then the numbers of the report."""
    from ..formatting import format_ci
    from ..version import __version__
    p, model = report.protocol, report.model
    head = [f"sp-timm {__version__} eval of {model.source or report.model_name} (weights SHA-256 "
            f"{model.weights_sha256})",
            f"{p.dataset} {p.split} split, the first {p.n_examples} images ({p.data_source}); "
            f"AutoAttack version={p.version} ({', '.join(p.attacks)}), pyautoattack "
            f"{p.pyautoattack_version}, {p.threat_model} eps {p.eps}, seed {p.seed}, batch size "
            f"{p.batch_size}, chunks of {p.chunk_size} points, {p.num_processes} process(es) on {p.device}",
            'Each chunk runs the standard attacks one run_standard_evaluation call each, on the points still robust '
            '(the loop run_standard_evaluation runs itself): the accuracies AutoAttack logs are of those points.', '']
    tail = ['== result ==', f"clean accuracy: {report.clean_acc:.2f}% {format_ci(report.clean_ci)}",
            *[f"robust accuracy after {s.stage.upper()}: {s.acc:.2f}%" for s in report.stages[1:]],
            f"robust accuracy: {report.robust_acc:.2f}% {format_ci(report.robust_ci)} (n={p.n_examples}, 95% CI)"]
    tail += [f'AutoAttack warning: {w}' for w in report.warnings]
    return '\n'.join(head) + '\n' + ''.join(text if text.endswith('\n') else text + '\n' for text in chunk_logs) \
        + '\n'.join(tail) + '\n'

