""" Typed, versioned records: every record this project has committed loads (the version-1 run records and reports of
model_cards/, the audit sections of the study's results) and writes back unchanged but for the schema; a field of
the wrong type, a missing or unknown field, or a record of a newer schema is one RecordError line naming the file
and the field; the upgrade from version 1 is the one place older records are interpreted. """
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sp_timm.errors import RecordError
from sp_timm.records import (EXPORT_RECORD_VERSION, REPORT_VERSION, RUN_RECORD_VERSION, AuditSummary, TrainConfig,
                             from_json, read_export_record_json, read_report_json, read_run_record_json, to_json)

from conftest import minimal_run

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted((REPO / 'model_cards').glob('*.record.json'))
REPORTS = sorted((REPO / 'model_cards').glob('*.eval.json'))
STUDY_ROWS = sorted((REPO / 'benchmarks' / 'results' / 'study' / 'confirm').glob('*.json'))


@pytest.mark.parametrize('path', RECORDS, ids=lambda p: p.stem)
def test_committed_version_1_records_load_and_keep_every_value(path):
    older = json.loads(path.read_text())
    assert 'schema_version' not in older and 'args' in older  # written before records had versions
    exported = read_export_record_json(older, str(path))
    assert exported.weights == older['weights'] and exported.schema_version == EXPORT_RECORD_VERSION
    run = to_json(exported.run)
    assert run['schema_version'] == RUN_RECORD_VERSION
    config, defaults = run['config'], to_json(TrainConfig(dataset=older['args']['dataset']))
    assert {k: config[k] for k in older['args']} == older['args']
    assert {k: config[k] for k in set(config) - set(older['args'])} == \
        {k: defaults[k] for k in set(config) - set(older['args'])}  # flags added since: their defaults
    assert {k: v for k, v in run.items() if k not in ('schema_version', 'config')} == \
        {k: v for k, v in older.items() if k not in ('args', 'weights')}
    assert isinstance(exported.run.config, TrainConfig) and exported.run.config.loss == older['loss']


@pytest.mark.parametrize('path', REPORTS, ids=lambda p: p.stem)
def test_committed_version_1_reports_load_and_write_back_the_same(path):
    older = json.loads(path.read_text())
    report = read_report_json(older, str(path))
    assert report.schema_version == REPORT_VERSION and report.per_class[0].label == 0
    assert {k: v for k, v in to_json(report).items() if k != 'schema_version'} == older


def test_the_studys_audit_sections_load():
    assert len(STUDY_ROWS) >= 185
    audited = [json.loads(p.read_text())['audit'] for p in STUDY_ROWS if 'audit' in json.loads(p.read_text())]
    assert audited
    for section in audited:
        summary = from_json(AuditSummary, section, 'a study row')
        assert summary.attacks and 0 <= summary.robust_acc <= summary.autoattack_acc + 1e-9
        # rows written before fab_min_points existed read 0 (no FAB row was counted then)
        assert summary.fab_min_points == section.get('fab_min_points', 0)


def test_a_record_round_trips_and_a_new_record_loads_as_written():
    run = replace(minimal_run('sp_margin', {'margin': 4.0}, clip_grad=5.0), args_history=None)
    data = json.loads(json.dumps(to_json(run)))
    assert list(data)[0] == 'schema_version' and read_run_record_json(data, 'run.json') == run


@pytest.mark.parametrize('edit, message', [
    (lambda d: d.update(num_classes='10'), "run.json: num_classes: expected a whole number, got str '10'"),
    (lambda d: d.pop('loss'), "RunRecord field 'loss' is missing"),
    (lambda d: d.update(source='/somewhere'), 'unknown field(s) source in RunRecord'),
    (lambda d: d['config'].update(lr='fast'), "run.json: config: lr: expected a number, got str 'fast'"),
    (lambda d: d['config'].update(bogus_flag=1), 'unknown field(s) bogus_flag in TrainConfig'),
    (lambda d: d.update(schema_version=RUN_RECORD_VERSION + 1), 'written by a newer sp-timm'),
    (lambda d: d.update(schema_version='2'), 'schema_version must be a whole number'),
])
def test_an_edited_or_newer_record_is_one_error_naming_the_field(edit, message):
    data = json.loads(json.dumps(to_json(minimal_run())))
    edit(data)
    with pytest.raises(RecordError) as err:
        read_run_record_json(data, 'run.json')
    assert message in str(err.value) and '\n' not in str(err.value)


