""" The robustness study's configuration (benchmarks/robustness_study.py): every screened configuration parses as
``sp-timm train`` flags in every setting it belongs to; CE-DRW only in the -lt settings, re-weighting from 80 % of
the epochs; the finalists in their priority order. """
import importlib.util
from pathlib import Path

import pytest

from sp_timm.cli.train import parse_train_args

SPEC = importlib.util.spec_from_file_location(
    'robustness_study', Path(__file__).resolve().parents[1] / 'benchmarks' / 'robustness_study.py')
study = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study)


@pytest.mark.parametrize('setting', list(study.SETTINGS))
def test_every_configuration_parses_in_its_settings(setting, tmp_path):
    configs = study.configs_of(setting)
    assert ('ce_drw' in configs) == study.is_lt(setting)
    for config in configs:
        args = parse_train_args(study.train_flags(setting, config, 30, 1) + ['--output', str(tmp_path / config)])
        assert args.seed == 1 and args.loss == study.member(config)
        assert (args.adv == 'pgd') == setting.endswith('pgdat')


@pytest.mark.parametrize('setting', ['digits', 'digits-lt-pgdat'])
def test_the_clipping_control_is_the_same_run_without_clip_grad(setting, tmp_path):
    clipped, unclipped = (parse_train_args(study.train_flags(setting, c, 30, 2) + ['--output', str(tmp_path)])
                          for c in ('sp_margin_m4', 'sp_margin_m4_noclip'))
    assert clipped.clip_grad == 5 and unclipped.clip_grad is None
    assert dict(vars(clipped), clip_grad=None) == vars(unclipped)
    for config in ('sp_ls_p0.9_noclip', 'ce_clip5_noclip'):  # sp_ls trains without clipping; CE + clip 5 is a baseline
        with pytest.raises(KeyError, match=config):
            study.train_flags(setting, config, 30, 2)


def test_ce_drw_reweights_from_eighty_percent_of_the_epochs(tmp_path):
    args = parse_train_args(study.train_flags('digits-lt', 'ce_drw', 30, 0) + ['--output', str(tmp_path)])
    assert args.epochs == 75 and args.drw_epoch == 60 and args.class_weight == 'effective'


@pytest.mark.parametrize('reduction, retrained', [(None, True), ('current', False), ('no class weights', False)])
def test_a_run_of_the_old_class_weighted_batch_mean_is_trained_again(tmp_path, monkeypatch, reduction, retrained):
    """A finished ce_drw run whose record predates the weighted mean (``sum w l / sum w``) is trained again and its
    evaluation's saved stages dropped; a current one, or a run without class weights, is reused as it is."""
    import json
    import sp_timm.train
    from sp_timm.records import CLASS_WEIGHT_REDUCTION, to_json
    from conftest import minimal_run
    cfg = {'out': str(tmp_path), 'epochs': 2}
    run, work = study._run_dir(cfg, 'digits-lt', 'ce_drw', 1), study._work_dir(cfg, 'digits-lt', 'ce_drw', 1)
    (run / 'last').mkdir(parents=True)
    (work / 'autoattack').mkdir(parents=True)
    record = to_json(minimal_run('ce', class_weight='effective'))
    weighting = {'mode': 'effective', 'beta': 0.9999, 'drw_epoch': 1, 'class_counts': [2] * 10, 'weights': [1.0] * 10,
                 'meaning': 'per-sample weight w[y] on the loss of each sample; batch mean'}
    if reduction == 'current':
        record['class_weight'] = dict(weighting, reduction=CLASS_WEIGHT_REDUCTION)
    elif reduction is None:  # as the earlier release wrote it: version 1, flags as 'args', no named reduction
        del record['schema_version']
        record['args'], record['class_weight'] = record.pop('config'), weighting
    (run / 'last' / 'run.json').write_text(json.dumps(record))
    (run / 'last' / 'state.json').write_text(json.dumps({'epoch': 5}))
    trained = []
    monkeypatch.setattr(sp_timm.train, 'train', lambda args: trained.append(Path(args.output)))
    assert study._train('digits-lt', 'ce_drw', 1, cfg) == run / 'last'
    assert trained == ([run] if retrained else [])
    assert work.exists() != retrained and (run / 'last').exists() != retrained


