""" Lazy package attributes (PEP 562) and a post-import hook: ``import sp_timm`` and the ``sp-timm`` command's
``--help`` / ``--version`` stay free of torch and timm until a name that needs them is used. """
import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ['lazy_attributes', 'when_imported']


def lazy_attributes(package: str, names: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``__getattr__`` and ``__dir__`` for the module ``package``: ``names`` maps each public name to the submodule
    (relative to ``package``) defining it, imported on first access; any submodule is reachable as an attribute."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f'{package}.{names[name]}'), name)
        elif not name.startswith('__') and importlib.util.find_spec(f'{package}.{name}') is not None:
            value = importlib.import_module(f'{package}.{name}')
        else:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        setattr(module, name, value)  # later lookups skip this function
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``name`` is first imported it lets the other finders find it, then wraps the
    loader's ``exec_module`` so that ``callback`` runs right after the module's code."""

    def __init__(self, name: str, callback: Callable[[], None]):
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Optional[Any] = None, target: Optional[Any] = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and no recursion through the lookup below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            self.callback()

        spec.loader.exec_module = exec_module
        return spec


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Run ``callback()`` once the top-level module ``name`` is imported: now if it already is, else right after
    its first import completes (whoever imports it)."""
    if name in sys.modules:
        callback()
    elif not any(isinstance(f, _AfterImport) and f.name == name and f.callback == callback for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))
