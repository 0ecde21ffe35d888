""" benchmarks/square_probe.py: Square's breaks beyond the white-box stages, counted per point; the table; errors. """
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'
SPEC = importlib.util.spec_from_file_location('square_probe', BENCHMARKS / 'square_probe.py')
square_probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(square_probe)


def _flags(*rows):
    return {stage: torch.tensor(row, dtype=torch.bool)
            for stage, row in zip(['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square'], rows)}


def test_square_breaks_are_the_points_white_box_left_robust_and_square_did_not():
    aa = _flags([1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0])
    row = square_probe.probe_row('digits-ce-s1', 4 / 255, aa, ['Square Attack has decreased ...'], 1.0)
    assert row['white_box_robust'] == 3 and row['square_broke'] == 2
    assert row['acc'] == pytest.approx({'clean': 80.0, 'apgd-ce': 60.0, 'apgd-t': 60.0, 'fab-t': 60.0, 'square': 20.0})
    line = square_probe.summarize([row]).splitlines()[2]
    assert line == '| digits-ce-s1 | 4 | 5 | 80.0 | 60.0 | 60.0 | 60.0 | 20.0 | 3 | 2 | 1 |'


def test_saved_run_prints_the_same_table_with_its_command(tmp_path):
    aa = _flags([1, 1], [1, 0], [1, 0], [1, 0], [1, 0])
    rows = [square_probe.probe_row('digits-sp_margin_m4-s1', 8 / 255, aa, [], 2.0)]
    log = tmp_path / 'square_probe.json'
    log.write_text(json.dumps({'command': 'python benchmarks/square_probe.py --eps 8', 'rows': rows}))
    out = subprocess.run([sys.executable, str(BENCHMARKS / 'square_probe.py'), '--from-json', str(log)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith('Command: `python benchmarks/square_probe.py --eps 8`')
    assert '| digits-sp_margin_m4-s1 | 8 | 2 | 100.0 | 50.0 | 50.0 | 50.0 | 50.0 | 1 | 0 | 0 |' in out


@pytest.mark.parametrize('run, message', [('cifar-ce-s1', 'not a study run name'),
                                          ('digits-ce-s9', 'no checkpoint at')])
def test_bad_run_names_a_clear_error(tmp_path, run, message):
    with pytest.raises(SystemExit, match=message):
        square_probe.probe(run, tmp_path, [4 / 255], 10)


def test_published_table_is_written_with_its_command_and_printed_again_from_json(tmp_path, monkeypatch, capsys):
    import _saved_table  # benchmarks/ is on sys.path once square_probe is loaded
    aa = _flags([1, 1], [1, 1], [1, 0], [1, 0], [0, 0])
    rows = [square_probe.probe_row('digits-ce-s1', 4 / 255, aa, [], 1.0)]
    monkeypatch.setattr('sys.argv', ['benchmarks/square_probe.py', '--eps', '4'])
    _saved_table.publish(rows, 'rows', square_probe.summarize, str(tmp_path), 'square_probe')
    printed = capsys.readouterr().out
    assert printed.startswith('Command: `python benchmarks/square_probe.py --eps 4`')
    assert (tmp_path / 'square_probe.md').read_text() == printed.rstrip('\n')
    assert json.loads((tmp_path / 'square_probe.json').read_text())['rows'][0]['square_broke'] == 1
    _saved_table.print_saved(str(tmp_path / 'square_probe.json'), 'rows', square_probe.summarize)
    assert capsys.readouterr().out == printed