def test_finalists_put_the_central_comparison_first():
    best = {'sp_ls': {'config': 'sp_ls_p0.9'}, 'sp_margin': {'config': 'sp_margin_m4'}}
    lt = {'chosen': 'sp_margin_m4', 'best_of_member': best, 'scores': {'ce': {}, 'ce_drw': {}}}
    # sp_margin trains with clip 5: its controls, CE + clip 5 and sp_margin without clipping, come after CE + LS
    assert study.finalists(lt) == ['ce', 'sp_margin_m4', 'ce_ls0.1', 'ce_clip5', 'sp_margin_m4_noclip', 'ce_drw',
                                   'sp_ls_p0.9']
    plain = dict(lt, scores={'ce': {}})
    assert 'ce_drw' not in study.finalists(plain)
    unclipped = {'chosen': 'sp_ls_p0.9', 'best_of_member': best, 'scores': {'ce': {}}}
    assert study.finalists(unclipped) == ['ce', 'sp_ls_p0.9', 'ce_ls0.1', 'sp_margin_m4', 'ce_clip5']


def test_figure_rows_take_audited_accuracy_per_seed_in_finalist_order():
    def row(config, seed, robust, audited=None):
        r = {'setting': 'digits', 'config': config, 'seed': seed, 'clean': {'acc': 98.0},
             'autoattack': {'acc': robust}, 'median_linf': 2 / 255}
        return dict(r, audited={'acc': audited}) if audited is not None else r
    selection = {'digits': {'chosen': 'sp_margin_m4', 'best_of_member': {}, 'scores': {'ce': {}}}}
    confirm = [row('sp_margin_m4', 1, 94.4, 94.0), row('ce', 2, 40.0), row('ce', 1, 54.5, 54.2),
               row('ce_ls0.1', 1, 50.0), row('sp_margin_m4_noclip', 1, 93.0, 93.0)]
    rows = study.figure_rows(confirm, selection)
    robust = rows['audited AutoAttack %']['digits']
    # finalist order, the no-clip control beside the configuration it controls; finalists without rows left out
    assert list(robust) == ['ce', 'sp_margin_m4', 'sp_margin_m4_noclip', 'ce_ls0.1']
    assert robust['ce'] == {1: 54.2, 2: 40.0} and robust['sp_margin_m4'] == {1: 94.0}  # AutoAttack where unaudited
    assert rows['median FAB Linf (x/255)']['digits']['ce'][1] == pytest.approx(2.0)
    assert rows['clean %']['digits-lt'] == {}


def test_the_chosen_configuration_is_paired_with_its_clipping_control_on_shared_seeds():
    def row(config, seed, audited_flags):
        return {'config': config, 'seed': seed, 'autoattack': {'acc': 0.0}, 'flags': {'audited': audited_flags},
                'audited': {'acc': 100 * sum(audited_flags) / len(audited_flags)}}
    done = [row('sp_margin_m4', 1, [1] * 20), row('sp_margin_m4', 2, [1] * 10 + [0] * 10),
            row('sp_margin_m4_noclip', 1, [0] * 20), row('sp_margin_m4_noclip', 3, [1] * 20)]
    line = study._paired_line(done, 'sp_margin_m4', 'sp_margin_m4_noclip')[-1]
    # only seed 1 is shared: 20 points robust only with clipping, difference 100 points, McNemar p = 2 / 2^20
    assert ('vs sp_margin_m4_noclip (audited robust accuracy' in line
            and 'difference 100.0 points over 1 seed(s)' in line)
    assert line.endswith('McNemar p per seed: 1.9e-06')
    assert study._paired_line(done, 'sp_margin_m4', 'ce') == []


