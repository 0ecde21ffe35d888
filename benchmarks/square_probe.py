r""" Does Square beat AutoAttack's white-box attacks on SP models at larger budgets? Runs AutoAttack (standard:
APGD-CE, APGD-T, FAB-T, Square) on the robustness study's models at several Linf budgets and counts, per model and
eps, the points Square broke after every white-box stage had left them robust -- the pattern AutoAttack's
"Square Attack has decreased the robust accuracy" check reports, and a sign of gradient masking.

The study scores every model at 2/255 only, where this pattern never occurred on digits; this looks for it where
more points sit near the edge of the ball (4/255, 8/255, and beyond the PGD-AT models' 2/255 training budget).

    python benchmarks/square_probe.py --runs digits-ce-s1 digits-sp_margin_m4-s1 --eps 4 8 --n 150 \
        --out benchmarks/results/square
    python benchmarks/square_probe.py --from-json benchmarks/results/square/square_probe.json   # the table again
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _saved_table import print_saved, publish  # noqa: E402  (benchmarks/ is on sys.path above)

WHITE_BOX_LAST, BLACK_BOX = 'fab-t', 'square'


def probe_row(run: str, eps: float, aa: Mapping[str, torch.Tensor], warnings: List[str],
              seconds: float) -> Dict[str, Any]:
    """One model at one eps: accuracy after each AutoAttack stage (flags are cumulative: robust so far), and the
    points Square broke that every white-box stage had left robust."""
    stages = ['clean', 'apgd-ce', 'apgd-t', WHITE_BOX_LAST, BLACK_BOX]
    white_robust, final = aa[WHITE_BOX_LAST].bool(), aa[BLACK_BOX].bool()
    return {'run': run, 'eps': eps, 'n': int(final.numel()),
            'acc': {s: 100.0 * aa[s].float().mean().item() for s in stages},
            'white_box_robust': int(white_robust.sum()), 'square_broke': int((white_robust & ~final).sum()),
            'warnings': list(warnings), 'seconds': seconds}


def summarize(rows: List[Dict[str, Any]]) -> str:
    """Markdown: per model and eps, accuracy after each stage, Square's extra breaks and AutoAttack's warnings."""
    lines = ['| model | eps (x/255) | points | clean % | APGD-CE % | APGD-T % | FAB-T % | Square % | '
             'left robust by white-box | broken by Square only | AutoAttack warnings |', '|' + '---|' * 11]
    for r in rows:
        acc = r['acc']
        lines.append(f"| {r['run']} | {r['eps'] * 255:g} | {r['n']} | "
                     + ' | '.join(f"{acc[s]:.1f}" for s in ('clean', 'apgd-ce', 'apgd-t', WHITE_BOX_LAST, BLACK_BOX))
                     + f" | {r['white_box_robust']} | {r['square_broke']} | {len(r['warnings'])} |")
    return '\n'.join(lines)


def probe(run: str, study: Path, eps_list: List[float], n: int) -> List[Dict[str, Any]]:
    """AutoAttack standard on the first ``n`` test points of the run's dataset, once per eps."""
    import robustness_study
    from sp_timm.model_source import load_model
    from sp_timm.data import create_dataset
    from sp_timm.demo import DEMO_IMBALANCE
    from sp_timm.eval import evaluate_points
    setting = run.rsplit('-', 2)[0]
    if setting not in robustness_study.SETTINGS:
        raise SystemExit(f"square_probe: '{run}' is not a study run name (SETTING-CONFIG-sSEED, e.g. digits-ce-s1).")
    checkpoint = study / 'runs' / run / 'last'
    if not checkpoint.exists():
        raise SystemExit(f"square_probe: no checkpoint at {checkpoint}; run the study's confirmation for it first "
                         f"(runs/ is not in git) or pass --study DIR.")
    model, _ = load_model(str(checkpoint))
    test = create_dataset(robustness_study.SETTINGS[setting][0], 'test', imbalance_ratio=DEMO_IMBALANCE)
    n = min(n or len(test), len(test))
    x, y = test.images[:n].float() / 255, test.labels[:n]
    rows = []
    for eps in eps_list:
        start = time.perf_counter()
        result = evaluate_points(model, x, y, eps=eps, batch_size=512, chunk_size=n, min_pert_norms=(),
                                 progress=False, echo_warnings=True)
        rows.append(probe_row(run, eps, result['aa'], result['warnings'], time.perf_counter() - start))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', nargs='+', default=['digits-ce-s1', 'digits-sp_margin_m4-s1'],
                   help="study run names (the folders of the study's runs/)")
    p.add_argument('--eps', nargs='+', type=float, default=[4.0, 8.0], help='Linf budgets in units of 1/255')
    p.add_argument('--n', type=int, default=150, help='first N test points (0: all)')
    p.add_argument('--study', default='benchmarks/results/study', help="the study's folder")
    p.add_argument('--out', default=None, help='write the table (markdown) and the rows (JSON) here')
    p.add_argument('--from-json', default=None, help='print the table of a saved run (OUT/square_probe.json)')
    args = p.parse_args()
    if args.from_json:
        print_saved(args.from_json, 'rows', summarize)
        return
    if any(e <= 0 for e in args.eps) or args.n < 0:
        raise SystemExit('square_probe: --eps must be positive (units of 1/255) and --n at least 0.')
    from tqdm import tqdm
    torch.set_num_threads(1)
    rows = []
    for run in tqdm(args.runs, desc='square probe'):
        rows += probe(run, Path(args.study), [e / 255 for e in args.eps], args.n)
    publish(rows, 'rows', summarize, args.out, 'square_probe')


if __name__ == '__main__':
    main()
