"""The plugin's registration with NeMo, made when NeMo's registries load, so ``import rnnt_plugin`` stays cheap.

Three NeMo modules hold what the plugin must add to:
- ``nemo.core.classes.common``: the allow-list of ``_target_`` prefixes (``rnnt_plugin.`` joins it);
- ``nemo.core.optim``: the optimiser and scheduler registries (``mlperf_lamb``, ``MLPerfLRPolicy`` join them);
- ``nemo.collections.asr.parts.preprocessing.perturb``: the audio augmentations (``polyphase_speed`` and
  ``silence_insertion`` join them).

:func:`install` registers at once with each of them already imported, and for the others puts a finder on
``sys.meta_path`` that registers right after the module has been executed. So ``import rnnt_plugin`` does not
import NeMo (the data tools and the ONNX runtime path never need it), yet any later use of NeMo sees the plugin.
"""

import importlib.abc
import sys
from types import ModuleType
from typing import Callable, Dict

TARGET_PREFIX = "rnnt_plugin."


def _allow_target_prefix(common: ModuleType) -> None:
    if TARGET_PREFIX not in common.ALLOWED_TARGET_PREFIXES:
        common.ALLOWED_TARGET_PREFIXES.append(TARGET_PREFIX)


def _register_optimisation(_: ModuleType) -> None:
    from rnnt_plugin.optim import register_with_nemo

    register_with_nemo()


def _register_perturbations(perturb: ModuleType) -> None:
    from rnnt_plugin.data.silence import SilenceInsertion
    from rnnt_plugin.data.speed import PolyphaseSpeedPerturbation

    perturb.perturbation_types.setdefault("polyphase_speed", PolyphaseSpeedPerturbation)
    perturb.perturbation_types.setdefault("silence_insertion", SilenceInsertion)


HOOKS: Dict[str, Callable[[ModuleType], None]] = {
    "nemo.core.classes.common": _allow_target_prefix,
    "nemo.core.optim": _register_optimisation,
    "nemo.collections.asr.parts.preprocessing.perturb": _register_perturbations,
}


class _RunAfterExec(importlib.abc.Loader):
    """Wraps a module's loader; calls ``hook(module)`` once the module has been executed."""

    def __init__(self, loader: importlib.abc.Loader, hook: Callable[[ModuleType], None]):
        self.loader = loader
        self.hook = hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.hook(module)


class _NemoRegistryFinder(importlib.abc.MetaPathFinder):
    """Finds the hooked NeMo modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        hook = HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RunAfterExec(spec.loader, hook)
                return spec
        return None


def install() -> None:
    """Register with the NeMo modules already imported; hook the rest. Safe to call any number of times."""
    for name, hook in HOOKS.items():
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None:
            hook(module)
    if not any(isinstance(finder, _NemoRegistryFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NemoRegistryFinder())
