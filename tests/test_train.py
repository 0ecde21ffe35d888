""" sp-timm train: learning with every loss, PGD-AT / TRADES, 2 processes == 1 process, kill -9 and resume,
clear errors that leave existing output untouched. Small: digits subsets and ResNet-20. """
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sp_timm.errors import CheckpointError
from sp_timm.checkpoint import load_training_state
from sp_timm.cli.train import parse_train_args
from sp_timm.train import read_metrics, train
from sp_timm.threat.pgd import pgd_attack, project_delta

from conftest import CLI, TINY_FLAGS as TINY

SMALL = ('--dataset digits --model resnet20_cifar --batch-size 32 --train-examples 256 --val-examples 64 '
         '--no-aug --no-progress --lr 0.05').split()
REPO = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, name: str, *flags: str) -> Path:
    return train(parse_train_args(SMALL + ['--output', str(tmp_path / name), *flags]))


@pytest.mark.parametrize('loss', ['ce', 'sp_ls', 'sp_logit', 'sp_ce', 'sp_margin', 'sp_focal'])
def test_training_lowers_the_loss(tmp_path, loss):
    # sp_margin is quadratic in the margin, so its gradient is unbounded: at lr 0.05 it diverges without clipping
    clip = ['--clip-grad', '5'] if loss == 'sp_margin' else []
    out = run_train(tmp_path, loss, '--loss', loss, '--epochs', '3', *clip)
    rows = read_metrics(out / 'metrics.jsonl')
    assert [r['epoch'] for r in rows] == [1, 2, 3]
    assert rows[-1]['train_loss'] < rows[0]['train_loss'] - 0.05
    assert rows[-1]['train_acc'] > 25  # 10 classes: chance is 10
    assert os.readlink(out / 'last') == 'epoch-0003'
    assert sorted(p.name for p in out.glob('epoch-*')) == sorted({os.readlink(out / 'last'), os.readlink(out / 'best')})


def test_clip_grad_logs_the_gradient_norm_and_how_often_it_clipped(tmp_path):
    tight = read_metrics(run_train(tmp_path, 'tight', '--epochs', '1', '--clip-grad', '1e-3') / 'metrics.jsonl')[0]
    assert tight['clipped_pct'] == 100 and tight['grad_norm_max'] >= tight['grad_norm_mean'] > 1e-3
    loose = run_train(tmp_path, 'loose', '--epochs', '1', '--clip-grad', '1e6', '--seed', '3')
    row = read_metrics(loose / 'metrics.jsonl')[0]
    assert row['clipped_pct'] == 0 and 0 < row['grad_norm_mean'] <= row['grad_norm_max'] < 1e6
    assert row['grad_nonfinite_pct'] == 0
    plain = run_train(tmp_path, 'plain', '--epochs', '1', '--seed', '3')
    assert not ({'grad_norm_mean', 'grad_norm_max', 'clipped_pct', 'grad_nonfinite_pct'}
                & set(read_metrics(plain / 'metrics.jsonl')[0]))
    # a clip that never acts leaves training unchanged: the same weights as without it
    assert (loose / 'last' / 'model.safetensors').read_bytes() == (plain / 'last' / 'model.safetensors').read_bytes()


def test_gradient_norm_log_counts_every_step_and_keeps_non_finite_norms_apart():
    from sp_timm.train.metrics import accumulate_grad_norm, grad_norm_metrics, GRAD_STATS
    stats = torch.zeros(GRAD_STATS)
    assert grad_norm_metrics(stats) == {}  # an epoch without steps
    for norm in (torch.tensor(2.0), torch.tensor(8.0), torch.tensor(float('inf')), 4.0, torch.tensor(float('nan'))):
        accumulate_grad_norm(stats, norm, max_norm=5.0)
    assert grad_norm_metrics(stats) == {'clipped_pct': 20.0, 'grad_nonfinite_pct': 40.0,
                                         'grad_norm_mean': pytest.approx(14 / 3), 'grad_norm_max': 8.0}
    diverged = torch.zeros(GRAD_STATS)
    accumulate_grad_norm(diverged, torch.tensor(float('nan')), max_norm=5.0)
    assert grad_norm_metrics(diverged) == {'clipped_pct': 0.0, 'grad_nonfinite_pct': 100.0}


