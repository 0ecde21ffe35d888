""" One command for a lent GPU: sp-timm's hot paths measured side by side with their baselines, in one process.

    PYTHONPATH=.:<pyautoattack dir> python benchmarks/gpu_suite.py --out benchmarks/results/gpu [--budget-s 360]
    python benchmarks/gpu_suite.py --smoke --out /tmp/suite     # tiny CPU mode (the test runs it)

Sections (``--sections``; each in its own try/except: an error is recorded in the JSON and the suite goes on):

* ``env``: device, versions, peak bf16 matmul rate (measured: a large bf16 GEMM).
* ``loss``: forward + backward of ``F.cross_entropy`` and every SP member, B = 512, K in {10, 100, 1000}: the
  Triton kernel (the CUDA default, ``kernel='triton'``; CUDA only), and the torch code compiled and eager
  (``kernel='torch'``), timed with CUDA events; the figure is the median over rounds of (member time / CE time of
  the same round).
* ``train``: sp-timm's ``Trainer.train_epoch`` against a minimal hand loop (same model, loss, clip, optimizer,
  bf16 autocast, channels_last, pre-made CIFAR-shaped batches on the device): standard, PGD-10, TRADES-10 at
  batch 128 and 512. Images/s, ratio, and MFU = images/s x FLOP per image (counted with
  ``torch.utils.flop_counter`` on one forward + backward) / the measured bf16 matmul rate.
* ``compile``: the trainer eager vs ``--torchcompile`` (standard training, batch 128), after a warm-up pass
  that includes the compilation (its time is reported too).
* ``autoattack``: AutoAttack standard through ``sp_timm.eval.evaluate_points`` (AutoAttack only) against
  pyautoattack's ``run_standard_evaluation`` on the same model and points.
* ``demo``: ``sp-timm demo --quick`` in a subprocess, wall time and exit code (not in ``--smoke`` unless named).

Every measurement is a few warm-up steps then a few timed steps, never whole epochs; a total time budget
(``--budget-s``, default 360 s) skips what no longer fits. Writes ``suite.json`` and ``suite.md`` to ``--out``.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

SECTIONS = ('env', 'loss', 'train', 'compile', 'autoattack', 'demo')
MEMBERS = ('sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin')
_START = time.perf_counter()


def log(message: str) -> None:
    print(f'[gpu_suite {time.perf_counter() - _START:6.1f}s] {message}', flush=True)


class Settings:
    """The sizes of a run: the GPU plan, or the tiny ``--smoke`` plan for a CPU."""

    def __init__(self, smoke: bool, device: torch.device, budget_s: float):
        self.smoke, self.device, self.deadline = smoke, device, _START + budget_s
        self.cuda = device.type == 'cuda'
        self.loss_batch, self.loss_classes = (32, (10,)) if smoke else (512, (10, 100, 1000))
        self.loss_rounds, self.loss_iters = (2, 2) if smoke else (10, 20)
        self.compile_backend = 'eager' if smoke else 'inductor'  # smoke: dynamo tracing only, no code generation
        self.model = 'small_cnn_cifar' if smoke else 'wrn28_10_cifar'
        self.batches = (8,) if smoke else (128, 512)
        self.adv_steps = 1 if smoke else 10
        self.rounds = 1 if smoke else 2
        self.aa_model, self.aa_points = ('small_cnn_cifar', 16) if smoke else ('preact_resnet18_cifar', 128)
        self.results: Dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def steps(self, mode: str, batch: int) -> int:
        """Timed batches per pass: about 2 s of GPU work per pass at the issue's throughputs."""
        if self.smoke:
            return 2
        rate = {'standard': 8000.0, 'pgd': 1000.0, 'trades': 900.0}[mode]
        return max(2, min(30, round(2.0 * rate / batch)))


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], iters: int, device: torch.device) -> float:
    """Seconds per call of ``fn``: CUDA events on a GPU (no host sync inside the loop), a wall clock elsewhere."""
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    begin = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - begin) / iters


def section_env(cfg: Settings) -> Dict[str, Any]:
    import timm
    info: Dict[str, Any] = {'python': platform.python_version(), 'torch': torch.__version__, 'timm': timm.__version__,
                            'device': str(cfg.device), 'smoke': cfg.smoke, 'threads': torch.get_num_threads()}
    if cfg.cuda:
        info['gpu'] = torch.cuda.get_device_name(cfg.device)
    info['peak_bf16_tflops'] = measured_matmul_tflops(cfg)
    return info


