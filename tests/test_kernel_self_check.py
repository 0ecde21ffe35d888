""" The Triton kernel's first-use self-check (issue 35): the right kernel passes every member, dtype and block
size with room to spare; a kernel that computes something else (a wrong constant, or a few wrong rows) is caught,
warns once naming the member, dtype and K, and the torch code serves that variant from then on; kernel='triton'
raises instead. Forced on CPU in Triton's interpreter (``TRITON_INTERPRET=1``, set before the kernel is defined,
hence a subprocess). """
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sp_timm import create_loss
from sp_timm.losses._kernel_check import self_check_batch
from sp_timm.losses._kernel_support import triton_available

from test_losses import CONFIGS, MEMBERS

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_available(), reason='triton is not installed')

SELF_CHECK = textwrap.dedent('''
    import sys, warnings, torch
    from sp_timm import create_loss
    from sp_timm.losses import _kernel_check, _triton
    configs = eval(sys.argv[1])

    def step(loss_fn, z, y):
        z = z.clone().requires_grad_(True)
        loss = loss_fn(z, y)
        loss.backward()
        return loss.detach(), z.grad

    torch.manual_seed(0)
    # 1. the right kernel: every config, K in {2, 10, 100, 1000}, three dtypes, CHECK on and off
    for name, kwargs in configs:
        for num_classes in (2, 10, 100, 1000):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                for validate in ('async', 'off'):
                    step(create_loss(name, kernel='triton', validate=validate, **kwargs),
                         torch.randn(5, num_classes).to(dtype), torch.randint(0, num_classes, (5,)))
    verdicts = _kernel_check.kernel_verdicts()
    assert len(verdicts) == len(configs) * 4 * 3 * 2, len(verdicts)
    worst = max(v.worst_ratio for v in verdicts.values())
    assert all(v.passed for v in verdicts.values()), [v.detail for v in verdicts.values() if not v.passed][:3]
    print(f'right kernel: {len(verdicts)} variants, worst error {worst:.3g} of its tolerance')
    # the same variant again: no new check
    step(create_loss('sp_margin', kernel='triton'), torch.randn(5, 10), torch.randint(0, 10, (5,)))
    assert len(_kernel_check.kernel_verdicts()) == len(verdicts)

    # 2. a wrong constant inside the kernel (the formula's parameter 2 % off): caught for every member
    real_constants = _triton._kernel_constants
    _triton._kernel_constants = lambda *args: tuple(1.02 * v for v in real_constants(*args))
    _kernel_check.clear_kernel_verdicts()
    z, y = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 9])
    for name, kwargs in configs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            loss_fn = create_loss(name, compile=False, **kwargs)
            got = loss_fn._kernel_closed_form(z, y, False)
            again = create_loss(name, compile=False, **kwargs)._kernel_closed_form(z, y, False)  # no second warning
        messages = [str(w.message) for w in caught if 'disagrees with the torch code' in str(w.message)]
        assert len(messages) == 1, (name, kwargs, [str(w.message) for w in caught])
        assert f"'{name}'" in messages[0] and 'float32 logits, K = 10' in messages[0], messages[0]
        assert "using the torch code (kernel='torch')" in messages[0], messages[0]
        expected = create_loss(name, kernel='torch', compile=False, **kwargs)._closed_form(z, y, False)
        for result in (got, again):
            torch.testing.assert_close(result[0], expected[0])
            torch.testing.assert_close(result[1], expected[1])
        try:
            create_loss(name, kernel='triton', **kwargs)(z.clone().requires_grad_(True), y)
        except RuntimeError as err:
            assert 'disagrees with the torch code' in str(err) and "kernel='torch'" in str(err), str(err)
        else:
            raise AssertionError(f'{name} {kwargs}: kernel="triton" served a kernel that failed its check')
    wrong = _kernel_check.kernel_verdicts()
    assert wrong and not any(v.passed for v in wrong.values())
    print(f'wrong constant: {len(wrong)} variants caught, '
          f'smallest error {min(v.worst_ratio for v in wrong.values()):.3g}'
          ' of its tolerance')
    _triton._kernel_constants = real_constants

    # 3. a kernel right on every row but one (as a miscompiled edge would be): caught
    real_kernel = _triton._sp_rows_kernel

    class OneRowWrong:
        def __getitem__(self, grid):
            def launch(z, y, loss, grad, *args, **options):
                real_kernel[grid](z, y, loss, grad, *args, **options)
                grad[grad.shape[0] // 2] *= 1.001  # one row, 0.1 %
            return launch
    _triton._sp_rows_kernel = OneRowWrong()
    _kernel_check.clear_kernel_verdicts()
    for name in sorted({n for n, _ in configs}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            create_loss(name, compile=False)._kernel_closed_form(torch.randn(64, 100),
                                                                 torch.zeros(64, dtype=torch.long), True)
        assert any('disagrees' in str(w.message) and 'at row 24' in str(w.message) for w in caught), \\
            (name, [str(w.message) for w in caught])
    _triton._sp_rows_kernel = real_kernel
    print('self-check tests passed')
''')