def test_run_record_rebuilds_the_model(tmp_path):
    from sp_timm.model_source import create_model_from_checkpoint
    from sp_timm.checkpoint import read_run_record
    out = run_train(tmp_path, 'rec', '--loss', 'sp_ce', '--sp-pstar', '0.8', '--epochs', '1')
    record = read_run_record(out / 'last')
    assert record.loss == 'sp_ce' and record.loss_params == {'pstar': 0.8}
    assert record.model == 'resnet20_cifar' and record.num_classes == 10 and record.dataset == 'digits'
    assert len(record.model_args['input_mean']) == 3 and record.train_class_counts and record.classes[3] == '3'
    model, _ = create_model_from_checkpoint(out)  # the run folder resolves to its last checkpoint
    weights = load_file(str(out / 'last' / 'model.safetensors'))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize('mode', ['pgd', 'trades'])
def test_adversarial_training_runs_and_attack_hurts(tmp_path, mode):
    out = run_train(tmp_path, mode, '--adv', mode, '--epochs', '3', '--adv-eps', '16/255', '--adv-steps', '3',
                    '--adv-step-size', '8/255', '--adv-val-examples', '64')
    rows = read_metrics(out / 'metrics.jsonl')
    assert all('val_adv_acc' in r and 'train_adv_acc' in r for r in rows)
    assert rows[-1]['val_adv_acc'] < rows[-1]['val_acc']
    assert rows[-1]['train_loss'] < rows[0]['train_loss']


def test_pgd_stays_in_the_ball_and_box_and_restores_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3), torch.nn.Dropout(0.5)).train()
    x, y = torch.rand(8, 3, 2, 2), torch.randint(0, 3, (8,))
    for norm, eps in (('Linf', 0.1), ('L2', 0.5)):
        adv = pgd_attack(model, x, y, eps, eps / 2, 5, norm)
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
        assert (size <= eps + 1e-6).all() and size.max() > eps / 2
        assert adv.min() >= 0 and adv.max() <= 1
        assert model.training
    eval_model = torch.nn.Linear(12, 3).eval()
    clean_loss = torch.nn.functional.cross_entropy(eval_model(x.flatten(1)), y)
    adv = pgd_attack(torch.nn.Sequential(torch.nn.Flatten(), eval_model), x, y, 0.1, 0.05, 10, random_start=False)
    assert torch.nn.functional.cross_entropy(eval_model(adv.flatten(1)), y) > clean_loss
    assert torch.allclose(project_delta(torch.full((1, 4), 3.0), 2.0, 'L2').norm(), torch.tensor(2.0))