def measured_matmul_tflops(cfg: Settings) -> float:
    """The bf16 (CPU smoke: float32) rate of a large square GEMM, the denominator of MFU."""
    size, dtype = (8192, torch.bfloat16) if cfg.cuda else (256, torch.float32)
    a = torch.randn(size, size, device=cfg.device, dtype=dtype)
    b = torch.randn(size, size, device=cfg.device, dtype=dtype)
    time_call(lambda: a @ b, 3, cfg.device)
    seconds = time_call(lambda: a @ b, 10 if cfg.cuda else 2, cfg.device)
    return 2 * size ** 3 / seconds / 1e12


def section_loss(cfg: Settings) -> Dict[str, Any]:
    from sp_timm import create_loss
    import random
    random.seed(0)
    torch.manual_seed(0)
    variants: Dict[str, Callable] = {'ce': F.cross_entropy}
    for name in MEMBERS:  # the default on CUDA is the Triton kernel; the torch code compiled and eager for scale
        if cfg.cuda:
            variants[f'{name} triton'] = create_loss(name, kernel='triton')
        variants[f'{name} eager'] = create_loss(name, kernel='torch', compile=False)
        variants[f'{name} compiled'] = create_loss(name, kernel='torch', compile=cfg.compile_backend)
    result: Dict[str, Any] = {'batch': cfg.loss_batch, 'ce_ms': {}, 'ratio': {n: {} for n in variants if n != 'ce'}}
    for num_classes in cfg.loss_classes:
        if cfg.left() < 20:
            result['skipped_classes'] = f'K >= {num_classes}: time budget'
            break
        logits = torch.randn(cfg.loss_batch, num_classes, device=cfg.device, requires_grad=True)
        target = torch.randint(0, num_classes, (cfg.loss_batch,), device=cfg.device)

        def step(fn: Callable) -> Callable[[], None]:
            def run() -> None:
                logits.grad = None
                fn(logits, target).backward()
            return run
        for fn in variants.values():  # warm-up, compilation included
            time_call(step(fn), 3, cfg.device)
        if cfg.cuda:
            result.setdefault('kernel_max_abs_error', {})[num_classes] = kernel_errors(logits, target)
            result.setdefault('self_check', {})[num_classes] = kernel_self_checks(cfg, num_classes)
        per_round: Dict[str, List[float]] = {n: [] for n in variants}
        for _ in range(cfg.loss_rounds):
            order = list(variants)
            random.shuffle(order)
            times = {n: time_call(step(variants[n]), cfg.loss_iters, cfg.device) for n in order}
            for n in variants:
                per_round[n].append(times[n] / times['ce'] if n != 'ce' else times['ce'])
        result['ce_ms'][num_classes] = 1e3 * statistics.median(per_round['ce'])
        for n in result['ratio']:
            result['ratio'][n][num_classes] = statistics.median(per_round[n])
        log(f'loss K={num_classes}: ' + ', '.join(f'{n} {result["ratio"][n][num_classes]:.2f}x'
                                                  for n in result['ratio']))
    return result


