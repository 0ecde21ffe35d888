""" Reading records: every older record sp-timm has written is brought to the current schema here, and only here.

* run record (``run.json``), version 1 (no ``schema_version``): the flags were ``args`` (``vars()`` of the argparse
  namespace); they become the typed ``config``. Flags this sp-timm no longer has go to ``retired_flags``; a flag the
  run's sp-timm did not have yet gets the value that reproduces what that run did (``--val-split 0``: validation
  on the test split, before the flag existed; every other later flag's default is the earlier behaviour). Class
  weights without a named ``reduction`` trained with ``mean_i w_i l_i``. ``weights`` and ``source``, which v1
  exports and evaluations stored inside the record, are not the run's and are dropped.
* export record (``sp_timm.json``), version 1: the run record with ``weights`` beside its keys (``raw`` when
  missing: exports before ``--model-ema`` held the trained weights); or, for a folder exported from a plain timm
  folder, only what its ``config.json`` said.
* evaluation report (``report.json``), versions 1 and 2: unchanged fields; an audit without ``fab_min_points`` had
  none; a report before version 3 did not record whether its points were the whole test split (``None``: unknown).
"""
from dataclasses import fields
from typing import Any, Dict

from .report import REPORT_VERSION, EvalReport
from .run import (EARLIER_CLASS_WEIGHT_REDUCTION, EXPORT_RECORD_VERSION, RUN_RECORD_VERSION, ExportRecord, RunRecord)
from .schema import check_schema_version, from_json
from .train_config import TrainConfig

__all__ = ['read_run_record_json', 'read_export_record_json', 'read_report_json', 'FLAGS_ADDED_LATER']

# flags added to sp-timm train after some runs were recorded, with the value that reproduces those runs when the
# new default would not (written into an upgraded record, so that train_args.yaml does not silently take the default)
FLAGS_ADDED_LATER = {'val_split': 0}  # before --val-split, validation used the test split
_NOT_THE_RUNS = ('weights', 'source')  # what v1 exports and evaluations stored inside the run record


def read_run_record_json(data: Any, where: str) -> RunRecord:
    """The ``RunRecord`` of a run record's JSON object, of any version sp-timm has written."""
    if check_schema_version(data, RUN_RECORD_VERSION, 'a run record', where) == 1:
        data = _run_record_v1(data)
    return from_json(RunRecord, data, where)


def read_export_record_json(data: Any, where: str) -> ExportRecord:
    """The ``ExportRecord`` of an export's ``sp_timm.json``, of any version sp-timm has written."""
    if check_schema_version(data, EXPORT_RECORD_VERSION, 'an export record', where) == 1:
        run = _run_record_v1(data) if 'dataset' in data else None  # else: what a plain timm folder's config said
        data = {'schema_version': EXPORT_RECORD_VERSION, 'weights': data.get('weights', 'raw'), 'run': run}
    return from_json(ExportRecord, data, where)


def read_report_json(data: Any, where: str) -> EvalReport:
    """The ``EvalReport`` of a ``report.json``, of any version sp-timm has written."""
    if check_schema_version(data, REPORT_VERSION, 'an evaluation report', where) < REPORT_VERSION:
        data = dict(data, schema_version=REPORT_VERSION)
    return from_json(EvalReport, data, where)


def _run_record_v1(data: Dict[str, Any]) -> Dict[str, Any]:
    """A version-1 run record as version 2 (see the module docstring); the values are otherwise untouched, so that
    ``from_json`` checks them as the file holds them."""
    upgraded = {k: v for k, v in data.items() if k not in _NOT_THE_RUNS + ('args',)}
    args = data.get('args')
    if isinstance(args, dict) and args:
        names = {f.name for f in fields(TrainConfig)}
        config = {k: v for k, v in args.items() if k in names}
        for flag, earlier in FLAGS_ADDED_LATER.items():
            config.setdefault(flag, earlier)
        upgraded['config'] = config
        retired = {k: v for k, v in args.items() if k not in names}
        if retired:
            upgraded['retired_flags'] = retired
    elif args:  # not a mapping of flags: from_json names the problem
        upgraded['config'] = args
    weighting = data.get('class_weight')
    if isinstance(weighting, dict) and 'reduction' not in weighting:
        upgraded['class_weight'] = dict(weighting, reduction=EARLIER_CLASS_WEIGHT_REDUCTION)
    upgraded['schema_version'] = RUN_RECORD_VERSION
    return upgraded
