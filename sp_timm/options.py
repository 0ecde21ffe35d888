""" Command-line options at argparse level, light enough for every ``--help``: the help formatter that shows each
flag's default, and the ``--debug`` switch shared by the commands. """
import argparse

__all__ = ['DefaultsHelpFormatter', 'add_debug_arg', 'DEBUG_ENV']

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
