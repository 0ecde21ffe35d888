""" AutoAttack (pyautoattack, ``version='standard'``) and FAB minimal perturbations over a fixed set of points,
split into chunks that processes share and that are saved as they finish, so an evaluation resumes after a kill.

Why sp-timm drives the standard attacks one call at a time: pyautoattack 0.2.0's own resume (``state_path``)
cannot restore -- ``EvaluationState`` saves its attack set as the set's repr, so ``from_disk`` never matches it
again, and the restored branch of ``run_standard_evaluation`` leaves ``y_adv`` undefined. ``autoattack_chunk``
therefore runs the standard attacks (same ``AutoAttack`` object, parameters, order and seed) one
``run_standard_evaluation`` call each, on the points still robust, which is exactly the loop
``run_standard_evaluation`` runs itself (tested equal). It gives per-point flags after every stage and a resume
point after every stage. Seeds are reset by each attack, so a chunk's result depends only on its points, never
on which process ran it or whether it was interrupted.
"""
import logging
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import torch
from tqdm.auto import tqdm

from ..files import Tensors, load_tensors, save_tensors
from ..threat.pgd import perturbation_norm
from .config import ROBUST, STANDARD_ATTACKS, WHITE_BOX, AutoAttackPlan, autoattack_plan

__all__ = ['STANDARD_ATTACKS', 'AUTOATTACK_LOGGER', 'ROBUST', 'WHITE_BOX', 'Chunks', 'capture_autoattack_warnings',
           'autoattack_chunk', 'adversarial_path', 'load_adversarial_images', 'ADVERSARIAL_SUFFIX', 'fab_chunk',
           'run_chunks', 'predict', 'StageReport', 'stage_reporter']

StageReport = Callable[[str, int, int, float], None]  # (stage, points left robust, points, seconds)


def stage_reporter(label: str, enabled: bool = True) -> Optional[StageReport]:
    """A callback that prints one line per finished stage of a chunk (``label``: which run and chunk), on the
    console beside the chunk bars: long chunks are never silent. None when ``enabled`` is False."""
    if not enabled:
        return None

    def report(stage: str, robust: int, n: int, seconds: float) -> None:
        tqdm.write(f'{label}: {stage.upper()} done in {seconds:.0f} s, {robust}/{n} points left robust')
    return report

AUTOATTACK_LOGGER = 'auto-attack'
ADVERSARIAL_SUFFIX = '.adv.safetensors'  # beside a chunk: the adversarial images of the points AutoAttack broke


def adversarial_path(path: Optional[Path]) -> Optional[Path]:
    """Where ``autoattack_chunk`` keeps the adversarial images of the chunk saved at ``path``."""
    return None if path is None else Path(path).with_name(Path(path).stem + ADVERSARIAL_SUFFIX)


def load_adversarial_images(paths: List[Optional[Path]], starts: List[int]) -> Tensors:
    """The adversarial images AutoAttack found, over the chunks saved at ``paths`` (chunk ``i`` starting at point
    ``starts[i]``): ``images``, their point ``index`` and ``kept`` (False where a chunk's earlier stages ran before
    sp-timm kept images, so some of its broken points have none)."""
    images, index, kept = [], [], True
    for path, start in zip(paths, starts):
        saved = load_tensors(adversarial_path(path))
        if 'index' not in saved:
            kept = False
            continue
        images.append(saved['images'])
        index.append(saved['index'] + start)
        kept = kept and bool(saved['kept'].all())
    return {'images': torch.cat(images) if images else torch.zeros(0), 'index': torch.cat(index).long() if index
            else torch.zeros(0, dtype=torch.long), 'kept': torch.tensor([kept])}


@dataclass(frozen=True)
class Chunks:
    """``n`` points cut into consecutive chunks of ``size``: the unit of sharding and of resuming."""
    n: int
    size: int

    def __len__(self) -> int:
        return math.ceil(self.n / self.size)

    def slice(self, index: int) -> slice:
        return slice(index * self.size, min(self.n, (index + 1) * self.size))


class _WarningLog(logging.Handler):
    def __init__(self, echo: bool):
        super().__init__(logging.WARNING)
        self.echo, self.messages = echo, []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.echo:
            tqdm.write(f'AutoAttack warning: {message}', file=sys.stderr)


