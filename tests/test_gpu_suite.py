""" benchmarks/gpu_suite.py --smoke runs on a CPU and writes its JSON and markdown: the GPU suite cannot rot
unnoticed between the runs on a lent GPU. Checks structure only, never timings. """
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_every_section(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'gpu_suite.py'), '--smoke', '--out',
                           str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / 'suite.json').read_text())
    assert results['sections'] == ['env', 'loss', 'train', 'compile', 'autoattack']
    for name in results['sections']:
        assert 'error' not in results[name], (name, results[name].get('error'))
        assert results[name]['seconds'] >= 0
    loss = results['loss']
    members = ('sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin')
    assert set(loss['ratio']) == {f'{m} {kind}' for m in members for kind in ('eager', 'compiled')}
    assert all(ratio['10'] > 0 for ratio in loss['ratio'].values())  # JSON keys are strings
    runs = results['train']['runs']
    assert [(r['mode'], r['batch']) for r in runs] == [('standard', 8), ('pgd', 8), ('trades', 8)]
    assert all(r['sp_timm_img_s'] > 0 and r['hand_img_s'] > 0 and 0 < r['mfu_hand'] for r in runs)
    assert results['train']['gflop_per_image_fwd_bwd'] > 0
    compile_runs = results['compile']['runs']
    assert [r['batch'] for r in compile_runs] == [8]
    assert (compile_runs[0]['eager_img_s'] > 0 and compile_runs[0]['compiled_img_s'] > 0
            and compile_runs[0]['mfu_eager'] > 0)
    assert results['autoattack']['points'] == 16 and results['autoattack']['sp_timm_robust_acc'] == 0.0
    table = (tmp_path / 'suite.md').read_text()
    assert '| sp_margin compiled |' in table and '| trades | 8 |' in table and '## AutoAttack standard' in table


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks import gpu_suite

    def broken(cfg):
        raise RuntimeError('out of memory, say')
    monkeypatch.setitem(gpu_suite.RUNNERS, 'env', broken)
    monkeypatch.setitem(gpu_suite.RUNNERS, 'demo', lambda cfg: {'ran': True})
    assert gpu_suite.main(['--smoke', '--out', str(tmp_path), '--sections', 'env', 'demo']) == 0
    results = json.loads((tmp_path / 'suite.json').read_text())
    assert results['env']['error'].startswith('RuntimeError: out of memory, say')
    assert results['demo']['ran'] is True
    assert 'out of memory, say' in (tmp_path / 'suite.md').read_text()