class _HalfLinear(torch.nn.Module):
    """A linear classifier computed in fp16 (as under fp16 autocast), confident in class 0: CE's gradient at the
    logits is ~1e-5, its batch mean's ~1e-8 -- below fp16's smallest number."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 10).half()
        with torch.no_grad():
            self.linear.weight.normal_(0, 1)
            self.linear.bias.zero_()
            self.linear.bias[0] = 14.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.half())


def test_pgd_steps_where_fp16_would_underflow_a_mean_loss_and_is_exact_in_fp32():
    torch.manual_seed(0)
    x, y = torch.rand(512, 12) * 0.1, torch.zeros(512, dtype=torch.long)
    adv = pgd_attack(_HalfLinear(), x, y, 0.1, 0.05, 1, random_start=False)
    assert (adv != x).any(1).all()  # a mean loss's gradient underflows to 0 here: sign(0) = no step
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(100, 3, 2, 2), torch.randint(0, 3, (100,))
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x.requires_grad_(True)), y), x)
    by_hand = (x.detach() + (0.05 * grad.sign()).clamp(-0.1, 0.1)).clamp(0, 1)
    assert torch.equal(pgd_attack(model, x.detach(), y, 0.1, 0.05, 1, random_start=False), by_hand)
    from sp_timm.threat.pgd import _mean_to_sum_scale
    assert [_mean_to_sum_scale(b) for b in (1, 2, 100, 128, 129)] == [1.0, 2.0, 128.0, 128.0, 256.0]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def test_bad_input_is_refused_and_output_untouched(tmp_path, capsys):
    out = run_train(tmp_path, 'kept', '--epochs', '1')
    before = _digest(out)
    attempts = [
        (['--epochs', '1'], 'already holds a run'),  # same --output without --resume
        (['--epochs', '1', '--loss', 'sp_lss'], "Did you mean 'sp_ls'"),
        (['--epochs', '1', '--model', 'resnet32_cifr'], 'resnet32_cifar'),
        (['--epochs', '1', '--sp-pstar', '1.5'], 'pstar must lie in (0.5, 1)'),
    ]
    for flags, message in attempts:
        with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
            train(parse_train_args(SMALL + ['--output', str(out), *flags]))
    with pytest.raises(SystemExit):
        parse_train_args(SMALL + ['--bogus-flag', '1'])
    with pytest.raises(SystemExit):
        parse_train_args(SMALL + ['--adv', 'pgd', '--adv-eps', '8'])  # 8 instead of 8/255
    assert 'write 8/255, not 8' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_train_args(SMALL + ['--adv', 'pgd', '--adv-eps', '4'])  # the hint names the value given
    assert 'write 4/255, not 4' in capsys.readouterr().err
    with pytest.raises(CheckpointError, match='does not exist'):
        train(parse_train_args(SMALL + ['--epochs', '2', '--resume', str(tmp_path / 'missing')]))
    assert _digest(out) == before


def test_corrupt_checkpoint_is_refused(tmp_path):
    out = run_train(tmp_path, 'corrupt', '--epochs', '1')
    weights = out / 'last' / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a tensor: the file still parses, the recorded hash does not match
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='SHA-256'):
        load_training_state(out / 'last')
    with pytest.raises(CheckpointError, match='SHA-256'):
        train(parse_train_args(SMALL + ['--epochs', '2', '--resume-override', '--resume', str(out)]))
    weights.write_bytes(b'not a safetensors file')
    (out / 'last' / 'state.json').unlink()
    with pytest.raises(CheckpointError, match='incomplete'):
        train(parse_train_args(SMALL + ['--epochs', '2', '--resume-override', '--resume', str(out)]))


def test_config_yaml_sets_defaults_and_flags_win(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('epochs: 7\nadv_eps: 4/255\nloss: sp_ce\n')
    args = parse_train_args(['--config', str(config), '--dataset', 'digits', '--epochs', '3'])
    assert (args.epochs, args.loss) == (3, 'sp_ce') and abs(args.adv_eps - 4 / 255) < 1e-12
    config.write_text('epoch: 7\n')
    with pytest.raises(SystemExit):
        parse_train_args(['--config', str(config), '--dataset', 'digits'])


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def _weights(folder: Path) -> dict:
    return load_file(str(folder / 'last' / 'model.safetensors'))


@pytest.mark.slow
@pytest.mark.parametrize('ema', [False, True], ids=['plain', 'model-ema'])
def test_kill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, ema):
    """kill -9 mid-epoch, then --resume: the weights (and with --model-ema and its warmup, whose decay depends on the
    update count, the EMA weights and their validation) end bit-identical to an uninterrupted run's."""
    flags = SMALL + ['--epochs', '3', '--train-examples', '320', '--deterministic', '--loss', 'sp_ls']
    flags += ['--model-ema', '--model-ema-decay', '0.9', '--model-ema-warmup'] if ema else []
    # alongside, on the other core
    full = subprocess.Popen(CLI + ['train', *flags, '--output', str(tmp_path / 'full')], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_dir = tmp_path / 'killed'
    proc = subprocess.Popen(CLI + ['train', *flags, '--output', str(killed_dir)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed_dir / 'last').exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, 'the run ended before it could be killed mid-epoch'
    done = int(os.readlink(killed_dir / 'last').split('-')[1])
    assert 1 <= done < 3
    assert full.wait(timeout=600) == 0, full.stderr.read()[-2000:]
    resumed = subprocess.run(CLI + ['train', *flags, '--resume', str(killed_dir)], env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f'resuming after epoch {done}' in resumed.stdout
    for filename in ['model.safetensors'] + (['model_ema.safetensors'] if ema else []):
        a, b = load_file(str(tmp_path / 'full' / 'last' / filename)), load_file(str(killed_dir / 'last' / filename))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), filename
    full_rows, resumed_rows = (read_metrics(tmp_path / 'full' / 'metrics.jsonl'),
                               read_metrics(killed_dir / 'metrics.jsonl'))
    assert [r['epoch'] for r in resumed_rows] == [1, 2, 3]
    if ema:
        assert [r['ema_val_loss'] for r in resumed_rows] == [r['ema_val_loss'] for r in full_rows]
    assert not list(killed_dir.glob('.*tmp'))  # no half-written checkpoint left behind


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    if shutil.which('accelerate', path=str(Path(sys.executable).parent)) is None:
        pytest.skip('accelerate launcher not installed next to this interpreter')
    launcher = str(Path(sys.executable).parent / 'accelerate')
    # test_vit has LayerNorm only: no batch statistics, so the two halves of a batch give the full batch's gradient
    flags = ['--dataset', 'digits', '--model', 'test_vit', '--model-kwargs', 'img_size=32', '--epochs', '2',
             '--train-examples', '256', '--val-examples', '101', '--no-aug', '--no-progress', '--lr', '0.01',
             '--loss', 'sp_ls', '--sched', 'step', '--weight-decay', '0']
    one = subprocess.run(CLI + ['train', *flags, '--batch-size', '32', '--output', str(tmp_path / 'one')],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([launcher, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'sp_timm.train', *flags,
                          '--batch-size', '16', '--output', str(tmp_path / 'two')],
                         env=dict(_env(), ACCELERATE_USE_CPU='1'), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert '2 process(es) x batch 16 = global batch 32' in two.stdout
    rows_one, rows_two = (read_metrics(tmp_path / 'one' / 'metrics.jsonl'),
                          read_metrics(tmp_path / 'two' / 'metrics.jsonl'))
    for r1, r2 in zip(rows_one, rows_two):
        assert r1['train_loss'] == pytest.approx(r2['train_loss'], rel=1e-4)
        assert r1['val_loss'] == pytest.approx(r2['val_loss'], rel=1e-4)
        assert abs(r1['val_acc'] - r2['val_acc']) <= 100 / 101 + 1e-9  # at most one of the 101 points may flip
    a, b = _weights(tmp_path / 'one'), _weights(tmp_path / 'two')
    assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3) for k in a)


def test_a_failed_run_finishes_its_trackers(tmp_path, monkeypatch):
    """A run that fails after it started logging still closes its trackers (tensorboard's files get the epochs
    logged so far): a launched process leaves without the interpreter's finalization."""
    from accelerate.tracking import GeneralTracker
    import sp_timm.train.trainer as trainer_module

    class Recorder(GeneralTracker):
        name, requires_logging_directory = 'recorder', False

        def __init__(self):
            super().__init__()
            self.logged, self.finished = [], 0

        @property
        def tracker(self):
            return self

        def log(self, values, step=None, **kwargs):
            self.logged.append(step)

        def finish(self):
            self.finished += 1

    recorder = Recorder()
    monkeypatch.setattr(trainer_module, 'default_trackers', lambda: recorder)
    saves = []

    def save_then_fail(self, epoch, metrics):
        saves.append(epoch)
        if len(saves) == 2:
            raise OSError('No space left on device')
    monkeypatch.setattr(trainer_module.Trainer, 'save', save_then_fail)
    with pytest.raises(OSError, match='No space'):
        run_train(tmp_path, 'run', '--epochs', '3')
    assert recorder.logged == [1] and recorder.finished == 1


@pytest.mark.parametrize('flags, message', [
    (['--num-classes', '0'], '--num-classes must be >= 2'), (['--mixup', '-1'], '--mixup is an alpha >= 0'),
    (['--cutmix', '-0.5'], '--cutmix is an alpha >= 0'), (['--mixup-prob', '2'], 'probability in [0, 1]'),
    (['--adv', 'pgd', '--adv-norm', 'L2', '--adv-eps', '100'], 'exceeds the diameter'),
    (['--model-kwargs', 'foo'], 'takes key=value pairs'), (['--model-kwargs', 'bogus=1'], 'does not accept'),
    (['--model-kwargs', 'checkpoint_path=/tmp/x.pth'], 'may not name files')])
def test_train_flags_are_checked_at_parse_time(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(TINY + ['--model', 'small_cnn_cifar', *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and 'Traceback' not in err


def test_train_output_that_is_a_file_is_refused_before_training(tmp_path):
    target = tmp_path / 'file'
    target.write_text('keep')
    for output in (target, target / 'sub'):
        result = subprocess.run(CLI + ['train', *TINY, '--model', 'small_cnn_cifar', '--output', str(output)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and 'Traceback' not in result.stderr and 'a file' in result.stderr
        assert 'epoch' not in result.stdout  # refused before any training
    assert target.read_text() == 'keep' and sorted(tmp_path.iterdir()) == [target]


def test_timm_task_classification_task_with_an_sp_criterion():
    task_module = pytest.importorskip('timm.task', reason='this timm has no timm.task (timm >= 1.0.31)')
    import timm
    import sp_timm
    torch.manual_seed(0)
    model = timm.create_model('resnet20_cifar', num_classes=4)
    criterion = sp_timm.create_classification_loss('sp_margin', sp_margin=1.0)
    task = task_module.ClassificationTask(model, criterion=criterion, verbose=False)
    assert task.criterion is criterion and task.get_trainable_module() is model
    x = torch.rand(16, 3, 32, 32)
    y = torch.arange(16) % 4
    x += y.view(-1, 1, 1, 1) * 0.2  # separable classes
    optimizer = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    task.train()
    losses = []
    for _ in range(8):
        result = task(x, y)
        assert set(result) >= {'loss', 'output'} and result['output'].shape == (16, 4)
        assert torch.allclose(result['loss'], criterion(result['output'], y))  # the SP criterion, not timm's default
        optimizer.zero_grad()
        result['loss'].backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
        optimizer.step()
        losses.append(result['loss'].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.25, losses  # measured: 2.45 -> 0.06