def test_version_1_upgrade_keeps_what_older_runs_did():
    v1 = {k: v for k, v in to_json(minimal_run('ce', class_weight='effective')).items() if k != 'schema_version'}
    v1['args'] = {k: v for k, v in v1.pop('config').items() if k != 'val_split'}  # from before --val-split
    v1['args']['retired_flag'] = 3  # a flag this sp-timm no longer has
    v1['class_weight'] = {'mode': 'effective', 'beta': 0.9999, 'drw_epoch': None, 'class_counts': [1] * 10,
                          'weights': [1.0] * 10, 'meaning': 'w[y] l'}  # before the reduction was named
    run = read_run_record_json(dict(v1, weights='raw', source='x'), 'run.json')  # what v1 evaluations added
    assert run.config.val_split == 0  # it validated on the test split
    assert run.retired_flags == {'retired_flag': 3}
    assert run.earlier_reduction() == 'mean_i w_i l_i'
    assert read_run_record_json(dict(v1, args={}), 'run.json').config is None  # no flags recorded


@pytest.mark.parametrize('edit, message', [
    (lambda d: d.update(classes=d['classes'][:3]), 'classes names 3 classes, num_classes is 10'),
    (lambda d: d.update(num_classes=0, classes=[], model_args={}), 'num_classes must be >= 1'),
    (lambda d: d.update(model_args={'num_classes': 7}), 'model_args.num_classes is 7, num_classes is 10'),
    (lambda d: d.update(train_class_counts=[1, 2]), 'train_class_counts has 2 entries for 10 classes'),
    (lambda d: d.update(split_class_counts=[-1] * 10), 'split_class_counts holds a negative count'),
    (lambda d: d.update(class_groups={'few': [10]}), 'class_groups.few names a class outside 0..9'),
    (lambda d: d.update(input_range=[1.0]), 'input_range must be [low, high]'),
    (lambda d: d.update(input_range=[0.0, float('inf')]), 'input_range must be a finite number'),
    (lambda d: d.update(input_mean=[0.5], input_std=[0.0]), 'input_std must be >= 1e-12'),
    (lambda d: d.update(input_mean=[0.5, 0.5, 0.5], input_std=[0.2]), 'input_mean and input_std must both be'),
    (lambda d: d.update(num_processes=0), 'num_processes and global_batch_size must be >= 1'),
])
def test_a_run_record_breaking_its_own_rules_is_one_error(edit, message):
    """Right JSON types, wrong content (what an edited or foreign record holds): refused when read, before any work."""
    data = json.loads(json.dumps(to_json(minimal_run())))
    edit(data)
    with pytest.raises(RecordError) as err:
        read_run_record_json(data, 'run.json')
    assert message in str(err.value) and '\n' not in str(err.value)


def test_an_export_record_names_which_weights():
    with pytest.raises(RecordError, match="weights must be 'ema' or 'raw', got 'best'"):
        read_export_record_json({'schema_version': EXPORT_RECORD_VERSION, 'weights': 'best', 'run': None}, 'x.json')


@pytest.mark.parametrize('edit, message', [
    (lambda d: d.update(clean_acc='ninety'), "clean_acc: expected a number, got str 'ninety'"),
    (lambda d: d.update(clean_acc=1e309), 'clean_acc must be a percentage in [0, 100], got inf'),
    (lambda d: d.update(robust_acc=-5), 'robust_acc must be a percentage in [0, 100], got -5'),
    (lambda d: d.update(robust_ci=[0.0, 101.0]), 'robust_ci must be a percentage'),
    (lambda d: d.update(n_points=-1), 'n_points must be >= 0'),
    (lambda d: d.update(seconds=float('nan')), 'seconds must be a finite number'),
    (lambda d: d['stages'][0].update(acc=150.0), 'stages[0]: acc must be a percentage'),
    (lambda d: d['per_class'][0].update(clean_acc=-1.0), 'per_class[0]: clean_acc must be a percentage'),
    (lambda d: d['protocol'].update(eps_value=-0.1), 'eps_value must be >= 0'),
    (lambda d: d['leaderboard'].update(clean_acc='ninety'), 'leaderboard: clean_acc must be a percentage'),
    (lambda d: d['leaderboard'].update(autoattack_acc='NaN'), 'leaderboard: autoattack_acc must be a percentage'),
])
def test_a_report_breaking_its_own_rules_is_one_error(edit, message):
    """A report with impossible numbers (an accuracy of "ninety", 1e309 (inf in JSON) or -5) is refused when read: an
    export or a RobustBench bundle never carries it."""
    data = json.loads(REPORTS[0].read_text())
    data.setdefault('leaderboard', {'link': '', 'name': 'x', 'authors': '', 'additional_data': False,
                                    'number_forward_passes': 1, 'dataset': 'cifar10', 'venue': '',
                                    'architecture': 'x', 'eps': '8/255', 'clean_acc': '90.00', 'reported': '',
                                    'autoattack_acc': '50.00', 'footnote': None, 'unreliable': False})
    read_report_json(json.loads(json.dumps(data)), 'report.json')  # as committed: valid
    edit(data)
    with pytest.raises(RecordError) as err:
        read_report_json(json.loads(json.dumps(data)), 'report.json')
    assert message in str(err.value) and '\n' not in str(err.value)
