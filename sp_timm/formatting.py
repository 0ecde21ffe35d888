""" How numbers are written for people: plain tables, accuracies in percent, intervals. One spelling each, so the
summary, the model card, the demo and the logs agree. Light: torch is imported only by ``percent``'s caller. """
from typing import Any, Optional, Sequence

__all__ = ['format_table', 'format_ci', 'percent']


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table (also valid markdown)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def fmt(cells):
        return '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in rows])


def format_ci(interval: Optional[Sequence[float]], digits: int = 2) -> str:
    """``[low, high]`` of a confidence interval, ``digits`` decimals; '' without one."""
    if not interval:
        return ''
    return f'[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]'


def percent(flags: Any) -> float:
    """The share of true entries of a boolean tensor, in percent (``100 * mean``, in double precision)."""
    return 100 * flags.double().mean().item()