@contextmanager
def capture_autoattack_warnings(echo: bool = True) -> Iterator[List[str]]:
    """Collect the warnings AutoAttack's checks log (zero gradients, randomness, Square beating the white-box
    attacks, probabilities instead of logits, ...) and, with ``echo``, print them as they come: never silenced."""
    logger = logging.getLogger(AUTOATTACK_LOGGER)
    handler = _WarningLog(echo)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def autoattack_chunk(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, norm: str,
                     seed: int, batch_size: int, device, path: Optional[Path] = None,
                     on_stage: Optional[Callable[[str], None]] = None,
                     plan: Optional[AutoAttackPlan] = None, report: Optional[StageReport] = None) -> Tensors:
    """AutoAttack's stages of ``plan`` (default: the standard version adapted to the model's class count) on one
    chunk. Returns ``clean`` and one flag tensor per attack (True: the point is still classified correctly after that
    stage), ``robust`` (after the last stage) and ``white-box`` (after the last stage before Square), ``pred`` (the
    class of the adversarial example, or the clean prediction) and ``perturbation`` (the norm of the adversarial
    perturbation; 0 where none was found). With ``path``, the result is saved after every stage and a partial result
    there is continued, and the adversarial images of the points broken are kept beside it (``adversarial_path``:
    ``images``, ``index`` within the chunk). ``report`` hears of every stage that ran (``stage_reporter``)."""
    import time
    from pyautoattack import AutoAttack
    if plan is None:
        with torch.no_grad():
            plan = autoattack_plan(model(images[:1].to(device)).shape[1])
    result, kept = load_tensors(path), load_tensors(adversarial_path(path))
    if 'clean' not in result or len(result['clean']) != len(labels):  # none saved, or saved for other points
        pred = predict(model, images, batch_size, device)
        result = {'clean': pred == labels, 'pred': pred, 'perturbation': torch.zeros(len(labels))}
        kept = {}
        save_tensors(path, result)
    if 'index' not in kept:  # stages saved before sp-timm kept images: their broken points have none
        kept = {'images': images[:0].float().cpu(), 'index': torch.zeros(0, dtype=torch.long),
                'kept': torch.tensor([not any(attack in result for attack in plan.attacks)])}
    adversary = AutoAttack(model, norm=norm, eps=eps, seed=seed, device=device, version=plan.version)
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = plan.n_target_classes
    robust = result['clean'].clone()
    for attack in plan.attacks:
        if attack in result:  # done before an interruption
            robust = result[attack].clone()
            continue
        index = robust.nonzero().flatten()
        start = time.perf_counter()
        if len(index):
            adversary.attacks_to_run = [attack]
            adv_images, adv_pred = adversary.run_standard_evaluation(images[index], labels[index],
                                                                     batch_size=batch_size)
            fooled = adv_pred.cpu() != labels[index]
            hit = index[fooled]
            robust[hit] = False
            result['pred'][hit] = adv_pred.cpu()[fooled]
            result['perturbation'][hit] = perturbation_norm(adv_images.cpu()[fooled] - images[hit], norm)
            again = torch.isin(kept['index'], hit)  # a stage run again after an interruption: its images replace
            kept = dict(kept, images=torch.cat([kept['images'][~again], adv_images.detach().cpu().float()[fooled]]),
                        index=torch.cat([kept['index'][~again], hit]))
        result[attack] = robust.clone()
        save_tensors(adversarial_path(path), kept)  # before the stage's flags: a kill between leaves no gap
        save_tensors(path, result)
        if on_stage is not None:
            on_stage(attack)
        if report is not None:
            report(attack, int(robust.sum()), len(labels), time.perf_counter() - start)
    result[WHITE_BOX] = result[plan.white_box[-1]].clone()
    result[ROBUST] = robust.clone()
    return result


def fab_chunk(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, norm: str, seed: int,
              batch_size: int, device, n_iter: int = 100, path: Optional[Path] = None) -> Tensors:
    """Minimal adversarial perturbation of each point with untargeted FAB (pyautoattack's ``FABAttack_PT``,
    ``n_iter`` steps, no budget). ``distance``: the ``norm`` of the smallest perturbation found that changes the
    class; 0 for points misclassified already, ``inf`` where FAB found none. FAB's result is an upper bound on the
    true minimal perturbation."""
    from pyautoattack.fab_pt import FABAttack_PT
    done = load_tensors(path)
    if 'distance' in done and len(done['distance']) == len(labels):  # saved for these points (not a shorter chunk)
        return done
    fab = FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=n_iter, eps=float('inf'), seed=seed, targeted=False,
                       device=device, verbose=False)
    distances = []
    for start in range(0, len(labels), batch_size):
        x, y = images[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        adv = fab.perturb(x, y)
        with torch.no_grad():
            clean_ok, adv_ok = model(x).argmax(1) == y, model(adv).argmax(1) == y
        distance = perturbation_norm(adv - x, norm)
        distance[~clean_ok] = 0.0
        distance[clean_ok & adv_ok] = float('inf')
        distances.append(distance.cpu())
    result = {'distance': torch.cat(distances)}
    save_tensors(path, result)
    return result


def run_chunks(chunks: Chunks, compute: Callable[[int, slice], Tensors], desc: str, progress: bool = True) -> Tensors:
    """Compute every chunk -- process ``r`` of ``W`` takes chunks ``r, r + W, ...`` -- and return the per-point
    results of all chunks, in point order, on every process (gathered through Accelerate)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    state = PartialState()
    mine = range(state.process_index, len(chunks), state.num_processes)
    local = {index: compute(index, chunks.slice(index))
             for index in tqdm(mine, desc=desc, disable=not (progress and state.is_main_process), leave=False,
                               dynamic_ncols=True)}
    merged = {}
    for part in gather_object([local]):
        merged.update(part)
    missing = sorted(set(range(len(chunks))) - set(merged))
    if missing:
        raise RuntimeError(f'chunks {missing} were computed by no process.')
    return {key: torch.cat([merged[i][key] for i in range(len(chunks))]) for key in merged[0]}
