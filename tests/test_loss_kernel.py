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
        for num_classes, batch in ((2, 7), (10, 33), (100, 5)):
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
        half = run(name, kwargs, logits.bfloat16(), target, 'mean', kernel='triton')
        ref = run(name, kwargs, logits.bfloat16().double(), target, 'mean', fused=False, compile=False)
        assert half[1].dtype == torch.bfloat16 and half[0].dtype == torch.float32
        torch.testing.assert_close(half[0].double(), ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(half[1].double(), ref[1], rtol=1e-2, atol=1e-3)
    for name in {n for n, _ in configs}:
        nan = torch.randn(4, 5)
        nan[2, 1] = float('nan')
        for logits, target, message in ((torch.randn(4, 5), torch.tensor([0, 1, 2, 5]), 'labels must lie in [0, 4]'),
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
            loss_fn(torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3]))  # reported once
            loss_fn.check_inputs()
    print('interpreted kernel checks passed')
''')


@needs_triton
def test_kernel_equals_closed_form_and_reference_in_the_interpreter():
    """Every member and parameter edge, K in {2, 10, 100}, batches that do not fill a block, every reduction:
    the kernel's loss and gradient equal the float32 torch path and the float64 autograd reference; bfloat16
    logits give a bfloat16 gradient; bad labels and NaN logits raise the usual ValueError at check_inputs()."""
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
