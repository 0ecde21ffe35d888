""" The ``sp-timm`` command. """
import argparse
import sys
from typing import Any, Callable, List, Optional, Sequence

from ._cli_utils import add_data_args, format_table, run_reporting_errors  # noqa: F401 (re-exported)
from .losses import SPLoss, create_loss, list_losses, timm_loss_types
from .version import __version__

_LISTED_K = 10




def _loss_rows(num_classes: int) -> List[List[str]]:
    rows = []
    for name in list_losses('sp_*'):
        loss: SPLoss = create_loss(name)
        params = ', '.join(f'{k}={v:g}' for k, v in loss.hparams().items())
        rows.append([name, loss.formula, params, loss.stationary_set,
                     f'{loss.stationary_margin(num_classes):.3f}', f'{loss.stationary_prob(num_classes):.3f}'])
    return rows


def cmd_losses(args: argparse.Namespace) -> int:
    print(f'SP losses (stationary point on the correct side; K = {args.num_classes}, class-index targets):\n')
    print(format_table(['name', 'loss l(z, y)', 'parameters (defaults)', 'stationary where', 'margin there', 'p_y there'],
                       _loss_rows(args.num_classes)))
    print(f"\ntimm loss types, passed to timm's factory (no stationary point): {', '.join(timm_loss_types())}")
    print("Build one with sp_timm.create_loss(name, **params) or "
          "sp_timm.create_classification_loss(name, smoothing=..., soft_targets=..., sp_<param>=...).")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import LT_SUFFIX, class_groups, create_dataset, dataset_spec, longtail_counts
    spec = dataset_spec(args.dataset)
    long_tailed = args.dataset.endswith(LT_SUFFIX)
    if spec.hub_id is None or args.data_dir:
        load = lambda split: create_dataset(args.dataset, split, args.data_dir, args.imbalance_ratio, args.imbalance_profile)
        train, test = load('train'), load('test')
        classes, train_counts, test_counts = train.classes, train.class_counts(), test.class_counts()
        origin = f'counted in the loaded data ({train.source})'
    else:
        classes = [str(c) for c in range(spec.num_classes)]
        train_counts = (longtail_counts(spec.train_per_class, spec.num_classes, args.imbalance_ratio, args.imbalance_profile)
                        if long_tailed else [spec.train_per_class] * spec.num_classes)
        test_counts = [spec.test_per_class] * spec.num_classes
        origin = f"from the count formula (data not loaded; --data-dir counts a local copy of '{spec.hub_id}')"
    group_of = {c: g for g, members in class_groups(train_counts).items() for c in members}
    title = args.dataset + (f', {args.imbalance_profile} profile, imbalance ratio {args.imbalance_ratio:g}' if long_tailed else '')
    print(f'{title}: {sum(train_counts)} train / {sum(test_counts)} test images, {origin}\n')
    rows = [[str(c), classes[c], str(n), str(m), group_of[c]] for c, (n, m) in enumerate(zip(train_counts, test_counts))]
    print(format_table(['class', 'name', 'train', 'test', 'group'], rows))
    groups = class_groups(train_counts)
    print('\ngroups by training images (many > 100, medium 20..100, few < 20): '
          + ', '.join(f'{g}: {len(m)} classes' for g, m in groups.items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .hub import export_model, push_folder
    out = export_model(args.checkpoint, args.out, reports=args.eval or (), repo_id=args.repo_id)
    print(f"exported '{args.checkpoint}' to '{out}': " + ', '.join(sorted(p.name for p in out.iterdir())))
    print(f"load it with timm.create_model('local-dir:{out}', pretrained=True) after import sp_timm")
    if args.push:
        url = push_folder(out, args.repo_id, private=args.private)
        print(f'pushed to {args.repo_id}: {url}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sp-timm', description='Stationary point losses for timm.')
    parser.add_argument('--version', action='version', version=f'sp-timm {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    losses = sub.add_parser('losses', help='list the registered losses with their stationary points')
    losses.add_argument('--num-classes', type=int, default=_LISTED_K, help='K used for the stationary margins')
    losses.set_defaults(func=cmd_losses)
    data = sub.add_parser('data', help='per-class train / test counts and many / medium / few-shot groups')
    add_data_args(data)
    data.set_defaults(func=cmd_data)
    sub.add_parser('train', add_help=False, help='train with timm flags through Accelerate (sp-timm train --help)')
    sub.add_parser('eval', add_help=False, help='AutoAttack in the RobustBench protocol, sharded and resumable (sp-timm eval --help)')
    demo = sub.add_parser('demo', help='train CE and SP on digits / digits-lt, attack both, compare (about 10 min on 2 CPUs)')
    from .demo import build_demo_parser, main as demo_main
    build_demo_parser(demo)
    demo.set_defaults(func=demo_main)
    export = sub.add_parser('export', help="write timm's Hub format (config.json, model.safetensors) with a model card")
    export.add_argument('--checkpoint', required=True,
                        help='an sp-timm checkpoint (OUTPUT/best, OUTPUT/last, OUTPUT) or local-dir:DIR / hf-hub:ORG/NAME')
    export.add_argument('--out', required=True, help='the folder to write (replaced only once the new one is complete)')
    export.add_argument('--eval', action='append', metavar='REPORT', help='report.json of sp-timm eval (repeatable)')
    export.add_argument('--push', action='store_true', help='upload the folder to the Hub (needs --repo-id and a token)')
    export.add_argument('--repo-id', default=None, help='ORG/NAME of the Hub model repo (also used in the card)')
    export.add_argument('--private', action='store_true', help='create the Hub repo as private')
    export.set_defaults(func=cmd_export)
    return parser






def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['train']:
        from .train import main as train_main
        return train_main(argv[1:])
    if argv[:1] == ['eval']:
        from .eval import main as eval_main
        return eval_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, 'push', False) and not args.repo_id:
        parser.error('--push needs --repo-id ORG/NAME')
    return run_reporting_errors(f'sp-timm {args.command}', args.func, args)
