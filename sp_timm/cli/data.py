""" ``sp-timm data``: per-class train / test counts and the long-tail groups of a dataset. """
import argparse

from ..formatting import format_table
from .common import DefaultsHelpFormatter, add_data_args
from .registry import register_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sp-timm data', formatter_class=DefaultsHelpFormatter, description=(
        'Training and test images per class of a dataset (the count formula, or the loaded data with --data-dir), with '
        'the long-tail group of each class and the rule that formed the groups.'))
    add_data_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data import GROUP_RULES, LT_SUFFIX, class_groups, create_dataset, dataset_spec, group_rule, longtail_counts
    from ..data.class_names import class_names
    spec = dataset_spec(args.dataset)
    long_tailed = args.dataset.endswith(LT_SUFFIX)
    if spec.hub_id is None or args.data_dir:
        def load(split):
            return create_dataset(args.dataset, split, args.data_dir, args.imbalance_ratio, args.imbalance_profile)
        train, test = load('train'), load('test')
        classes, train_counts, test_counts = train.classes, train.class_counts(), test.class_counts()
        origin = f'counted in the loaded data ({train.source})'
    else:
        classes = class_names(spec.name, spec.num_classes)
        train_counts = (longtail_counts(spec.train_per_class, spec.num_classes, args.imbalance_ratio,
                                        args.imbalance_profile)
                        if long_tailed else [spec.train_per_class] * spec.num_classes)
        test_counts = [spec.test_per_class] * spec.num_classes
        origin = f"from the count formula (data not loaded; --data-dir counts a local copy of '{spec.hub_id}')"
    rule = group_rule(train_counts)
    groups = class_groups(train_counts, rule)
    group_of = {c: g for g, members in groups.items() for c in members}
    title = args.dataset + (f', {args.imbalance_profile} profile, imbalance ratio {args.imbalance_ratio:g}'
                            if long_tailed else '')
    print(f'{title}: {sum(train_counts)} train / {sum(test_counts)} test images, {origin}\n')
    rows = [[str(c), classes[c], str(n), str(m), group_of[c]] for c, (n, m) in enumerate(zip(train_counts,
                                                                                             test_counts))]
    print(format_table(['class', 'name', 'train', 'test', 'group'], rows))
    print(f'\ngroups ({GROUP_RULES[rule]}): ' + ', '.join(f'{g}: {len(m)} classes' for g, m in groups.items()))
    return 0


register_command('data', 'per-class train / test counts and long-tail groups of a dataset', build_parser, run=run)