def test_summary_tables_the_finalists_and_pairs_the_chosen_configuration_with_every_baseline_and_its_control(tmp_path):
    from sp_timm.files import atomic_write_json
    atomic_write_json(tmp_path / 'screen' / 'digits-ce-s0.json', {'setting': 'digits', 'config': 'ce', 'seed': 0,
                      'n_val': 138, 'eps': 2 / 255, 'attack': 'APGD', 'device': 'cpu'})
    atomic_write_json(tmp_path / 'selection.json', {'digits': {'chosen': 'sp_margin_m4', 'best_of_member': {},
                      'scores': {'ce': {'robust': 60.0, 'clean': 99.0, 'seeds': 1},
                                 'sp_margin_m4': {'robust': 90.0, 'clean': 99.0, 'seeds': 1}}}})
    for config, seed, robust in [('ce', 1, 10), ('sp_margin_m4', 1, 18), ('sp_margin_m4_noclip', 1, 17),
                                 ('ce', 2, 11), ('sp_margin_m4', 2, 19), ('ce_ls0.1', 2, 12), ('ce_clip5', 1, 10)]:
        flags = [1] * robust + [0] * (20 - robust)
        atomic_write_json(tmp_path / 'confirm' / f'digits-{config}-s{seed}.json', {
            'setting': 'digits', 'config': config, 'seed': seed, 'n': 20, 'eps': 2 / 255, 'device': 'cpu',
            'clean': {'acc': 100.0}, 'autoattack': {'acc': 5 * robust}, 'audited': {'acc': 5 * robust},
            'median_linf': 4 / 255, 'audit': {'unreliable': False}, 'flags': {'audited': flags}})
    summary = study.summarize(tmp_path, 'cmd', 2.0)
    assert '| sp_margin_m4_noclip | 1 | 100.0 | 85.0 | 85.0 | 4.00 | 0 |' in summary
    assert ('sp_margin_m4 vs ce (audited robust accuracy, same points, same seed): '
            'difference 40.0 ± 0.0 points over 2') in summary
    assert ('sp_margin_m4 vs sp_margin_m4_noclip (audited robust accuracy, same points, same seed): '
            'difference 5.0 points over 1') in summary
    assert ('sp_margin_m4 vs ce_ls0.1 (audited robust accuracy, same points, same seed): '
            'difference 35.0 points over 1') in summary
    assert 'vs ce_clip5' not in summary and 'vs ce_drw' not in summary  # CE's control; no rows
    assert summary.index('vs ce (') < summary.index('vs ce_ls0.1') < summary.index('vs sp_margin_m4_noclip')