def kernel_errors(logits: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
    """Per member, the largest absolute difference of the Triton kernel's loss and gradient from the float64
    autograd reference on these logits: the kernel's check on real hardware, next to its timing."""
    from sp_timm import create_loss
    errors = {}
    for name in MEMBERS:
        results = []
        for z, options in ((logits.detach().clone(), dict(kernel='triton')),
                           (logits.detach().double(), dict(fused=False, compile=False))):
            z.requires_grad_(True)
            loss = create_loss(name, **options)(z, target)
            loss.backward()
            results.append((loss.detach().double(), z.grad.double()))
        errors[name] = max(float((a - b).abs().max()) for a, b in zip(*results))
    return errors


def kernel_self_checks(cfg: Settings, num_classes: int) -> Dict[str, Dict[str, Any]]:
    """Per member and logits dtype, the kernel's first-use self-check on this device at batch ``cfg.loss_batch``:
    passed, its worst error as a fraction of the tolerance, and its wall time twice: at first use of the dtype
    (the variant's Triton compilation included; float32 was compiled by the warm-up already) and again with the
    kernel compiled (the check's own cost, paid once per variant and process)."""
    from sp_timm import create_loss
    from sp_timm.losses import clear_kernel_verdicts, verify_kernel
    checks: Dict[str, Dict[str, Any]] = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        logits = torch.randn(cfg.loss_batch, num_classes, device=cfg.device).to(dtype)
        for name in MEMBERS:
            loss_fn = create_loss(name, kernel='triton')
            times = []
            for _ in range(2):
                clear_kernel_verdicts()
                sync(cfg.device)
                begin = time.perf_counter()
                verdict = verify_kernel(loss_fn, logits, True)
                times.append(time.perf_counter() - begin)
            checks[f'{name} {str(dtype).replace("torch.", "")}'] = {
                'passed': verdict.passed, 'worst_ratio': verdict.worst_ratio, 'detail': verdict.detail,
                'first_use_ms': 1e3 * times[0], 'check_ms': 1e3 * times[1]}
    clear_kernel_verdicts()
    failed = [k for k, v in checks.items() if not v['passed']]
    log(f'kernel self-check K={num_classes}: {len(checks) - len(failed)} of {len(checks)} passed'
        + (f', FAILED: {failed}' if failed else '') + f", worst {max(v['worst_ratio'] for v in checks.values()):.3g} "
        f"of tolerance, check {statistics.median(v['check_ms'] for v in checks.values()):.1f} ms (median)")
    return checks


def flops_per_image(model_name: str, model_args: Dict[str, Any]) -> float:
    """FLOP of one forward + backward of one 32x32 image, counted (not timed) on the meta device."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode
    import sp_timm  # noqa: F401 -- registers sp-timm's CIFAR models with timm
    with torch.device('meta'):
        model = timm.create_model(model_name, **model_args).train()
        images = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(images).float().sum().backward()
    return counter.get_total_flops() / 2


def _train_flags(cfg: Settings, mode: str, batch: int, output: str, compile_backend: Optional[str] = None) -> List[str]:
    flags = ['--dataset', 'digits', '--model', cfg.model, '--batch-size', str(batch), '--no-aug', '--no-progress',
             '--epochs', '1', '--loss', 'sp_margin', '--clip-grad', '5', '--opt', 'momentum', '--lr', '0.05',
             '--sched', 'step', '--adv', mode if mode != 'standard' else 'none', '--adv-steps', str(cfg.adv_steps),
             '--adv-step-size', '2/255', '--adv-eps', '8/255', '--output', output, '--log-interval', '50']
    if cfg.cuda:
        flags += ['--amp', '--amp-dtype', 'bfloat16', '--channels-last']
    if compile_backend:
        flags += ['--torchcompile', compile_backend]
    return flags


def build_trainer(cfg: Settings, mode: str, batch: int, steps: int, compile_backend: Optional[str] = None):
    """A ``Trainer`` whose training loader is ``steps`` batches of random CIFAR-shaped uint8 images."""
    from sp_timm.data import ImageData, TensorLoader
    from sp_timm.cli.train import parse_train_args
    from sp_timm.train.trainer import Trainer
    output = tempfile.mkdtemp(prefix='sp-timm-suite-')
    trainer = Trainer(parse_train_args(_train_flags(cfg, mode, batch, os.path.join(output, 'run'), compile_backend)))
    generator = torch.Generator().manual_seed(0)
    count = steps * batch
    data = ImageData(torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (count,), generator=generator), [str(i) for i in range(10)], 'synthetic')
    trainer.train_loader = TensorLoader(data, batch, shuffle=True, drop_last=True, device=trainer.accelerator.device)
    return trainer


def trainer_pass(trainer, epoch: int) -> float:
    """Images/s of one ``train_epoch`` over the synthetic loader, host-synchronised at both ends."""
    device = trainer.accelerator.device
    sync(device)
    begin = time.perf_counter()
    trainer.train_epoch(epoch)
    sync(device)
    return len(trainer.train_loader) * trainer.train_loader.batch_size / (time.perf_counter() - begin)


class HandLoop:
    """The minimal loop: a fresh model of the same architecture, SGD with momentum, the same loss and clip,
    bf16 autocast on a GPU, pre-made float batches already on the device (channels_last on a GPU)."""

    def __init__(self, cfg: Settings, trainer, mode: str):
        import timm
        from sp_timm import create_loss
        self.cfg, self.mode, self.args = cfg, mode, trainer.config
        memory = torch.channels_last if cfg.cuda else torch.contiguous_format
        self.model = timm.create_model(cfg.model, **trainer.record.model_args).to(cfg.device, memory_format=memory)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.loss_fn = create_loss('sp_margin')
        self.batches = [(images.contiguous(memory_format=memory), labels) for images, labels in trainer.train_loader]

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from sp_timm.threat.pgd import pgd_attack, trades_attack, trades_kl
        args = self.args
        with torch.autocast(self.cfg.device.type, dtype=torch.bfloat16, enabled=self.cfg.cuda):
            if self.mode == 'pgd':
                images = pgd_attack(self.model, images, labels, args.adv_eps, args.adv_step_size, args.adv_steps)
            if self.mode == 'trades':
                adv = trades_attack(self.model, images, args.adv_eps, args.adv_step_size, args.adv_steps)
                logits, adv_logits = self.model(torch.cat([images, adv])).float().chunk(2)
                loss = self.loss_fn(logits, labels) + args.trades_beta * trades_kl(adv_logits, logits)
            else:
                loss = self.loss_fn(self.model(images).float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()

    def rate(self) -> float:
        self.model.train()
        sync(self.cfg.device)
        begin = time.perf_counter()
        for images, labels in self.batches:
            self.step(images, labels)
        sync(self.cfg.device)
        return sum(len(labels) for _, labels in self.batches) / (time.perf_counter() - begin)


def section_train(cfg: Settings) -> Dict[str, Any]:
    peak = cfg.results.get('env', {}).get('peak_bf16_tflops')
    result: Dict[str, Any] = {'model': cfg.model, 'runs': []}
    flop = None
    for mode in ('standard', 'pgd', 'trades'):
        for batch in cfg.batches:
            if cfg.left() < 30:
                result['runs'].append({'mode': mode, 'batch': batch, 'skipped': 'time budget'})
                continue
            run: Dict[str, Any] = {'mode': mode, 'batch': batch}
            try:
                steps = cfg.steps(mode, batch)
                trainer = build_trainer(cfg, mode, batch, steps)
                if flop is None:
                    flop = flops_per_image(cfg.model, trainer.record.model_args)
                    result['gflop_per_image_fwd_bwd'] = flop / 1e9
                hand = HandLoop(cfg, trainer, mode)
                trainer_pass(trainer, 0), hand.rate()  # warm-up: cudnn autotuning, loss compilation, allocator
                ours, theirs = [], []
                for round_index in range(cfg.rounds):
                    ours.append(trainer_pass(trainer, round_index + 1))
                    theirs.append(hand.rate())
                run.update(steps=steps, sp_timm_img_s=statistics.median(ours), hand_img_s=statistics.median(theirs),
                           ratio=statistics.median(a / b for a, b in zip(ours, theirs)))
                # adversarial training counted as (steps + 1) full forward + backward passes per image: an upper
                # bound of the FLOP, as the attack's backward passes skip the weight gradients
                passes = 1 if mode == 'standard' else cfg.adv_steps + 1
                if peak:
                    run['mfu_sp_timm'] = run['sp_timm_img_s'] * flop * passes / (peak * 1e12)
                    run['mfu_hand'] = run['hand_img_s'] * flop * passes / (peak * 1e12)
                log(f"train {mode} b{batch}: sp-timm {run['sp_timm_img_s']:.0f} img/s, hand {run['hand_img_s']:.0f} "
                    f"img/s, ratio {run['ratio']:.3f}")
                del trainer, hand
            except Exception as err:  # noqa: BLE001 -- one failed configuration must not stop the others
                run['error'] = f'{type(err).__name__}: {err}'[:2000]
                log(f'train {mode} b{batch} failed: {run["error"][:300]}')
            result['runs'].append(run)
            _free(cfg)
    return result


def _free(cfg: Settings) -> None:
    import gc
    gc.collect()
    if cfg.cuda:
        torch.cuda.empty_cache()


def section_compile(cfg: Settings) -> Dict[str, Any]:
    """Eager vs ``--torchcompile`` trainer passes (standard training) at each batch size, with MFU when the train
    section counted the FLOP and the env section measured the peak."""
    peak = cfg.results.get('env', {}).get('peak_bf16_tflops')
    gflop = cfg.results.get('train', {}).get('gflop_per_image_fwd_bwd')
    result: Dict[str, Any] = {'backend': cfg.compile_backend, 'runs': []}
    for batch in cfg.batches:
        if cfg.left() < MIN_SECONDS['compile'] and result['runs']:
            result['runs'].append({'batch': batch, 'skipped': 'time budget'})
            continue
        steps = cfg.steps('standard', batch)
        run: Dict[str, Any] = {'batch': batch, 'steps': steps}
        for label, backend in (('eager', None), ('compiled', cfg.compile_backend)):
            trainer = build_trainer(cfg, 'standard', batch, steps, backend)
            begin = time.perf_counter()
            trainer_pass(trainer, 0)
            run[f'{label}_first_pass_s'] = time.perf_counter() - begin  # includes compilation
            run[f'{label}_img_s'] = statistics.median(trainer_pass(trainer, 1 + r) for r in range(cfg.rounds))
            if peak and gflop:
                run[f'mfu_{label}'] = run[f'{label}_img_s'] * gflop * 1e9 / (peak * 1e12)
            log(f"compile b{batch}: {label} {run[f'{label}_img_s']:.0f} img/s (first pass "
                f"{run[f'{label}_first_pass_s']:.1f} s)")
            del trainer
            _free(cfg)
        run['speedup'] = run['compiled_img_s'] / run['eager_img_s']
        result['runs'].append(run)
    return result


def section_autoattack(cfg: Settings) -> Dict[str, Any]:
    import timm
    from pyautoattack import AutoAttack
    from sp_timm.data import create_dataset
    from sp_timm.eval.attacks import STANDARD_ATTACKS
    from sp_timm.eval import evaluate_points
    data = create_dataset('digits', 'test')
    count = min(cfg.aa_points, len(data))
    images, labels = data.images[:count].float().div(255), data.labels[:count]
    torch.manual_seed(0)
    model = timm.create_model(cfg.aa_model, num_classes=10).to(cfg.device)
    if cfg.smoke:  # every point misclassified: both sides run their whole pipeline but attack nothing
        with torch.no_grad():
            labels = (model.eval()(images.to(cfg.device)).argmax(1).cpu() + 1) % 10
        eps = 8 / 255
    else:  # a briefly trained model at a small eps: most points are correct and some survive every attack
        train_briefly(model, create_dataset("digits", "train"), cfg.device, epochs=15)
        eps = 2 / 255
    model.eval()
    batch = 500

    def ours_run() -> Dict[str, Any]:
        return evaluate_points(model, images, labels, eps=eps, batch_size=batch, min_pert_norms=(), progress=False,
                               echo_warnings=False)

    def theirs_run() -> torch.Tensor:
        adversary = AutoAttack(model, norm='Linf', eps=eps, seed=0, device=cfg.device, version='standard')
        return adversary.run_standard_evaluation(images.to(cfg.device), labels.to(cfg.device), batch_size=batch)[1]
    ours_times, theirs_times = [], []
    for _ in range(1):  # once each (a trained model makes a run long); the brief training warmed up the device
        begin = time.perf_counter()
        ours = ours_run()
        ours_times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        adv_pred = theirs_run()
        theirs_times.append(time.perf_counter() - begin)
    ours_s, theirs_s = ours_times[-1], theirs_times[-1]
    with torch.no_grad():
        clean = float((model(images.to(cfg.device)).argmax(1).cpu() == labels).float().mean())
    result = {'model': cfg.aa_model, 'points': count, 'eps': eps, 'clean_acc': clean, 'sp_timm_s': ours_s,
              'pyautoattack_s': theirs_s,
              'ratio': ours_s / theirs_s, 'sp_timm_robust_acc': float(ours.aa[STANDARD_ATTACKS[-1]].float().mean()),
              'pyautoattack_robust_acc': float((adv_pred.cpu() == labels).float().mean())}
    log(f'autoattack: sp-timm {ours_s:.1f} s, pyautoattack {theirs_s:.1f} s, ratio {result["ratio"]:.2f}')
    return result


def train_briefly(model: torch.nn.Module, data, device: torch.device, epochs: int) -> None:
    """Plain cross-entropy training on ``data`` (SGD, batch 128, no augmentation): a model worth attacking."""
    images, labels = data.images.float().div(255).to(device), data.labels.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(128):
            index = index.to(device)
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def section_demo(cfg: Settings) -> Dict[str, Any]:
    timeout = max(10.0, cfg.left() - 5)
    out = tempfile.mkdtemp(prefix='sp-timm-suite-demo-')
    command = [sys.executable, '-m', 'sp_timm', 'demo', '--quick', '--no-progress', '--out', out]
    begin = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'command': ' '.join(command[1:]), 'timed_out_after_s': timeout}
    return {'command': ' '.join(command[1:]), 'wall_s': time.perf_counter() - begin, 'returncode': proc.returncode,
            'tail': (proc.stdout + proc.stderr)[-1500:]}


RUNNERS = {'env': section_env, 'loss': section_loss, 'train': section_train, 'compile': section_compile,
           'autoattack': section_autoattack, 'demo': section_demo}
MIN_SECONDS = {'env': 5, 'loss': 30, 'train': 40, 'compile': 60, 'autoattack': 20, 'demo': 30}


def markdown(results: Dict[str, Any]) -> str:
    """The results as markdown tables."""
    env = results.get('env', {})
    lines = [f"# sp-timm GPU suite ({env.get('gpu', env.get('device', '?'))}, "
             f"torch {env.get('torch', torch.__version__)})",
             '']
    if 'command' in results:
        lines += [f"`{results['command']}`", '']
    loss = results.get('loss', {})
    if 'ratio' in loss:
        classes = list(loss['ce_ms'])
        lines += [f"## Loss forward+backward, B = {loss['batch']}, ratio to F.cross_entropy (goal <= 1.5x)", '',
                  '| loss | ' + ' | '.join(f'K={k}' for k in classes) + ' |', '|---' * (len(classes) + 1) + '|',
                  '| F.cross_entropy (ms) | ' + ' | '.join(f"{loss['ce_ms'][k]:.3f}" for k in classes) + ' |']
        lines += [f'| {n} | ' + ' | '.join(f"{loss['ratio'][n].get(k, float('nan')):.2f}x" for k in classes) + ' |'
                  for n in loss['ratio']]
        checks = loss.get('self_check', {})
        if checks:
            lines += ['', '### Triton kernel first-use self-check (per member and logits dtype, on this device)', '',
                      '| K | variants passed | worst error / tolerance | check ms (median, max) | first use ms, '
                      'compile included (max) |', '|---|---|---|---|---|']
            for k, per in checks.items():
                lines.append(f"| {k} | {sum(v['passed'] for v in per.values())} of {len(per)} | "
                             f"{max(v['worst_ratio'] for v in per.values()):.3g} | "
                             f"{statistics.median(v['check_ms'] for v in per.values()):.1f}, "
                             f"{max(v['check_ms'] for v in per.values()):.1f} | "
                             f"{max(v['first_use_ms'] for v in per.values()):.0f} |")
        errors = loss.get('kernel_max_abs_error', {})
        if errors:
            lines += ['', 'Triton kernel against the float64 reference, largest absolute error of loss and gradient: ' +
                      '; '.join(f'K={k}: ' + ', '.join(f'{n} {e:.1e}' for n, e in per.items())
                                for k, per in errors.items())]
        lines.append('')
    train = results.get('train', {})
    if 'runs' in train:
        lines += [f"## Training, {train['model']} ({train.get('gflop_per_image_fwd_bwd', float('nan')):.1f} GFLOP/img "
                  f"fwd+bwd, counted), sp-timm vs hand loop (goal >= 0.98x)", '',
                  '| mode | batch | sp-timm img/s | hand img/s | ratio | MFU sp-timm | MFU hand |',
                  '|---|---|---|---|---|---|---|']
        for run in train['runs']:
            if 'ratio' in run:
                lines.append(f"| {run['mode']} | {run['batch']} | {run['sp_timm_img_s']:.0f} | "
                             f"{run['hand_img_s']:.0f} | "
                             f"{run['ratio']:.3f}x | {run.get('mfu_sp_timm', float('nan')):.1%} | "
                             f"{run.get('mfu_hand', float('nan')):.1%} |")
            else:
                lines.append(f"| {run['mode']} | {run['batch']} | "
                             f"{run.get('error', run.get('skipped', ''))[:80]} | | | | |")
        lines.append('')
    comp = results.get('compile', {})
    if comp.get('runs'):
        lines += ['## --torchcompile vs eager (trainer, standard; goal >= 1.3x)', '',
                  '| batch | eager img/s | compiled img/s | speedup | MFU eager / compiled | '
                  'first pass eager / compiled (s) |',
                  '|---|---|---|---|---|---|']
        for run in comp['runs']:
            if 'speedup' not in run:
                lines.append(f"| {run['batch']} | {run.get('skipped', '')} | | | | |")
                continue
            lines.append(f"| {run['batch']} | {run['eager_img_s']:.0f} | {run['compiled_img_s']:.0f} | "
                         f"{run['speedup']:.2f}x | {run.get('mfu_eager', float('nan')):.1%} / "
                         f"{run.get('mfu_compiled', float('nan')):.1%} | {run['eager_first_pass_s']:.1f} / "
                         f"{run['compiled_first_pass_s']:.1f} |")
        lines.append('')
    aa = results.get('autoattack', {})
    if 'ratio' in aa:
        lines += ['## AutoAttack standard', '', '| model | points | eps | clean % | robust % sp-timm / pyautoattack | '
                  'sp-timm (s) | pyautoattack (s) | ratio |', '|---|---|---|---|---|---|---|---|',
                  f"| {aa['model']} | {aa['points']} | {aa['eps'] * 255:.0f}/255 | "
                  f"{100 * aa.get('clean_acc', float('nan')):.1f} | "
                  f"{100 * aa['sp_timm_robust_acc']:.1f} / {100 * aa['pyautoattack_robust_acc']:.1f} | "
                  f"{aa['sp_timm_s']:.1f} | {aa['pyautoattack_s']:.1f} | {aa['ratio']:.2f}x |", '']
    demo = results.get('demo', {})
    if 'wall_s' in demo:
        lines += [f"## demo --quick: {demo['wall_s']:.0f} s, exit code {demo['returncode']}", '']
    errors = {k: v['error'] for k, v in results.items() if isinstance(v, dict) and 'error' in v}
    if errors:
        lines += ['## Errors', ''] + [f'- {k}: {v.splitlines()[0][:300] if v else ""}'
                                      for k, v in errors.items()] + ['']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='benchmarks/results/gpu', help='folder for suite.json and suite.md')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, runs on a CPU in well under a minute')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=None,
                        help='sections to run (default: all; with --smoke all but demo)')
    parser.add_argument('--budget-s', type=float, default=360.0, help='total time budget in seconds')
    parser.add_argument('--device', default=None, help='default: cuda when available (cpu with --smoke)')
    opts = parser.parse_args(argv)
    device = torch.device(opts.device or ('cuda' if torch.cuda.is_available() and not opts.smoke else 'cpu'))
    cfg = Settings(opts.smoke, device, opts.budget_s)
    sections = opts.sections or [s for s in SECTIONS if not (opts.smoke and s == 'demo')]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    results = cfg.results
    results.update(command=' '.join(sys.argv), sections=sections)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    for name in sections:
        if cfg.left() < MIN_SECONDS[name] and not opts.smoke:
            results[name] = {'skipped': f'time budget ({cfg.left():.0f} s left)'}
            log(f'{name}: skipped, {cfg.left():.0f} s left')
            continue
        log(f'{name}: start')
        begin = time.perf_counter()
        try:
            results[name] = RUNNERS[name](cfg)
        except Exception as err:  # noqa: BLE001 -- record and go on to the next section
            results[name] = {'error': f'{type(err).__name__}: {err}\n{traceback.format_exc()[-3000:]}'}
            log(f'{name}: error {type(err).__name__}: {str(err)[:300]}')
        results[name]['seconds'] = time.perf_counter() - begin
        (out / 'suite.json').write_text(json.dumps(results, indent=1, default=str))  # after every section
    results['total_seconds'] = time.perf_counter() - _START
    (out / 'suite.json').write_text(json.dumps(results, indent=1, default=str))
    (out / 'suite.md').write_text(markdown(results))
    print(markdown(results), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
