""" The errors sp-timm raises for a user's mistake or the environment's refusal: each message names the problem
and the fix. ``sp-timm`` prints them as one ``error:`` line (``cli.common.run_reporting_errors``). """

__all__ = ['CheckpointError', 'DataError', 'HubError', 'Interrupted', 'RecordError']


class CheckpointError(ValueError):
    """A checkpoint, record or output folder that cannot be used as asked; the message says why and what to do."""


class DataError(ValueError):
    """A dataset that cannot be loaded or used as asked; the message names the fix."""


class HubError(RuntimeError):
    """Pushing to the Hub failed; the local folder is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a message saying what was kept and how to continue (e.g. ``--resume RUN``)."""


class RecordError(CheckpointError):
    """A record file (run record, evaluation report, export record) that does not hold what it claims: a field
    missing, of the wrong type, unknown, or of a newer schema; the message names the file and the field."""