@pytest.mark.slow
def test_a_finalist_that_trains_the_same_weights_as_a_scored_one_reuses_its_stages(tmp_path, monkeypatch):
    """CE + clip 5 trains CE's weights here (CE's gradient norm stays below 5): its confirmation takes CE's saved
    AutoAttack, FAB and audit stages and runs only the transfer attack CE's audit lacked, with CE's numbers on every
    point; CE scored again afterwards takes all of it back (without the transfer attack); a model with other
    weights, or another training loss, seed or point count, is no twin."""
    import shutil
    import torch
    from pyautoattack.fab_pt import FABAttack_PT
    from sp_timm.files import atomic_write_json
    from sp_timm.model_source import load_model
    from sp_timm.eval import audit as audit_module
    from sp_timm.eval import points as points_module
    cfg = {'out': str(tmp_path), 'epochs': 1, 'n_examples': 6, 'eps': 2 / 255, 'fab_iters': 3, 'audit_restarts': 1,
           'audit_queries': 20, 'audit_square_restarts': 1}
    ce = study.confirm_job(('digits', 'ce', 1, cfg))
    assert 'twin_of' not in ce and 'transfer' in ce['audit']['skipped'] and ce['audit']['attacked_points'] > 0
    atomic_write_json(tmp_path / 'confirm' / 'digits-ce-s1.json', ce)

    model, _ = load_model(str(tmp_path / 'runs' / 'digits-ce-s1' / 'last'))
    ce_loss = None  # plain CE: APGD-CE attacks it already, the audit has no loss-aware stage
    from conftest import minimal_run
    smoothed, _ = audit_module.training_loss_from_run(minimal_run('ce', smoothing=0.1))
    assert study.find_twin('digits', 'ce_clip5', 1, 6, cfg, model, ce_loss)['config'] == 'ce'
    assert study.find_twin('digits', 'ce_clip5', 2, 6, cfg, model, ce_loss) is None  # another seed
    assert study.find_twin('digits', 'ce_clip5', 1, 7, cfg, model, ce_loss) is None  # other points
    assert study.find_twin('digits', 'ce_ls0.1', 1, 6, cfg, model, smoothed) is None
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert study.find_twin('digits', 'sp_margin_m4', 1, 6, cfg, model, ce_loss) is None

    ran = []
    stage, chunk, fab = audit_module.run_stage, points_module.autoattack_chunk, FABAttack_PT.perturb
    monkeypatch.setattr(audit_module, 'run_stage', lambda name, *a, **k: ran.append(name) or stage(name, *a, **k))
    monkeypatch.setattr(points_module, 'autoattack_chunk', lambda *a, on_stage=None, **k: chunk(
        *a, on_stage=lambda name: ran.append(name) or (on_stage and on_stage(name)), **k))
    monkeypatch.setattr(FABAttack_PT, 'perturb', lambda self, *a, **k: ran.append('fab') or fab(self, *a, **k))
    twin = study.confirm_job(('digits', 'ce_clip5', 1, cfg))
    assert twin.get('twin_of') == 'ce'  # (not a twin if the clip acted after all: a KeyError-free failure)
    assert set(ran) == {'transfer'}  # every AutoAttack, FAB and audit stage came from CE's saved work
    assert twin['flags'] == ce['flags'] and twin['autoattack'] == ce['autoattack']
    assert twin['median_linf'] == ce['median_linf'] and twin['audited'] == ce['audited']
    assert 'transfer' in [a['attack'] for a in twin['audit']['attacks']]
    atomic_write_json(tmp_path / 'confirm' / 'digits-ce_clip5-s1.json', twin)
    atomic_write_json(tmp_path / 'screen' / 'digits-ce-s0.json', {'setting': 'digits', 'config': 'ce', 'seed': 0,
                      'n_val': 138, 'eps': 2 / 255, 'attack': 'APGD', 'device': 'cpu'})
    assert ('ce_clip5 trained the same weights as ce (every tensor equal) on seed(s) 1'
            in study.summarize(tmp_path, 'cmd', 2.0))

    # the other way round: CE scored again after its twin, whose audit had the transfer attack CE's has not
    (tmp_path / 'confirm' / 'digits-ce-s1.json').unlink()
    shutil.rmtree(tmp_path / 'eval-work' / 'digits-ce-s1')
    ran.clear()
    again = study.confirm_job(('digits', 'ce', 1, cfg))
    assert again.get('twin_of') == 'ce_clip5' and ran == []
    assert 'transfer' not in [a['attack'] for a in again['audit']['attacks']]
    assert again['flags'] == ce['flags'] and again['audit']['attacks'] == ce['audit']['attacks']


