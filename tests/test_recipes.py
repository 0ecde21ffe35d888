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


LT_PROTOCOL = sorted(p for p in RECIPES if p.stem.startswith(('cifar10lt50_', 'cifar100lt10_')))


def test_the_long_tail_literatures_protocol_has_every_loss_and_network():
    names = {p.stem for p in LT_PROTOCOL}
    for prefix in ('cifar10lt50_resnet18', 'cifar10lt50_wrn34_10', 'cifar100lt10_wrn34_10'):
        assert {f'{prefix}_pgdat_{loss}' for loss in ('ce', 'bsl', 'sp', 'sp_la')} <= names


@pytest.mark.parametrize('recipe', LT_PROTOCOL, ids=lambda p: p.stem)
def test_long_tail_protocol_recipes_follow_at_bsl(recipe):
    args = parse_train_args(['--config', str(recipe)])
    ratio = 50 if recipe.stem.startswith('cifar10lt50_') else 10
    assert args.dataset == ('cifar10-lt' if ratio == 50 else 'cifar100-lt') and args.imbalance_ratio == ratio
    assert args.imbalance_profile == 'exp'
    assert args.model == ('preact_resnet18_cifar' if '_resnet18_' in recipe.stem else 'wrn34_10_cifar')
    assert (args.epochs, args.lr, args.weight_decay, args.decay_milestones, args.decay_rate, args.batch_size) == \
        (100, 0.1, 5e-4, [75, 90], 0.1, 128)
    assert args.adv_loss == 'ce' and args.class_weight == 'none'
    loss = recipe.stem.rsplit('_pgdat_', 1)[1]
    assert args.logit_adjust == (1.0 if loss in ('bsl', 'sp_la') else None)
    assert args.loss == ('ce' if loss in ('ce', 'bsl') else 'sp_margin')
    header = recipe.read_text().split('\ndataset:')[0]
    assert 'AT-BSL' in header and 'Reproduces' in header and 'What the papers report' in header


def test_every_default_that_differs_from_timms_train_py_says_timms_and_why(capsys):
    import re
    from sp_timm.cli import main
    from sp_timm.records.train_config import TIMM_DEFAULTS, TrainConfig
    with pytest.raises(SystemExit):
        main(['train', '--help'])
    text = re.sub(r'\s+', ' ', capsys.readouterr().out)
    defaults = TrainConfig.__dataclass_fields__
    for name, (timm_default, why) in TIMM_DEFAULTS.items():
        flag = '--' + name.replace('_', '-')
        assert f"[timm's train.py: {timm_default}; here: {why}]" in text, flag
        assert str(defaults[name].default) not in ('', timm_default)  # it does differ
    docs = (Path(__file__).resolve().parents[1] / 'docs' / 'training.md').read_text()
    assert all(f"`--{n.replace('_', '-')}`" in docs.split('## Differences from timm')[1] for n in TIMM_DEFAULTS)
