""" The fast protocol (AutoAttack's white-box part, APGD-CE + APGD-T) against the standard one (APGD-CE, APGD-T,
FAB-T, Square): cost and robust accuracy on the robustness study's models, side by side in one process.

For each study setting, CE and the SP configuration the study chose are trained again with the study's recipe and
seed (``robustness_study.train_flags``; the study keeps rows, not weights), then evaluated on the same test points,
alternating standard and fast ``--reps`` times (``evaluate_points``, one chunk, no FAB, no work folder: every call
recomputes). Reported per model: seconds of each (median over reps), their ratio, both robust accuracies and the
points on which they differ (standard can only be lower: its first two stages are the fast protocol's, with the same
seeds).

    python benchmarks/protocol_cost.py --out benchmarks/results/protocol --settings digits digits-pgdat --n 413
"""
import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _study():
    spec = importlib.util.spec_from_file_location('robustness_study', Path(__file__).with_name('robustness_study.py'))
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def measure(model, x, y, eps: float, reps: int, device) -> Dict[str, Any]:
    from sp_timm.eval import evaluate_points
    from sp_timm.eval.config import ROBUST
    times: Dict[str, List[float]] = {'standard': [], 'fast': []}
    flags = {}
    evaluate_points(model, x[:8], y[:8], eps=eps, batch_size=8, min_pert_examples=0, progress=False,
                    echo_warnings=False, protocol='fast')  # warm-up (first calls, kernel selection): not timed
    for _ in range(reps):
        for protocol in ('standard', 'fast'):
            if device.type == 'cuda':
                import torch
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = evaluate_points(model, x, y, eps=eps, batch_size=len(y), min_pert_examples=0, progress=False,
                                     echo_warnings=False, protocol=protocol)
            times[protocol].append(time.perf_counter() - start)
            flags[protocol] = result.aa[ROBUST]
    standard, fast = flags['standard'], flags['fast']
    return {'seconds': {k: statistics.median(v) for k, v in times.items()},
            'cost_ratio': statistics.median(times['standard']) / statistics.median(times['fast']),
            'robust_acc': {k: 100 * float(v.double().mean()) for k, v in flags.items()},
            'points_differ': int((standard != fast).sum()), 'fast_only_robust': int((fast & ~standard).sum()),
            'standard_only_robust': int((standard & ~fast).sum()), 'n': len(y)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='benchmarks/results/protocol')
    p.add_argument('--settings', nargs='+', default=['digits', 'digits-lt', 'digits-pgdat', 'digits-lt-pgdat'])
    p.add_argument('--n', type=int, default=413, help='test points (413: all of digits)')
    p.add_argument('--reps', type=int, default=1)
    p.add_argument('--seed', type=int, default=1, help="the study's first confirmation seed")
    p.add_argument('--epochs', type=int, default=30, help="the study's --epochs")
    args = p.parse_args()
    import torch
    from accelerate import PartialState
    import sp_timm  # noqa: F401
    from sp_timm.data import create_dataset
    from sp_timm.demo import DEMO_IMBALANCE
    from sp_timm.model_source import load_model
    study = _study()
    out = Path(args.out)
    selection = json.loads((Path(__file__).parent / 'results' / 'study' / 'selection.json').read_text())
    device = PartialState().device
    torch.backends.cudnn.benchmark = True
    cfg = {'out': str(out / 'work'), 'epochs': args.epochs}
    rows = []
    for setting in args.settings:
        test = create_dataset(study.SETTINGS[setting][0], 'test', imbalance_ratio=DEMO_IMBALANCE)
        x, y = test.images[:args.n].float() / 255, test.labels[:args.n]
        for config in ('ce', selection[setting]['chosen']):
            checkpoint = study._train(setting, config, args.seed, cfg)
            model = load_model(str(checkpoint))[0].to(device).eval()
            row = dict(setting=setting, config=config, seed=args.seed, **measure(model, x, y, 2 / 255, args.reps,
                                                                                device))
            print(json.dumps(row), flush=True)
            rows.append(row)
            write(out, rows, args, device)


def write(out: Path, rows: List[Dict[str, Any]], args: argparse.Namespace, device) -> None:
    """The rows so far as JSON and a markdown table (after every model: a cut run keeps what it measured)."""
    import torch
    from sp_timm.files import atomic_write_json, atomic_write_text
    machine = f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}"
    command = 'python benchmarks/protocol_cost.py ' + ' '.join(sys.argv[1:])
    atomic_write_json(out / 'protocol_cost.json', {'command': command, 'machine': machine, 'rows': rows})
    lines = [f'Command: `{command}` ({machine}; Linf 2/255, {args.n} test points, median of {args.reps} '
             f'alternating run(s))', '',
             '| setting | model | standard s | fast s | cost ratio | standard robust % | fast robust % '
             '| points differ |',
             '|---|---|---|---|---|---|---|---|']
    lines += [f"| {r['setting']} | {r['config']} | {r['seconds']['standard']:.1f} | {r['seconds']['fast']:.1f} | "
              f"{r['cost_ratio']:.2f}x | {r['robust_acc']['standard']:.2f} | {r['robust_acc']['fast']:.2f} | "
              f"{r['points_differ']} |" for r in rows]
    atomic_write_text(out / 'protocol_cost.md', '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
