""" The SP losses' Triton kernel (issue 17): equal to each member's closed form, validation flags, dispatch.

Without a GPU the kernel runs in Triton's CPU interpreter (``TRITON_INTERPRET=1``, which must be set before the
kernel is defined, hence a subprocess); with CUDA the default path is checked against the float64 reference.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sp_timm import create_loss
from sp_timm.losses._kernel_support import triton_available

from test_losses import CONFIGS, MEMBERS

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_available(), reason='triton is not installed')

INTERPRETED_CHECK = textwrap.dedent('''
    import sys, torch
    from sp_timm import create_loss
    configs = eval(sys.argv[1])

    def run(name, kwargs, logits, target, reduction, **options):
        z = logits.clone().requires_grad_(True)
        loss_fn = create_loss(name, reduction=reduction, **options, **kwargs)
        loss = loss_fn(z, target)
        weights = torch.arange(1, logits.shape[0] + 1, dtype=loss.dtype)
        (loss * weights if reduction == 'none' else loss).sum().backward()
        return loss.detach(), z.grad, loss_fn

    torch.manual_seed(0)
    for name, kwargs in configs:
        for num_classes, batch in ((2, 7), (10, 33), (100, 70)):  # (100, 70): 3 programs of 32 rows
            logits = 4 * torch.randn(batch, num_classes)
            target = torch.randint(0, num_classes, (batch,))
            logits[0, 0], target[0] = 40.0, 0  # far past the stationary point
            logits[1, 1], target[1] = -40.0, 1  # far on the wrong side
            for reduction in ('mean', 'sum', 'none'):
                kernel = run(name, kwargs, logits, target, reduction, kernel='triton', validate='async')
                assert kernel[2]._uses_kernel(logits), name
                kernel[2].check_inputs()  # good inputs: no error
                torch_path = run(name, kwargs, logits, target, reduction, kernel='torch', compile=False)
                exact = run(name, kwargs, logits.double(), target, reduction, fused=False, compile=False)
                for got, ref in zip(kernel[:2], torch_path[:2]):
                    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
                    torch.testing.assert_close(got, ref, rtol=2e-5, atol=2e-5)
                for got, ref in zip(kernel[:2], exact[:2]):
                    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)
        for dtype in (torch.bfloat16, torch.float16):
            for reduction in ('mean', 'none'):
                half = run(name, kwargs, logits.to(dtype), target, reduction, kernel='triton')
                ref = run(name, kwargs, logits.to(dtype).double(), target, reduction, fused=False, compile=False)
                assert half[1].dtype == dtype and half[0].dtype == torch.float32
                torch.testing.assert_close(half[0].double(), ref[0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(half[1].double(), ref[1], rtol=1e-2, atol=1e-6)
        # float16 with AMP's loss scale: the gradient is scaled before its cast, so p - e_y over B keeps its digits
        z = logits.half().requires_grad_(True)
        (create_loss(name, kernel='triton', **kwargs)(z, target) * 65536.0).backward()
        z_ref = logits.half().double().requires_grad_(True)
        (create_loss(name, fused=False, compile=False, **kwargs)(z_ref, target) * 65536.0).backward()
        torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=2e-3, atol=1e-2)
        # strided labels, strided logits, a large common offset, 'full' and 'off' validation, one row per program
        wide = 3 * torch.randn(3, 5000)
        pairs = [(logits[::2], torch.stack([target, target], 1)[::2, 0]), (logits.t().contiguous().t(), target),
                 (logits + 1000.0, target), (wide, torch.tensor([0, 4999, 17]))]
        for z, y in pairs:
            for validate in ('full', 'off'):
                got = run(name, kwargs, z, y, 'none', kernel='triton', validate=validate)
                exact = run(name, kwargs, z.double(), y, 'none', fused=False, compile=False)
                torch.testing.assert_close(got[0].double(), exact[0], rtol=2e-5, atol=5e-5)
                torch.testing.assert_close(got[1].double(), exact[1], rtol=2e-5, atol=2e-5)
    for name in {n for n, _ in configs}:
        nan = torch.randn(4, 5)
        nan[2, 1] = float('nan')
        late = torch.zeros(70, dtype=torch.long)
        late[69] = 100  # a bad label in the last of 3 programs
        for logits, target, message in ((torch.randn(4, 5), torch.tensor([0, 1, 2, 5]), 'labels must lie in [0, 4]'),
                                        (torch.randn(70, 100), late, 'labels must lie in [0, 99]'),
                                        (torch.randn(4, 5), torch.tensor([0, -1, 2, 3]), 'labels must lie'),
                                        (nan, torch.tensor([0, 1, 2, 3]), 'NaN or Inf in 1 of 4 rows')):
            loss_fn = create_loss(name, kernel='triton', validate='async')
            loss_fn(logits.clone().requires_grad_(True), target)  # no out-of-bounds read on the bad label
            try:
                loss_fn.check_inputs()
            except ValueError as err:
                assert message in str(err), (name, str(err))
            else:
                raise AssertionError(f'{name}: no error for {message}')
            loss_fn(torch.randn(*logits.shape, requires_grad=True), torch.zeros_like(target))  # reported once
            loss_fn.check_inputs()
    print('interpreted kernel checks passed')
''')


@needs_triton
def test_kernel_equals_closed_form_and_reference_in_the_interpreter():
    """Every member and parameter edge, K in {2, 10, 100}, batches that do not fill a block, every reduction:
    the kernel's loss and gradient equal the float32 torch path and the float64 autograd reference; bfloat16 and
    float16 logits give a gradient of their dtype, scaled before the cast; strided inputs, a large common offset,
    K > 4096, 'full' and 'off' validation; bad labels (also in the last of several programs) and NaN logits raise
    the usual ValueError at check_inputs()."""
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, '-c', INTERPRETED_CHECK, repr(CONFIGS)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'interpreted kernel checks passed' in proc.stdout


def test_kernel_option_is_checked_and_cpu_defaults_to_torch():
    with pytest.raises(ValueError, match="kernel must be one of"):
        create_loss('sp_ls', kernel='cuda')
    logits, target = torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2])
    for name in MEMBERS:
        loss_fn = create_loss(name)
        assert not loss_fn._uses_kernel(logits)  # kernel=None on CPU: the torch code
        assert loss_fn.kernel_params()[0] == name
        loss_fn(logits, target).backward()
    if triton_available() and not os.environ.get('TRITON_INTERPRET'):
        with pytest.raises(ValueError, match="kernel='triton' runs on CUDA tensors.*TRITON_INTERPRET=1"):
            create_loss('sp_margin', kernel='triton')(logits, target)
    wide = torch.randn(2, 9000)
    assert not create_loss('sp_ls', kernel='triton')._uses_kernel(wide)  # wider than a block: the torch code
    assert not create_loss('sp_ls', kernel='triton')._uses_kernel(logits.double())


def test_a_subclass_that_changes_the_math_does_not_use_the_kernel():
    from sp_timm.losses.sp_margin import SPMargin

    class Doubled(SPMargin):
        def prob_loss(self, log_p, log_1mp):
            return 2 * super().prob_loss(log_p, log_1mp)

    assert not Doubled(kernel='triton')._uses_kernel(torch.randn(3, 4))
    assert 'kernel_params' not in vars(Doubled) and SPMargin().kernel_params() == ('sp_margin', 2.0, 0.0)


@needs_triton
def test_a_failing_kernel_hands_over_to_the_torch_code(monkeypatch):
    """kernel=None: a kernel that cannot build or launch warns once and the torch code computes the same;
    kernel='triton' raises instead."""
    from sp_timm.losses import _triton

    def broken(*args, **kwargs):
        raise RuntimeError('Failed to find C compiler')
    monkeypatch.setattr(_triton, 'sp_rows', broken)
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    expected = create_loss('sp_margin', kernel='torch', compile=False)._closed_form(logits, target, False)
    loss_fn = create_loss('sp_margin', compile=False)
    with pytest.warns(RuntimeWarning, match='Triton kernel failed.*C compiler.*torch code'):
        got = loss_fn._kernel_closed_form(logits.bfloat16(), target, False)
    assert loss_fn._kernel_failed and not loss_fn._uses_kernel(logits)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-2, atol=1e-2)
    assert got[1].dtype == torch.float32
    with pytest.raises(RuntimeError, match='C compiler'):
        create_loss('sp_margin', kernel='triton')._kernel_closed_form(logits, target, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name,kwargs', CONFIGS)
def test_cuda_default_runs_the_kernel_and_equals_the_reference(name, kwargs):
    torch.manual_seed(13)
    logits = 4 * torch.randn(300, 100, dtype=torch.float64)
    labels = torch.randint(0, 100, (300,))
    reference_z = logits.clone().requires_grad_(True)
    reference = create_loss(name, fused=False, **kwargs)(reference_z, labels)
    reference.backward()
    loss_fn = create_loss(name, **kwargs)
    z = logits.float().cuda().requires_grad_(True)
    assert loss_fn._uses_kernel(z)
    loss = loss_fn(z, labels.cuda())
    loss.backward()
    torch.testing.assert_close(loss.double().cpu(), reference.detach(), rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(z.grad.double().cpu(), reference_z.grad, rtol=2e-5, atol=2e-5)
    loss_fn(z, torch.full((300,), 100, device='cuda'))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 99\]'):
        loss_fn.check_inputs()