def test_confirming_a_name_that_is_no_finalist_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from sp_timm.files import atomic_write_json
    atomic_write_json(tmp_path / 'screen' / 'digits-ce-s0.json', {
        'setting': 'digits', 'config': 'ce', 'seed': 0, 'n_val': 138, 'eps': 2 / 255, 'attack': 'APGD', 'device': 'cpu',
        'clean': {'acc': 99.0, 'balanced': 99.0}, 'robust': {'acc': 60.0, 'balanced': 60.0}})
    monkeypatch.setattr('sys.argv', ['robustness_study.py', '--out', str(tmp_path), '--phase', 'confirm',
                                     '--settings', 'digits', '--finalists', 'ce', 'sp_margin_m9'])
    with pytest.raises(SystemExit) as exit_info:
        study.main()
    assert exit_info.value.code == 2
    assert ("--finalists sp_margin_m9: not a finalist of digits; the finalists are ce, ce_ls0.1"
            in capsys.readouterr().err)
    assert not (tmp_path / 'confirm').exists()


def test_long_tail_baselines_and_sp_with_logit_adjustment_are_screened_on_lt_only(tmp_path):
    for setting in study.SETTINGS:
        configs = study.configs_of(setting)
        assert all((c in configs) == study.is_lt(setting) for c in ('ce_bs', *study.LOGIT_ADJUSTED))
    bs = parse_train_args(study.train_flags('digits-lt', 'ce_bs', 30, 1) + ['--output', str(tmp_path / 'a')])
    la = parse_train_args(study.train_flags('digits-lt-pgdat', 'sp_margin_m4_la', 30, 1) + ['--output', str(tmp_path)])
    assert (bs.loss, bs.logit_adjust, bs.class_weight) == ('ce', 1.0, 'none')
    assert (la.loss, la.sp_margin, la.logit_adjust, la.clip_grad, la.adv) == ('sp_margin', 4.0, 1.0, 5.0, 'pgd')


def test_sp_with_logit_adjustment_never_becomes_the_chosen_sp_configuration_and_its_best_is_a_finalist():
    def row(config, robust, clean=99.0):
        return {'setting': 'digits-lt', 'config': config, 'seed': 0, 'robust': {'balanced': robust, 'acc': robust},
                'clean': {'balanced': clean, 'acc': clean}}
    screen = [row('ce', 40), row('ce_drw', 42), row('ce_bs', 45), row('sp_margin_m4', 50), row('sp_ls_p0.9', 48),
              row('sp_margin_m1_la', 70), row('sp_margin_m4_la', 60), row('sp_margin_m2_la', 80, clean=90)]
    sel = study.select(screen, clean_tolerance=2.0)['digits-lt']
    assert sel['chosen'] == 'sp_margin_m4'  # SP alone: the logit-adjusted runs score higher but compete apart
    assert sel['best_of_member']['sp_margin']['config'] == 'sp_margin_m4'
    # m2_la is the most robust but 9 points below CE's clean accuracy: m1_la is the best eligible one
    assert sel['best_logit_adjusted'] == {'config': 'sp_margin_m1_la', 'within_clean_tolerance': True}
    assert study.finalists(sel)[:2] == ['ce', 'sp_margin_m4']
    order = study.finalists(sel)
    assert order.index('ce_drw') < order.index('ce_bs') < order.index('sp_margin_m1_la') < order.index('sp_ls_p0.9')
    assert 'sp_margin_m4_la' not in order


def test_summary_pairs_sp_with_logit_adjustment_with_sp_alone_and_the_long_tail_baselines():
    def row(config, seed, flags):
        return {'config': config, 'seed': seed, 'autoattack': {'acc': 0.0}, 'flags': {'audited': flags},
                'audited': {'acc': 100 * sum(flags) / len(flags)}}
    done = [row('sp_margin_m1_la', 1, [1] * 10), row('ce_bs', 1, [0] * 10), row('sp_margin_m4', 1, [1] * 5 + [0] * 5)]
    vs_bs = study._paired_line(done, 'sp_margin_m1_la', 'ce_bs')[-1]
    assert 'difference 100.0 points over 1 seed(s)' in vs_bs
    assert 'difference 50.0 points' in study._paired_line(done, 'sp_margin_m1_la', 'sp_margin_m4')[-1]
