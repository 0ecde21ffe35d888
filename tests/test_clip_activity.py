""" benchmarks/clip_activity.py: the table of how often --clip-grad acts, from per-epoch gradient-norm logs; a
configuration that does not clip is refused before any training. """
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'
SPEC = importlib.util.spec_from_file_location('clip_activity', BENCHMARKS / 'clip_activity.py')
clip_activity = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(clip_activity)


def _run(config, seed, clipped, norms, same):
    rows = [{'epoch': e + 1, 'clipped_pct': c, 'grad_norm_mean': n, 'grad_norm_max': 2 * n}
            for e, (c, n) in enumerate(zip(clipped, norms))]
    return {'setting': 'digits', 'config': config, 'seed': seed, 'clip': 5.0, 'rows': rows, 'same_as_study': same}


def test_table_summarises_clipping_over_seeds():
    runs = [_run('sp_margin_m4', 1, [60, 20, 0], [6.0, 4.0, 1.0], True),
            _run('sp_margin_m4', 2, [30, 0, 0], [5.0, 3.0, 2.0], False),
            _run('ce_clip5', 1, [0, 0, 0], [0.5, 0.4, 0.2], None)]
    lines = clip_activity.summarize(runs).splitlines()
    assert all(line.count('|') == 10 for line in lines)  # 9 columns, no pipe inside a cell
    assert lines[2] == ('| digits | sp_margin_m4 | 2 | 5 | 18.3 (seeds 10.0–26.7) | 1–2 (of 3) | 12.00 | 5.50 → 1.50 '
                        '| 1 of 2 |')
    assert lines[3] == ('| digits | ce_clip5 | 1 | 5 | 0.0 (seeds 0.0–0.0) | never (of 3) | 1.00 | 0.50 → 0.20 '
                        '| no study run |')


def test_saved_log_prints_the_same_table_with_its_command(tmp_path):
    runs = [_run('sp_margin_m4', 1, [50, 0], [6.0, 1.0], None)]
    log = tmp_path / 'clip_activity.json'
    log.write_text(json.dumps({'command': 'python benchmarks/clip_activity.py --seeds 1', 'runs': runs}))
    out = subprocess.run([sys.executable, str(BENCHMARKS / 'clip_activity.py'), '--from-json', str(log)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith('Command: `python benchmarks/clip_activity.py --seeds 1`')
    assert clip_activity.summarize(runs) in out


def test_a_configuration_without_clipping_is_refused_before_training(tmp_path):
    with pytest.raises(SystemExit, match="'ce' trains without --clip-grad"):
        clip_activity.retrain('digits', 'ce', 1, tmp_path, None, 30)
    assert not any(tmp_path.iterdir())
