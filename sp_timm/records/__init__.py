""" Typed, versioned records: the training configuration (``TrainConfig``), the run record, the export record,
what a loaded model is (``ModelInfo``), the evaluation report and its leaderboard entry; JSON with every field
checked on reading (``schema``), and every older record brought to the current schema in one place (``upgrade``).
Light: no torch. """
from .report import (LEADERBOARD_FIELDS, REPORT_VERSION, AuditAttackRow, AuditSummary, BudgetAccuracy, ClassResult,
                     EvalReport, EvaluatedModel, GroupAccuracy, GroupResult, GroupRule, LeaderboardEntry,
                     LongTailEntry, PerturbationSummary, Protocol, StageAccuracy)
from .run import (CLASS_WEIGHT_REDUCTION, EARLIER_CLASS_WEIGHT_REDUCTION, EXPORT_RECORD_VERSION, RUN_RECORD_VERSION,
                  ClassWeighting, ExportRecord, FlagChange, LogitAdjustment,
                  ModelEma, ModelInfo, ReductionChange, RunRecord,
                  ValidationSplit)
from .schema import from_json, json_field, percent_value, to_json
from .train_config import TrainConfig
from .upgrade import read_export_record_json, read_report_json, read_run_record_json

__all__ = ['TrainConfig', 'RunRecord', 'ValidationSplit', 'ClassWeighting', 'LogitAdjustment',
           'ReductionChange', 'ModelEma', 'FlagChange',
           'ExportRecord', 'ModelInfo', 'EvalReport', 'Protocol', 'EvaluatedModel', 'StageAccuracy', 'ClassResult',
           'GroupResult', 'GroupRule', 'PerturbationSummary', 'BudgetAccuracy', 'AuditAttackRow', 'AuditSummary',
           'LeaderboardEntry', 'GroupAccuracy', 'LongTailEntry', 'LEADERBOARD_FIELDS', 'REPORT_VERSION',
           'RUN_RECORD_VERSION', 'EXPORT_RECORD_VERSION',
           'CLASS_WEIGHT_REDUCTION', 'EARLIER_CLASS_WEIGHT_REDUCTION', 'to_json', 'from_json', 'json_field',
           'percent_value', 'read_run_record_json', 'read_export_record_json', 'read_report_json']
