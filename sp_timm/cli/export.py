""" ``sp-timm export``: timm's Hub format with a model card (optionally pushed), or a RobustBench submission. """
import argparse

from .common import DefaultsHelpFormatter, run_reporting_errors
from .registry import register_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sp-timm export', formatter_class=DefaultsHelpFormatter, description=(
        "Write a checkpoint in timm's Hub format (config.json, model.safetensors) with a model card that carries the "
        "given evaluations, and optionally upload it."))
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
                    help="write a RobustBench submission instead: leaderboard JSON, a state dict (.pt) of "
                         "RobustBench's own class (WideResNet / PreActResNet), the model-zoo entry, the filled New "
                         "Model issue and the AutoAttack log of each --eval (required)")
    rb.add_argument('--model-name', default=None,
                    help='the submission name (default: <Author><Year><Word>_<Arch> from --authors, --year, '
                         "--title-word or the report's leaderboard entry, e.g. Gao2023Stationary_WRN-28-10)")
    rb.add_argument('--paper-title', default=None,
                    help="the title of the paper that proposes this model (RobustBench's 'name'; default: the "
                         "report's, given to sp-timm eval; required)")
    rb.add_argument('--link', default=None, help="that paper's URL (default: the report's; required)")
    rb.add_argument('--authors', default=None,
                    help="the paper's authors, first author first (default: the report's; required)")
    rb.add_argument('--venue', default=None, help="e.g. 'NeurIPS 2023' (default: the report's; required)")
    rb.add_argument('--reported', action='append', default=[], metavar='[THREAT=]ACC',
                    help="the robust accuracy (%%) the paper reports, RobustBench's 'reported' (required): ACC for one "
                         "--eval, THREAT=ACC for each of several (Linf=53.4)")
    rb.add_argument('--preview', action='store_true',
                    help='accept evaluations of fewer points than the whole test split; the entries and the issue '
                         'say it is a preview')
    rb.add_argument('--no-model-zoo', action='store_true',
                    help="a private submission: the leaderboard only, not RobustBench's model zoo (the issue's box "
                         "unticked; the checkpoint goes to the maintainers by email)")
    rb.add_argument('--hub-repo', default=None, metavar='ORG/NAME',
                    help="the model's Hub export (sp-timm export --push --repo-id ORG/NAME): the checkpoint the issue "
                         "points to (RobustBench loads timm-registered models from the Hub)")
    rb.add_argument('--year', type=int, default=None, help="the paper's year (default: from the report's venue)")
    rb.add_argument('--title-word', default=None, help="the name's word (default: the first word of the paper's title)")
    rb.add_argument('--checkpoint-url', default=None, help="where the .pt will be downloadable (default: 'TO FILL IN')")
    rb.add_argument('--code-url', default=None, help="the training code's URL (default: 'TO FILL IN')")
    p.add_argument('--license', default='apache-2.0', metavar='ID',
                   help="the model card's licence, a Hub licence id (e.g. apache-2.0, mit, cc-by-4.0). RobustBench's "
                        "model zoo is MIT-licensed: give --license mit for a model you also submit there (default: "
                        "apache-2.0)")
    return p


def _export(args: argparse.Namespace) -> int:
    import json
    if args.robustbench:
        from ..export.robustbench import Submission, export_robustbench
        submission = Submission(
            model_name=args.model_name, paper_title=args.paper_title, link=args.link, authors=args.authors,
            venue=args.venue, year=args.year, title_word=args.title_word, reported=tuple(args.reported),
            preview=args.preview, model_zoo=not args.no_model_zoo, hub_repo=args.hub_repo,
            checkpoint_url=args.checkpoint_url, code_url=args.code_url, license=args.license, weights=args.weights)
        out = export_robustbench(args.checkpoint, args.out, args.eval or (), submission)
        print(f"wrote the RobustBench submission of '{args.checkpoint}' to '{out}': "
              + ', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.'))))
        print(f"check it: robustbench.utils.load_model(NAME, model_dir='{out / 'models'}') after pasting the class of "
              f"model_zoo_entry.py into robustbench's model zoo; then open the issue of new_model_issue.md")
        return 0
    from ..export.hub import export_model, push_folder
    out = export_model(args.checkpoint, args.out, reports=args.eval or (), repo_id=args.repo_id, license=args.license,
                       weights=args.weights)
    held = json.loads((out / 'sp_timm.json').read_text()).get('weights', 'raw')  # which weights load_model chose
    print(f"exported '{args.checkpoint}' ({held} weights) to '{out}': "
          + ', '.join(sorted(p.name for p in out.iterdir())))
    print(f"load it with timm.create_model('local-dir:{out}', pretrained=True) after import sp_timm")
    if args.push:
        url = push_folder(out, args.repo_id, private=args.private)
        print(f'pushed to {args.repo_id}: {url}')
    return 0


def main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.push and not args.repo_id:
        parser.error('--push needs --repo-id ORG/NAME')
    if args.robustbench and args.push:
        parser.error('--push uploads the Hub folder; a --robustbench submission folder is not pushed (export without '
                     '--robustbench for the Hub)')
    return run_reporting_errors('sp-timm export', _export, args)


register_command('export', "write timm's Hub format (config.json, model.safetensors) with a model card", build_parser,
                 main=main)
