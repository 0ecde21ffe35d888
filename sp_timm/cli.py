""" The ``sp-timm`` command.

Each subcommand's parser is built only when that subcommand runs, and torch / timm are imported only by the code
that needs them: ``sp-timm --help``, ``--version`` and every ``sp-timm COMMAND --help`` answer at once.
"""
import argparse
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ._cli_utils import DefaultsHelpFormatter, add_data_args, format_table, run_reporting_errors
from .version import __version__

_LISTED_K = 10

# name: (one-line help in `sp-timm --help`, description of `sp-timm NAME --help`)
COMMANDS: Dict[str, Tuple[str, str]] = {
    'losses': ('list the registered losses with their stationary points',
               'The SP losses of the registry with their formula, parameters and stationary point (margin and '
               'probability of the true class there), and the timm loss types the factory also builds.'),
    'data': ('per-class train / test counts and long-tail groups of a dataset',
             'Training and test images per class of a dataset (the count formula, or the loaded data with '
             '--data-dir), with the long-tail group of each class and the rule that formed the groups.'),
    'train': ('train with timm flags through Accelerate (sp-timm train --help)', ''),
    'eval': ('AutoAttack in the RobustBench protocol, sharded and resumable (sp-timm eval --help)', ''),
    'demo': ('train CE and SP on digits / digits-lt, attack both, compare (about 5 min on 2 CPUs)', ''),
    'export': ("write timm's Hub format (config.json, model.safetensors) with a model card",
               "Write a checkpoint in timm's Hub format (config.json, model.safetensors) with a model card that "
               "carries the given evaluations, and optionally upload it."),
}


def _loss_rows(num_classes: int) -> List[List[str]]:
    from .losses import SPLoss, create_loss, list_losses
    rows = []
    for name in list_losses('sp_*'):
        loss: SPLoss = create_loss(name)
        params = ', '.join(f'{k}={v:g}' for k, v in loss.hparams().items())
        rows.append([name, loss.formula, params, loss.stationary_set,
                     f'{loss.stationary_margin(num_classes):.3f}', f'{loss.stationary_prob(num_classes):.3f}'])
    return rows


def cmd_losses(args: argparse.Namespace) -> int:
    from .losses import timm_loss_types
    print(f'SP losses (stationary point on the correct side; K = {args.num_classes}, class-index targets):\n')
    print(format_table(['name', 'loss l(z, y)', 'parameters (defaults)', 'stationary where', 'margin there', 'p_y there'],
                       _loss_rows(args.num_classes)))
    print(f"\ntimm loss types, passed to timm's factory (no stationary point): {', '.join(timm_loss_types())}")
    print("Build one with sp_timm.create_loss(name, **params) or "
          "sp_timm.create_classification_loss(name, smoothing=..., soft_targets=..., sp_<param>=...).")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import GROUP_RULES, LT_SUFFIX, class_groups, create_dataset, dataset_spec, group_rule, longtail_counts
    from .data.class_names import class_names
    spec = dataset_spec(args.dataset)
    long_tailed = args.dataset.endswith(LT_SUFFIX)
    if spec.hub_id is None or args.data_dir:
        load = lambda split: create_dataset(args.dataset, split, args.data_dir, args.imbalance_ratio, args.imbalance_profile)
        train, test = load('train'), load('test')
        classes, train_counts, test_counts = train.classes, train.class_counts(), test.class_counts()
        origin = f'counted in the loaded data ({train.source})'
    else:
        classes = class_names(spec.name, spec.num_classes)
        train_counts = (longtail_counts(spec.train_per_class, spec.num_classes, args.imbalance_ratio, args.imbalance_profile)
                        if long_tailed else [spec.train_per_class] * spec.num_classes)
        test_counts = [spec.test_per_class] * spec.num_classes
        origin = f"from the count formula (data not loaded; --data-dir counts a local copy of '{spec.hub_id}')"
    rule = group_rule(train_counts)
    groups = class_groups(train_counts, rule)
    group_of = {c: g for g, members in groups.items() for c in members}
    title = args.dataset + (f', {args.imbalance_profile} profile, imbalance ratio {args.imbalance_ratio:g}' if long_tailed else '')
    print(f'{title}: {sum(train_counts)} train / {sum(test_counts)} test images, {origin}\n')
    rows = [[str(c), classes[c], str(n), str(m), group_of[c]] for c, (n, m) in enumerate(zip(train_counts, test_counts))]
    print(format_table(['class', 'name', 'train', 'test', 'group'], rows))
    print(f'\ngroups ({GROUP_RULES[rule]}): ' + ', '.join(f'{g}: {len(m)} classes' for g, m in groups.items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json
    if args.robustbench:
        from .robustbench_bundle import export_robustbench
        out = export_robustbench(args.checkpoint, args.out, args.eval or (), model_name=args.model_name,
                                 authors=args.authors, year=args.year, title_word=args.title_word,
                                 checkpoint_url=args.checkpoint_url, code_url=args.code_url, license=args.license,
                                 weights=args.weights)
        print(f"wrote the RobustBench submission of '{args.checkpoint}' to '{out}': "
              + ', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.'))))
        print(f"check it: robustbench.utils.load_model(NAME, model_dir='{out / 'models'}') after pasting the class of "
              f"model_zoo_entry.py into robustbench's model zoo; then open the issue of new_model_issue.md")
        return 0
    from .hub import export_model, push_folder
    out = export_model(args.checkpoint, args.out, reports=args.eval or (), repo_id=args.repo_id, license=args.license,
                       weights=args.weights)
    held = json.loads((out / 'sp_timm.json').read_text()).get('weights', 'raw')  # which weights load_model chose
    print(f"exported '{args.checkpoint}' ({held} weights) to '{out}': " + ', '.join(sorted(p.name for p in out.iterdir())))
    print(f"load it with timm.create_model('local-dir:{out}', pretrained=True) after import sp_timm")
    if args.push:
        url = push_folder(out, args.repo_id, private=args.private)
        print(f'pushed to {args.repo_id}: {url}')
    return 0


