""" Where a run writes and what a resume may change: the run folder checked before anything is written, the flags
a resume keeps (or records under ``args_history`` with ``--resume-override``), and what a Ctrl-C kept. """
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..checkpoint import read_run_record, resolve_checkpoint
from ..errors import CheckpointError
from ..files import check_output_folder
from ..records import CLASS_WEIGHT_REDUCTION, FlagChange, RunRecord, TrainConfig
from .metrics import METRICS_FILE

__all__ = ['RESUME_FREE_ARGS', 'SCHEDULE_ARGS', 'RECORD_KEYS', 'changed_args', 'args_history', 'prepare_output',
           'run_folder', 'run_files', 'default_output', 'resume_hint']

RECORD_KEYS = ('model', 'dataset', 'loss', 'num_classes')


def default_output(config: TrainConfig) -> Path:
    """``output/train/<time>-<model>-<loss>``, the run folder when ``--output`` is not given."""
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    return Path('output') / 'train' / f"{stamp}-{config.model.replace('/', '_').replace(':', '_')}-{config.loss}"


RESUME_FREE_ARGS = ('resume', 'resume_override', 'output', 'config', 'data_dir', 'no_progress', 'log_interval', 'debug',
                    'torchcompile')


def changed_args(record: RunRecord, config: TrainConfig) -> Dict[str, Tuple[Any, Any]]:
    """``{flag: (recorded value, value now)}`` for the flags of ``config`` that differ from the run record's (none
    when the record holds no flags)."""
    recorded = record.config.to_json() if record.config is not None else {}
    now = config.to_json()
    return {k: (recorded[k], now[k]) for k in sorted(now)
            if k in recorded and k not in RESUME_FREE_ARGS and recorded[k] != now[k]}


def args_history(record: RunRecord, config: TrainConfig, epochs_done: int) -> List[FlagChange]:
    """The run record's ``args_history`` plus, when this resume changes flags (``--resume-override``), an entry
    ``FlagChange(until_epoch=epochs_done, args={flag: value})``: the epochs up to ``epochs_done`` (after the previous
    entry) ran with those values; the record's ``config`` holds the values of the epochs after the last entry."""
    history = list(record.args_history or [])
    changed = changed_args(record, config)
    if changed:
        history.append(FlagChange(until_epoch=epochs_done, args={k: old for k, (old, _) in changed.items()}))
    return history


def prepare_output(config: TrainConfig) -> Tuple[Path, Optional[Path]]:
    """The run folder and the checkpoint to resume, checked before anything is written: the folder is not a file
    and is writable; a resume keeps the model, dataset and loss, and other flags unless ``--resume-override``."""
    if config.resume:
        checkpoint = resolve_checkpoint(config.resume)
        output = Path(config.output) if config.output else checkpoint.parent
        check_output_folder(output, '--output')
        record = read_run_record(checkpoint)
        for key in RECORD_KEYS[:3]:
            if getattr(record, key) != getattr(config, key):
                raise CheckpointError(f"--resume {config.resume} was trained with --{key} {getattr(record, key)}, not "
                                      f"{getattr(config, key)}; resume with the same flags (or --config of the run).")
        changed = changed_args(record, config)
        if changed and not config.resume_override:
            listed = '; '.join(f"--{k.replace('_', '-')} {old} -> {new}" for k, (old, new) in changed.items())
            raise CheckpointError(f"--resume {config.resume} was trained with other settings ({listed}). Resume with "
                                  "the run's flags (the 'config' of its run.json), or add --resume-override to "
                                  "continue with the new values (run.json then records the epochs run with each value "
                                  "under args_history). Nothing was changed.")
        schedule_changed = sorted(changed.keys() & set(SCHEDULE_ARGS))
        if schedule_changed and 'plateau' in (config.sched, record.config.sched if record.config else None):
            raise CheckpointError(f"--resume {config.resume}: a plateau schedule's learning rate follows the metrics "
                                  "it has seen, so it cannot be rebuilt from new flags "
                                  f"({', '.join(schedule_changed)}); resume with the run's schedule flags. Nothing was "
                                  "changed.")
        if record.earlier_reduction() and not config.resume_override:
            raise CheckpointError(f"--resume {config.resume} was trained with the earlier class-weighted loss (the "
                                  "plain batch mean of w[y] l, every step smaller); its next epochs would use the "
                                  f"weighted mean {CLASS_WEIGHT_REDUCTION}. Train it again, or add --resume-override "
                                  "to continue (run.json then records the change). Nothing was changed.")
        if run_folder(checkpoint) != output.resolve() and run_files(output):
            raise CheckpointError(f"--output '{output}' already holds another run ({', '.join(run_files(output))}); "
                                  f"resuming '{config.resume}' into it would replace them. Leave --output out to "
                                  f"continue in '{run_folder(checkpoint)}', or choose an empty folder. Nothing was "
                                  f"changed.")
        return output, checkpoint
    output = Path(config.output) if config.output else default_output(config)
    check_output_folder(output, '--output')
    if (output / 'last').exists():
        raise CheckpointError(f"--output '{output}' already holds a run (its 'last' checkpoint); continue it with "
                              f"--resume {output}, or choose another --output. Nothing was changed.")
    if run_files(output):
        raise CheckpointError(f"--output '{output}' holds what a run writes ({', '.join(run_files(output))}) but no "
                              f"'last' link (a copy that dropped its links?): a new run would replace them. Continue "
                              f"it with --resume {output}/epoch-NNNN, or choose another --output. Nothing was "
                              f"changed.")
    return output, None


def run_files(output: Path) -> List[str]:
    """The names in ``output`` that a training run writes and a new run would replace or prune: its checkpoint links
    and ``epoch-*`` folders, and the metrics log."""
    if not output.is_dir():
        return []
    names = sorted(p.name for p in output.iterdir() if p.name in ('last', 'best', METRICS_FILE)
                   or p.name.startswith('epoch-'))
    return names[:4] + ([f'{len(names) - 4} more'] if len(names) > 4 else [])


def run_folder(checkpoint: Path) -> Path:
    """The output folder of the run a checkpoint folder (``OUTPUT/last``, ``OUTPUT/epoch-NNNN``) belongs to."""
    return checkpoint.resolve().parent


SCHEDULE_ARGS = ('lr', 'epochs', 'sched', 'sched_on_updates', 'warmup_epochs', 'warmup_lr', 'min_lr', 'decay_epochs',
                 'decay_milestones', 'decay_rate')


def resume_hint(output: Optional[Path]) -> str:
    """What a Ctrl-C kept, and how to continue."""
    last = output / 'last' if output is not None else None
    if last is None or not last.exists():
        leftover = f" (delete '{output}' first: it holds {', '.join(run_files(output))})" if run_files(output) else ''
        return f'no checkpoint was written yet; run the command again to start over{leftover}.'
    try:
        epoch = f' after epoch {int(os.readlink(last).rsplit("-", 1)[-1])}'
    except (OSError, ValueError):
        epoch = ''
    return (f"the run in '{output}' is saved{epoch}; the same command with --resume {output} continues it exactly "
            f"(the interrupted epoch is replayed).")
