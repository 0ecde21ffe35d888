""" Options as typed config objects that are also command-line flags, light enough for every ``--help``.

A config is a dataclass whose fields are declared with ``option(default, help, ...)``: the field is the one source
of the flag's name, default, type, choices and help. ``add_options`` builds the flags of a parser from it and
``from_namespace`` the config from the parsed flags, so the Python API and the command line cannot drift apart.
Also here: the help formatter that shows each flag's default, and the ``--debug`` switch. """
import argparse
import copy
import math
from dataclasses import MISSING, Field, field, fields
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ['DefaultsHelpFormatter', 'add_debug_arg', 'DEBUG_ENV', 'option', 'OptionSpec', 'option_fields',
           'field_default', 'flag_names', 'add_options', 'from_namespace', 'as_flags', 'finite_float',
           'non_finite_options']

DEBUG_ENV = 'SP_TIMM_DEBUG'  # =1: full tracebacks, as --debug


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default appended, ``(default: X)``, unless its help already says what the
    default is or that the flag is required; switches read ``off`` / ``on``, unset values ``none``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if (not action.option_strings or action.default is argparse.SUPPRESS or action.required
                or 'default' in text.lower() or 'required' in text.lower()):
            return text
        value = action.default
        if action.nargs == 0:
            shown = 'on' if value else 'off'
        elif value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
            shown = 'none'
        elif isinstance(value, (list, tuple)):
            shown = ' '.join(str(v) for v in value)
        elif isinstance(value, float):
            shown = f'{value:g}'
        else:
            shown = str(value)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the full traceback of an error instead of one line."""
    parser.add_argument('--debug', action='store_true',
                        help=f'show the full traceback of an error (also: {DEBUG_ENV}=1)')


def option(default: Any = None, help: str = '', *, flags: Sequence[str] = (), group: str = '', type: Any = None,
           choices: Any = None, nargs: Any = None, const: Any = None, action: Any = None, metavar: Optional[str] = None,
           required: bool = False, exclusive: str = '') -> Any:
    """A dataclass field that is also a command-line flag: ``--name-with-dashes`` (or ``flags``) with ``help``,
    shown under the argument group ``group``. ``choices`` may be a function returning them (called when the parser
    is built, so light modules need not import what lists them). Fields with the same ``exclusive`` name form one
    mutually exclusive group, ``required`` when any of them is. A list or dict default is copied per instance."""
    spec = OptionSpec(help, tuple(flags), group, type, choices, nargs, const, action, metavar, required, exclusive)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={OPTION: spec})
    return field(default=default, metadata={OPTION: spec})


class OptionSpec(NamedTuple):
    """How a config field becomes a flag (``option``'s arguments)."""
    help: str
    flags: Tuple[str, ...]
    group: str
    type: Any
    choices: Any
    nargs: Any
    const: Any
    action: Any
    metavar: Optional[str]
    required: bool
    exclusive: str


OPTION = 'sp_timm.option'


def option_fields(cls: type) -> List[Field]:
    """The fields of dataclass ``cls`` that are flags, in their order."""
    return [f for f in fields(cls) if OPTION in f.metadata]


def field_default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def flag_names(f: Field) -> Tuple[str, ...]:
    """The flag strings of a config field (``('-b', '--batch-size')``), the long one last."""
    return f.metadata[OPTION].flags or (f"--{f.name.replace('_', '-')}",)


def add_options(parser: argparse.ArgumentParser, cls: type, groups: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One flag per option field of dataclass ``cls`` (``dest`` = the field's name, default = the field's default),
    in field order, each in the argument group its ``group`` names (created on first use; '' = the parser itself).
    Returns the groups, so that a later call (or the caller) can add to them."""
    groups = {} if groups is None else groups
    for f in option_fields(cls):
        spec: OptionSpec = f.metadata[OPTION]
        if spec.group and spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        target = groups[spec.group] if spec.group else parser
        if spec.exclusive:
            key = f'exclusive:{spec.exclusive}'
            if key not in groups:
                groups[key] = target.add_mutually_exclusive_group(required=spec.required)
            target, spec = groups[key], spec._replace(required=False)
        kwargs: Dict[str, Any] = dict(dest=f.name, help=spec.help, default=field_default(f))
        if spec.action == 'store_true':
            kwargs['action'] = 'store_true'
        else:
            choices = spec.choices() if callable(spec.choices) else spec.choices
            metavar = spec.metavar or (_metavar(spec.flags[-1]) if spec.flags and choices is None else None)
            extra = dict(type=finite_float if spec.type is float else spec.type, choices=choices, nargs=spec.nargs,
                         const=spec.const, action=spec.action, metavar=metavar, required=spec.required or None)
            kwargs.update({k: v for k, v in extra.items() if v is not None})
        target.add_argument(*flag_names(f), **kwargs)
    return groups


def finite_float(text: str) -> float:
    """The argparse type of every float flag: a number, and neither NaN nor infinite (no sp-timm flag means anything
    by them, and a NaN compares false with every bound, so it would pass the checks it should fail)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number") from None
    return value


def non_finite_options(config: Any) -> List[str]:
    """A problem sentence for each float option of dataclass instance ``config`` (or float in a list option) that is
    NaN or infinite: the Python API's counterpart of ``finite_float``."""
    problems = []
    for f in option_fields(type(config)):
        value = getattr(config, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            problems.append(f'{flag_names(f)[-1]} must be a finite number, got {value}.')
    return problems


def as_flags(cls: type, values: Dict[str, Any]) -> List[str]:
    """``values`` (option fields of dataclass ``cls``) as command-line flags, in the order given: a switch that is on
    as its flag alone, a list as its items, anything else as ``--flag value``."""
    by_name = {f.name: f for f in option_fields(cls)}
    flags: List[str] = []
    for name, value in values.items():
        flag = flag_names(by_name[name])[-1]
        if by_name[name].metadata[OPTION].action == 'store_true':
            flags += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(_flag_value, value)]
        else:
            flags += [flag, _flag_value(value)]
    return flags


def _flag_value(value: Any) -> str:
    """A value as a flag writes it: floats as short as they parse back to the same float (``5.0`` as ``5``)."""
    if isinstance(value, float):
        short = f'{value:g}'
        return short if float(short) == value else repr(value)
    return str(value)


def _metavar(flag: str) -> str:
    """argparse's metavar for a flag whose name is not the field's (``--audit-iters`` -> ``AUDIT_ITERS``)."""
    return flag.lstrip('-').replace('-', '_').upper()


def from_namespace(cls: type, namespace: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of dataclass ``cls`` from the parsed flags (its option fields) and ``overrides``."""
    values = {f.name: getattr(namespace, f.name) for f in option_fields(cls) if hasattr(namespace, f.name)}
    return cls(**dict(values, **overrides))
