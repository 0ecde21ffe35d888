""" The benchmarks' saved-table convention: a markdown table headed by the command that made it, written with the
rows it came from as JSON (``{'command': ..., KEY: rows}``), so that ``--from-json`` prints the same table again
without re-running anything. """
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

Summarize = Callable[[List[Any]], str]


def _render(command: str, rows: List[Any], summarize: Summarize) -> str:
    return f'Command: `{command}`\n\n' + summarize(rows)


def print_saved(json_path: str, key: str, summarize: Summarize) -> None:
    """Print the table of a saved run."""
    log = json.loads(Path(json_path).read_text())
    print(_render(log['command'], log[key], summarize))


def publish(rows: List[Any], key: str, summarize: Summarize, out: Optional[str], stem: str) -> None:
    """Print the table of this run (its command line is this process's); with ``out``, also write it to
    ``OUT/STEM.md`` and the rows to ``OUT/STEM.json``, atomically."""
    command = f"python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}"
    table = _render(command, rows, summarize)
    if out:
        from sp_timm.files import atomic_write_json, atomic_write_text
        atomic_write_text(Path(out) / f'{stem}.md', table)
        atomic_write_json(Path(out) / f'{stem}.json', {'command': command, key: rows})
    print(table)
