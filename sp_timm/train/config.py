""" Checking a ``TrainConfig`` before a run: the values (``TrainConfig.problems``) and what needs the machine and
timm: ``--output`` a writable folder (not a file), ``--model-kwargs`` arguments the model takes and no file names. """
from typing import List

from ..files import check_output_folder
from ..model_source import check_model_args
from ..records import TrainConfig

__all__ = ['check_train_config']


def check_train_config(config: TrainConfig) -> List[str]:
    """Every problem of ``config``, each a sentence that names the fix (empty: the run can start)."""
    import timm
    problems = config.problems()
    checks = []
    if config.output:
        checks.append(lambda: check_output_folder(config.output, '--output'))
    if config.model_kwargs and timm.is_model(config.model):
        checks.append(lambda: check_model_args(config.model, dict(config.model_kwargs), '--model-kwargs'))
    for check in checks:
        try:
            check()
        except ValueError as err:
            problems.append(str(err))
    return problems