@needs_triton
def test_self_check_passes_the_kernel_and_catches_wrong_ones_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, '-c', SELF_CHECK, repr(CONFIGS)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    assert 'self-check tests passed' in proc.stdout, proc.stdout


@pytest.mark.parametrize('name', MEMBERS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('num_classes', [2, 10, 1000])
def test_self_check_batch_reaches_the_edges(name, dtype, num_classes):
    """Random rows, rows at the stationary point, confident and confidently wrong rows, a large common offset and
    extreme spread; labels 0 and K-1; finite in the dtype; the same batch every time."""
    loss_fn = create_loss(name)
    logits, labels = self_check_batch(loss_fn, num_classes, dtype, torch.device('cpu'))
    assert logits.shape == (48, num_classes) and logits.dtype == dtype and torch.isfinite(logits).all()
    assert {0, num_classes - 1} <= set(labels.tolist())
    z = logits.double()
    margins = z.gather(1, labels[:, None]).squeeze(1) - z.scatter(1, labels[:, None], float('-inf')).amax(1)
    stationary = loss_fn.stationary_margin(num_classes)
    if dtype == torch.float32:  # in the low-precision dtypes the rounding moves the point itself
        assert (margins[8:16] - stationary).abs().max() < 0.05
    assert (margins[16:24] > 10).all() and (margins[24:32] < -50).all()
    assert z[32:40].abs().min() > 1e3 and z[40:48].abs().max() > 1e3
    again, _ = self_check_batch(loss_fn, num_classes, dtype, torch.device('cpu'))
    assert torch.equal(logits, again)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name,kwargs', CONFIGS)
def test_the_kernel_passes_its_self_check_on_this_gpu(name, kwargs):
    """On real hardware: every block size from K = 2 to 8192, three dtypes, a small and a large batch (their
    different rows per program): each variant is checked once, passes, and then serves (kernel=None)."""
    from sp_timm.losses._kernel_check import clear_kernel_verdicts, kernel_verdicts
    clear_kernel_verdicts()
    torch.manual_seed(0)
    for num_classes in (2, 10, 100, 1000, 8192):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for batch in (3, 512):
                loss_fn = create_loss(name, **kwargs)
                z = torch.randn(batch, num_classes, device='cuda').to(dtype).requires_grad_(True)
                assert loss_fn._uses_kernel(z)
                loss_fn(z, torch.randint(0, num_classes, (batch,), device='cuda')).backward()
    verdicts = kernel_verdicts()
    assert len(verdicts) >= 5 * 3 and all(v.variant.device.startswith('cuda') for v in verdicts.values())
    failed = [(v.num_classes, str(v.variant.dtype), v.detail) for v in verdicts.values() if not v.passed]
    assert not failed, failed
