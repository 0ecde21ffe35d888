""" Run RobustBench's own evaluator, ``robustbench.eval.benchmark()`` (robustbench 1.1.1), on pyautoattack 0.2.0.

robustbench was written against the AutoAttack git repository's API; pyautoattack 0.2.0 (the same attacks, on
PyPI) changed it. What ``benchmark()`` does that pyautoattack refuses, and what the adapter does about it:

- ``AutoAttack(model, norm=, eps=, version=, device=, log_path=)``: pyautoattack has no ``log_path`` (it logs
  through the ``logging`` logger ``'auto-attack'``). The adapter accepts it and writes that logger's messages to
  the file while the evaluation runs, as the old ``Logger`` did.
- ``AutoAttack`` without ``seed``: the old class and pyautoattack both seed from the clock then, so two runs of
  ``benchmark()`` differ. The adapter fills in ``seed`` (default 0, ``sp-timm eval``'s default) so the numbers
  are reproducible and comparable with ``sp-timm eval --seed 0``.
- ``run_standard_evaluation(x, y, bs=..., state_path=...)``: pyautoattack takes ``batch_size=`` (keyword only)
  and returns ``(x_adv, y_adv)``; robustbench passes ``bs`` and uses the result as the adversarial images. The
  adapter maps ``bs`` and returns ``x_adv`` alone (both with ``return_labels=True``, as the old API).
- ``import autoattack`` / ``autoattack.state``: handled by ``sp_timm.compat`` (an alias onto pyautoattack).

Usage (the ``[robustbench]`` extra)::

    from sp_timm.robustbench_adapter import benchmark
    clean, robust = benchmark(model, n_examples=10000, dataset='cifar10', threat_model='Linf', eps=8 / 255,
                              data_dir='/data', batch_size=500, seed=0)

or ``with robustbench_autoattack(seed=0): robustbench.eval.benchmark(...)``. Nothing is changed outside the block.
"""
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

from .compat import install_robustbench_compat

__all__ = ['legacy_autoattack_class', 'robustbench_autoattack', 'benchmark', 'DEFAULT_SEED']

DEFAULT_SEED = 0
_LOGGER = 'auto-attack'  # pyautoattack's logger (sp_timm.eval.attacks.AUTOATTACK_LOGGER)


def legacy_autoattack_class(default_seed: Optional[int] = DEFAULT_SEED):
    """A subclass of pyautoattack's ``AutoAttack`` with the old constructor and ``run_standard_evaluation``
    (see the module docstring); ``seed=None`` in its constructor means ``default_seed``."""
    from pyautoattack import AutoAttack

    class LegacyAutoAttack(AutoAttack):
        """pyautoattack's ``AutoAttack`` behind the AutoAttack repository's API (what robustbench calls)."""

        def __init__(self, model, norm: str = 'Linf', eps: float = .3, seed: Optional[int] = None, verbose: bool = True,
                     attacks_to_run=(), version: str = 'standard', is_tf_model: bool = False, device='cuda',
                     log_path: Optional[str] = None):
            if is_tf_model:
                raise ValueError('pyautoattack 0.2.0 attacks PyTorch models only (is_tf_model=True is not supported).')
            attacks = list(attacks_to_run) if version == 'custom' and attacks_to_run else None
            super().__init__(model, norm=norm, eps=eps, seed=default_seed if seed is None else seed, version=version,
                             device=device, attacks=attacks)
            self.verbose, self.log_path = verbose, log_path

        @contextmanager
        def _log_file(self) -> Iterator[None]:
            if self.log_path is None:
                yield
                return
            logger = logging.getLogger(_LOGGER)
            handler = logging.FileHandler(self.log_path, mode='a', encoding='utf-8')
            handler.setLevel(logging.DEBUG)
            level = logger.level
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            try:
                yield
            finally:
                logger.removeHandler(handler)
                logger.setLevel(level)
                handler.close()

        def run_standard_evaluation(self, x_orig, y_orig, bs: int = 250, return_labels: bool = False,
                                    state_path: Optional[Path] = None, *, batch_size: Optional[int] = None):
            """The old signature: ``bs`` (or ``batch_size``); returns the adversarial images, with their predicted
            classes when ``return_labels``."""
            with self._log_file():
                x_adv, y_adv = super().run_standard_evaluation(
                    x_orig, y_orig, batch_size=batch_size or bs,
                    state_path=None if state_path is None else Path(state_path))
            return (x_adv, y_adv) if return_labels else x_adv

        def clean_accuracy(self, x_orig, y_orig, bs: int = 250):
            with self._log_file():
                return super().clean_accuracy(x_orig, y_orig, bs=bs)

    return LegacyAutoAttack


def _robustbench_eval():
    if not install_robustbench_compat():
        import importlib.util
        if importlib.util.find_spec('robustbench') is None:
            raise ValueError("RobustBench's evaluator needs the [robustbench] extra: pip install "
                             "'sp-timm[robustbench]'.")
    import robustbench.eval
    return robustbench.eval


@contextmanager
def robustbench_autoattack(seed: Optional[int] = DEFAULT_SEED) -> Iterator[Any]:
    """Within the block, ``robustbench.eval.benchmark()`` builds its ``AutoAttack`` with the adapter (``seed``
    filled in when robustbench gives none). Yields the ``robustbench.eval`` module."""
    module = _robustbench_eval()
    original = module.AutoAttack
    module.AutoAttack = legacy_autoattack_class(seed)
    try:
        yield module
    finally:
        module.AutoAttack = original


def benchmark(model, *, seed: Optional[int] = DEFAULT_SEED, **kwargs) -> Tuple[float, float]:
    """``robustbench.eval.benchmark(model, **kwargs)`` on pyautoattack: (clean accuracy, robust accuracy) as
    fractions, exactly as RobustBench computes them (its data loading, its clean accuracy, AutoAttack over all
    points in one ``run_standard_evaluation`` call, the accuracy on the returned images)."""
    with robustbench_autoattack(seed) as module:
        return module.benchmark(model, **kwargs)
