""" The house's rules, checked on sp-timm's own import graph (read from the code with ``ast``, every ``import`` and
``from ... import`` at any depth, function-level ones included): no import cycle, no module importing one on a
higher floor, no private name (``_x``) imported from another module, no private module reached from outside its
package, and no function with more than 12 parameters. docs/architecture.md describes the floors. """
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'sp_timm'

# the floors, from the ground up: a module may import its own floor (without a cycle) and the floors below it
FLOORS: Dict[str, int] = {
    'sp_timm': 1, 'sp_timm.version': 1, 'sp_timm._lazy': 1, 'sp_timm.compat': 1, 'sp_timm.errors': 1,
    'sp_timm.files': 1, 'sp_timm.formatting': 1, 'sp_timm.options': 1, 'sp_timm.threat': 1,
    'sp_timm.threat.budget': 1,
    'sp_timm.threat.pgd': 2, 'sp_timm.losses': 2, 'sp_timm.models': 2, 'sp_timm.data': 2, 'sp_timm.records': 2,
    'sp_timm.checkpoint': 3, 'sp_timm.model_source': 3, 'sp_timm.robustbench_adapter': 3,
    'sp_timm.train': 4, 'sp_timm.eval': 4,
    'sp_timm.export': 5,
    'sp_timm.cli': 6, 'sp_timm.demo': 6,
}
ENTRY_POINTS = ('__main__',)  # `python -m ...`: the top of the house by definition, whatever they import
MAX_PARAMETERS = 12
PARAMETER_EXCEPTIONS = {('sp_timm.losses._factory', 'create_classification_loss'),  # timm's signature, on purpose
                        ('sp_timm.losses._triton', '_sp_rows_kernel')}  # a Triton kernel's arguments


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in PACKAGE.rglob('*.py')}


def is_package(name: str) -> bool:
    return MODULES[name].name == '__init__.py'


def resolve(importer: str, level: int, module: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if not level:
        return module
    base = importer.split('.') if is_package(importer) else importer.split('.')[:-1]
    base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([module] if module else []))


def imports(name: str) -> Iterator[Tuple[str, str, int]]:
    """``(imported module, imported name or '', line)`` for every sp_timm import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('sp_timm'):
                    yield alias.name, '', node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node.level, node.module or '')
            if not target.startswith('sp_timm'):
                continue
            for alias in node.names:
                submodule = f'{target}.{alias.name}'
                if submodule in MODULES:  # `from . import losses`: the submodule itself
                    yield submodule, '', node.lineno
                else:
                    yield target, alias.name, node.lineno


def floor(name: str) -> int:
    best = max((prefix for prefix in FLOORS if name == prefix or name.startswith(prefix + '.')), key=len, default=None)
    if best is None:
        raise AssertionError(f'{name} has no floor in tests/test_architecture.py FLOORS: give it one '
                             f'(and describe it in docs/architecture.md).')
    return FLOORS[best]


def graph() -> Dict[str, Set[str]]:
    return {name: {target for target, _, _ in imports(name) if target in MODULES and target != name}
            for name in MODULES}


def test_every_module_has_a_floor():
    for name in MODULES:
        floor(name)


def test_no_import_cycle():
    edges = graph()
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: List[List[str]] = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_imports_point_down():
    upward = sorted({f'{name} (floor {floor(name)}) imports {target} (floor {floor(target)}), line {line}'
                     for name in MODULES if name.rsplit('.', 1)[-1] not in ENTRY_POINTS
                     for target, _, line in imports(name) if target in MODULES and floor(target) > floor(name)})
    assert not upward, '\n'.join(upward)


def _package_of(name: str) -> str:
    return name if is_package(name) else name.rsplit('.', 1)[0]


def test_no_private_name_crosses_a_module():
    crossing = []
    for name in MODULES:
        for target, imported, line in imports(name):
            if imported.startswith('_') and not imported.startswith('__') and target != name:
                crossing.append(f'{name}:{line} imports {imported} from {target}')
            private_parts = [i for i, part in enumerate(target.split('.'))
                             if part.startswith('_') and part != '__init__']
            for i in private_parts:  # a private module is reachable from inside its own package only
                owner = '.'.join(target.split('.')[:i])
                if not (name == owner or name.startswith(owner + '.')):
                    crossing.append(f'{name}:{line} imports the private module {target}')
    assert not crossing, '\n'.join(crossing)


def test_no_function_takes_more_than_twelve_parameters():
    wide = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and (name, node.name) not in PARAMETER_EXCEPTIONS):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [p for p in (a.vararg, a.kwarg) if p]
                count = len([p for p in params if p.arg not in ('self', 'cls')])
                if count > MAX_PARAMETERS:
                    wide.append(f'{name}.{node.name}: {count} parameters')
    assert not wide, '\n'.join(wide)


@pytest.mark.parametrize('rule', ['cycle', 'upward', 'private'])
def test_the_checks_catch_what_they_forbid(rule, monkeypatch):
    """Each rule fails on a planted violation (so a passing suite means something)."""
    planted = {'cycle': ('sp_timm.errors', 'from .files import atomic_write_text\n'),
               'upward': ('sp_timm.files', 'from .cli import main\n'),
               'private': ('sp_timm.files', 'from .eval.audit import _apgd\n')}[rule]
    name, line = planted
    original = MODULES[name].read_text()
    monkeypatch.setattr(Path, 'read_text', lambda self, *a, **k: (original + line) if self == MODULES[name]
                        else Path.read_bytes(self).decode())
    check = {'cycle': test_no_import_cycle, 'upward': test_imports_point_down,
             'private': test_no_private_name_crosses_a_module}[rule]
    with pytest.raises(AssertionError):
        check()
