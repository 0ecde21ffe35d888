""" Every recipe parses as sp-timm train flags (unknown keys would be refused) and every Accelerate config loads
with Accelerate's own reader; each recipe's header says what it reproduces, how long it takes and how to run it. """
from pathlib import Path

import pytest

from sp_timm.cli.train import parse_train_args

RECIPES = sorted((Path(__file__).resolve().parents[1] / 'recipes').glob('*.yaml'))
ACCELERATE_CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'recipes' / 'accelerate').glob('*.yaml'))


def test_recipes_cover_the_issue():
    names = {p.stem for p in RECIPES}
    assert {'cifar10_wrn28_10_ce', 'cifar10_wrn28_10_sp', 'cifar10_wrn28_10_pgdat_ce', 'cifar10_wrn28_10_pgdat_sp',
            'cifar10lt_resnet32_ce', 'cifar10lt_resnet32_sp', 'cifar10lt_resnet32_pgdat_ce',
            'cifar10lt_resnet32_pgdat_sp', 'cifar100_wrn28_10_pgdat_sp', 'digits_small_cnn_ce',
            'digits_small_cnn_sp'} <= names
    assert {p.stem for p in ACCELERATE_CONFIGS} == {'1gpu', '8gpu', '2node_8gpu'}


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(recipe):
    args = parse_train_args(['--config', str(recipe)])
    header = [line for line in recipe.read_text().splitlines() if line.startswith('#')]
    assert (any(line.startswith('# Time:') for line in header)
            and any('--config recipes/' + recipe.name in line for line in header))
    assert args.dataset and args.model and args.loss in ('ce', 'sp_margin')
    if 'pgdat' in recipe.stem:
        assert args.adv == 'pgd' and abs(args.adv_eps - 8 / 255) < 1e-12 and args.adv_steps == 10
    assert args.val_split is None or args.val_split > 0  # model selection on a validation split, never on test
    assert ('_sp' in recipe.stem) == (args.loss == 'sp_margin')
    if args.loss == 'sp_margin':  # the study's default; its gradient is unbounded without clipping
        assert args.sp_margin == 4.0 and args.clip_grad == 5.0


def test_digits_recipes_are_the_demos():
    from dataclasses import replace
    from sp_timm.demo import DEMO_LOSSES, demo_train_config
    for loss in ('ce', 'sp'):
        from_recipe = parse_train_args(['--config', str(RECIPES[0].parent / f'digits_small_cnn_{loss}.yaml')])
        from_demo = demo_train_config(DEMO_LOSSES[loss], 'digits', from_recipe.epochs)
        assert from_recipe == replace(from_demo, config=from_recipe.config)


@pytest.mark.parametrize('config', ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file
    cluster = load_config_from_file(str(config))
    assert cluster.num_processes == {'1gpu': 1, '8gpu': 8, '2node_8gpu': 16}[config.stem]
    assert cluster.mixed_precision == 'bf16'


def test_cifar10_pgdat_recipes_average_weights_and_the_demo_does_not():
    recipes = Path(__file__).resolve().parents[1] / 'recipes'
    for name in ('cifar10_wrn28_10_pgdat_ce', 'cifar10_wrn28_10_pgdat_sp'):
        args = parse_train_args(['--config', str(recipes / f'{name}.yaml')])
        assert args.model_ema is True and args.model_ema_decay == 0.999 and args.model_ema_warmup is False, name
    for name in ('digits_small_cnn_ce', 'digits_small_cnn_sp'):  # the demo's defaults are unchanged
        assert parse_train_args(['--config', str(recipes / f'{name}.yaml')]).model_ema is False