def _command_parser(name: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f'sp-timm {name}', description=COMMANDS[name][1],
                                   formatter_class=DefaultsHelpFormatter)


def build_losses_parser() -> argparse.ArgumentParser:
    p = _command_parser('losses')
    p.add_argument('--num-classes', type=int, default=_LISTED_K, help='K used for the stationary margins')
    return p


def build_data_parser() -> argparse.ArgumentParser:
    p = _command_parser('data')
    add_data_args(p)
    return p


def build_export_parser() -> argparse.ArgumentParser:
    p = _command_parser('export')
    p.add_argument('--checkpoint', required=True,
                   help='an sp-timm checkpoint (OUTPUT/best, OUTPUT/last, OUTPUT) or local-dir:DIR / hf-hub:ORG/NAME')
    p.add_argument('--out', required=True, help='the folder to write (replaced only once the new one is complete)')
    p.add_argument('--weights', choices=('auto', 'ema', 'raw'), default='auto',
                   help='which weights of a checkpoint: auto = the EMA weights (sp-timm train --model-ema) when it has '
                        'them, else the trained ones; ema; raw = the trained (non-averaged) weights. sp_timm.json and '
                        'the card say which')
    p.add_argument('--eval', action='append', metavar='REPORT', help='report.json of sp-timm eval (repeatable)')
    p.add_argument('--push', action='store_true', help='upload the folder to the Hub (needs --repo-id and a token)')
    p.add_argument('--repo-id', default=None, help='ORG/NAME of the Hub model repo (also used in the card)')
    p.add_argument('--private', action='store_true', help='create the Hub repo as private')
    rb = p.add_argument_group('RobustBench submission (--robustbench: --out becomes the submission folder, not the Hub '
                              'folder)')
    rb.add_argument('--robustbench', action='store_true',
                    help="write a RobustBench submission instead: leaderboard JSON, a state dict (.pt) of RobustBench's "
                         "own class (WideResNet / PreActResNet), the model-zoo entry, the filled New Model issue and "
                         "the AutoAttack log of each --eval (required)")
    rb.add_argument('--model-name', default=None,
                    help='the submission name (default: <Author><Year><Word>_<Arch> from --authors, --year, --title-word '
                         "or the report's leaderboard entry, e.g. Gao2023Stationary_WRN-28-10)")
    rb.add_argument('--authors', default=None, help="the paper's authors, first author first (default: the report's)")
    rb.add_argument('--year', type=int, default=None, help="the paper's year (default: from the report's venue)")
    rb.add_argument('--title-word', default=None, help="the name's word (default: the first word of the paper's title)")
    rb.add_argument('--checkpoint-url', default=None, help="where the .pt will be downloadable (default: 'TO FILL IN')")
    rb.add_argument('--code-url', default=None, help="the training code's URL (default: 'TO FILL IN')")
    p.add_argument('--license', default='apache-2.0', metavar='ID',
                   help="the model card's licence, a Hub licence id (e.g. apache-2.0, mit, cc-by-4.0). RobustBench's "
                        "model zoo is MIT-licensed: give --license mit for a model you also submit there (default: apache-2.0)")
    return p


def build_demo_parser() -> argparse.ArgumentParser:
    from .demo import build_demo_parser as add_demo_args
    return add_demo_args(argparse.ArgumentParser(prog='sp-timm demo'))


def build_train_parser() -> argparse.ArgumentParser:
    from .train.args import build_train_parser as train_parser
    return train_parser()


def build_eval_parser() -> argparse.ArgumentParser:
    from .eval.args import build_eval_parser as eval_parser
    return eval_parser()


# every subcommand's full parser (the help test walks them all)
COMMAND_PARSERS: Dict[str, Callable[[], argparse.ArgumentParser]] = {
    'losses': build_losses_parser, 'data': build_data_parser, 'train': build_train_parser, 'eval': build_eval_parser,
    'demo': build_demo_parser, 'export': build_export_parser,
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the subcommands with their one-line help; each one's own flags are parsed by its
    parser (``COMMAND_PARSERS``), built only when it runs."""
    parser = argparse.ArgumentParser(prog='sp-timm', description='Stationary point losses for timm.',
                                     epilog='sp-timm COMMAND --help lists the flags of a command.',
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--version', action='version', version=f'sp-timm {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, (summary, _) in COMMANDS.items():
        sub.add_parser(name, add_help=False, help=summary)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main
    return demo_main(args)


_RUNNERS: Dict[str, Callable[[argparse.Namespace], int]] = {
    'losses': cmd_losses, 'data': cmd_data, 'demo': _run_demo, 'export': cmd_export}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    if command not in COMMANDS:  # --help, --version, no or an unknown command: argparse answers
        build_parser().parse_args(argv)
        return 2
    if command == 'train':  # their own main: --config defaults (train), Accelerate launches (both)
        from .train import main as train_main
        return train_main(argv[1:])
    if command == 'eval':
        from .eval import main as eval_main
        return eval_main(argv[1:])
    parser = COMMAND_PARSERS[command]()
    args = parser.parse_args(argv[1:])
    if getattr(args, 'push', False) and not args.repo_id:
        parser.error('--push needs --repo-id ORG/NAME')
    if getattr(args, 'robustbench', False) and args.push:
        parser.error('--push uploads the Hub folder; a --robustbench submission folder is not pushed (export without '
                     '--robustbench for the Hub)')
    return run_reporting_errors(f'sp-timm {command}', _RUNNERS[command], args)
