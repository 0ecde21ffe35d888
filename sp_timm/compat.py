""" Make ``import robustbench`` (PyPI 1.1.1) work next to pyautoattack.

robustbench imports ``autoattack`` and ``autoattack.state``: the module names of the AutoAttack git
repository. PyPI ships the same code as ``pyautoattack``, which robustbench itself requires. When robustbench
is installed and no ``autoattack`` module exists, a meta-path finder maps ``autoattack[.x]`` onto
``pyautoattack[.x]`` (the same module objects, so classes compare equal). Nothing is imported until
robustbench asks for it.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ['install_robustbench_compat']

_ALIAS, _TARGET = 'autoattack', 'pyautoattack'


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # the target module is already executed


class _AutoAttackAlias(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + '.'):
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(_TARGET + fullname[len(_ALIAS):]))


def install_robustbench_compat() -> bool:
    """Install the ``autoattack`` alias when robustbench needs it; return True when it is active."""
    if any(isinstance(f, _AutoAttackAlias) for f in sys.meta_path):
        return True
    find = importlib.util.find_spec
    if find('robustbench') is None or find(_TARGET) is None or find(_ALIAS) is not None:
        return False
    sys.meta_path.insert(0, _AutoAttackAlias())
    return True
