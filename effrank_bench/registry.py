"""Loads plugins through the ``effrank_bench`` entry points and is the one door to what they register."""
from __future__ import annotations

import difflib
import importlib.metadata
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy
from pydantic import ValidationError

from effrank_bench import hookspecs
from effrank_bench.errors import (EffrankError, RegistrationError, UnknownNameError, format_validation_error,
                                  one_line)
from effrank_bench.specs import ArchitectureSpec, DatasetSpec, ExecutorSpec, LossSpec, TargetSpec

ENTRY_POINT_GROUP = "effrank_bench"

SpecT = TypeVar("SpecT", ArchitectureSpec, TargetSpec, LossSpec, DatasetSpec, ExecutorSpec)


@dataclass(frozen=True)
class Registered(Generic[SpecT]):
    spec: SpecT
    plugin: str


# kind -> (hook name, spec class); the order is the order ``list`` shows them in.
_KINDS: dict[str, tuple[str, type]] = {
    "architecture": ("register_architectures", ArchitectureSpec),
    "target": ("register_targets", TargetSpec),
    "loss": ("register_losses", LossSpec),
    "dataset": ("register_datasets", DatasetSpec),
    "executor": ("register_executors", ExecutorSpec),
}


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self, plugins: Iterable[tuple[str, object]] = (), *, entry_points: bool = True):
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        self._dists: dict[str, str] = {}  # plugin name -> the package that installed it
        if entry_points:
            self._load_entry_points(pm)
        for name, plugin in plugins:
            _register(pm, plugin, name, f"plugin '{name}'")
        _check_hook_names(pm)
        self._items: dict[str, dict[str, Registered]] = {kind: {} for kind in _KINDS}
        for kind, (hook_name, spec_type) in _KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                try:
                    impl.function(register=self._collector(kind, spec_type, impl.plugin_name))
                except ValidationError as err:
                    raise RegistrationError(
                        f"plugin '{impl.plugin_name}' built an invalid {kind} spec: "
                        + format_validation_error(err, spec_type.__name__)
                    ) from None
                except EffrankError:
                    raise
                except Exception as err:  # noqa: BLE001 - whatever a third party's hook raises
                    package = self._dists.get(impl.plugin_name)
                    raise RegistrationError(f"{_named(impl.plugin_name, package)} failed in {hook_name}: "
                                            f"{one_line(err)}{_way_out(package)}") from err
        self._check_architecture_targets()

    def _load_entry_points(self, pm: pluggy.PluginManager) -> None:
        """Every installed package's plugins, as pluggy's own loader takes them; a plugin that fails to
        import or to register (a hook whose arguments are not the hook's) stops here, named with its package.

        An entry point's name is its package's own: a package installed twice on the path (a stale copy of
        its metadata) is loaded once, and another package's entry point of a name already taken (``losses``,
        as the built-ins name theirs) is registered as ``package:name``, beside the first, not in its place.
        """
        seen: set[tuple[str, str]] = set()
        for dist in importlib.metadata.distributions():
            package = dist.metadata["Name"] or "(a package without a name)"
            for entry in dist.entry_points:
                if entry.group != ENTRY_POINT_GROUP or (_normalized(package), entry.name) in seen:
                    continue
                seen.add((_normalized(package), entry.name))
                name = entry.name if pm.get_plugin(entry.name) is None else f"{package}:{entry.name}"
                where = _named(name, package)
                try:
                    plugin = entry.load()
                except Exception as err:  # noqa: BLE001 - whatever a third party's module raises
                    raise RegistrationError(f"{where} cannot be loaded: {one_line(err)}{_way_out(package)}") from err
                if pm.is_registered(plugin):  # a module another entry point (a stale copy's, say) loaded already
                    continue
                _register(pm, plugin, name, where, _way_out(package))
                self._dists[name] = package

    def _collector(self, kind: str, spec_type: type, plugin: str):
        def register(spec) -> None:
            if not isinstance(spec, spec_type):
                raise RegistrationError(
                    f"plugin '{plugin}' registered a {type(spec).__name__} as {kind}; expected {spec_type.__name__}"
                )
            seen = self._items[kind].get(spec.name)
            if seen is not None:
                raise RegistrationError(
                    f"{kind} '{spec.name}' is registered twice: by plugin '{seen.plugin}' and by plugin '{plugin}'"
                )
            self._items[kind][spec.name] = Registered(spec, plugin)

        return register

    def _check_architecture_targets(self) -> None:
        for entry in self._items["architecture"].values():
            unknown = sorted(set(entry.spec.targets) - set(self._items["target"]))
            if unknown:
                raise RegistrationError(
                    f"architecture '{entry.spec.name}' (plugin '{entry.plugin}') uses target(s) "
                    f"{', '.join(unknown)} that no plugin registered with register_targets"
                )

    def get(self, kind: str, name: str):
        items = self._items[kind]
        if name in items:
            return items[name].spec
        valid = sorted(items)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownNameError(f"unknown {kind} '{name}'{hint} (valid: {', '.join(valid) or 'none registered'})")

    def architecture(self, name: str) -> ArchitectureSpec:
        return self.get("architecture", name)

    def recipe(self, arch: str) -> dict[str, Any]:
        """The run options ``arch`` defaults to (none for a name no plugin registered: the run's check names it)."""
        entry = self._items["architecture"].get(arch)
        return dict(entry.spec.recipe) if entry is not None else {}

    def target(self, name: str) -> TargetSpec:
        return self.get("target", name)

    def loss(self, name: str) -> LossSpec:
        return self.get("loss", name)

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("dataset", name)

    def executor(self, name: str) -> ExecutorSpec:
        return self.get("executor", name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def listing(self) -> dict[str, list[tuple[str, str, str]]]:
        """kind -> [(name, description, plugin (distribution))], for ``effrank-bench list``."""
        return {
            kind: [
                (name, entry.spec.description, self._plugin_label(entry.plugin))
                for name, entry in sorted(items.items())
            ]
            for kind, items in self._items.items()
        }

    def _plugin_label(self, plugin: str) -> str:
        dist = self._dists.get(plugin)
        return f"{plugin} ({dist})" if dist else plugin


def _register(pm: pluggy.PluginManager, plugin: object, name: str, where: str, fix: str = "") -> None:
    """``plugin`` registered; a hook whose arguments are not the hook's is refused naming ``where``."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as err:
        raise RegistrationError(f"{where} cannot be loaded: {one_line(err)}{fix}") from err


def _named(plugin: str, package: str | None) -> str:
    """``plugin 'x' of package y`` (or ``plugin 'x'`` for one passed in, of no package), for messages."""
    return f"plugin '{plugin}' of package {package}" if package else f"plugin '{plugin}'"


def _way_out(package: str | None) -> str:
    """What a message about an installed package's plugin ends with."""
    return f"; fix it or uninstall {package}" if package else ""


def _normalized(package: str) -> str:
    """A package's name as pip compares them (PEP 503): ``Effrank_Bench`` is ``effrank-bench``."""
    return re.sub(r"[-_.]+", "-", package).lower()


def _check_hook_names(pm: pluggy.PluginManager) -> None:
    """A hook implementation of a name no hook has (``register_target``) would never be called: refused,
    as pluggy's ``check_pending`` refuses it (an ``optionalhook=True`` implementation excepted). So is a
    function named after a hook without ``@hookimpl``, which pluggy passes over without a word."""
    hooks = [hook for hook, _ in _KINDS.values()]
    for plugin in pm.get_plugins():
        for hook in hooks:
            if callable(getattr(plugin, hook, None)) and not any(
                    impl.plugin is plugin for impl in getattr(pm.hook, hook).get_hookimpls()):
                raise RegistrationError(f"plugin '{pm.get_name(plugin)}' defines {hook} without @hookimpl, so it "
                                        "would never be called: decorate it (from effrank_bench import hookimpl)")
        for caller in pm.get_hookcallers(plugin) or ():
            if not caller.has_spec() and any(not impl.optionalhook for impl in caller.get_hookimpls()
                                             if impl.plugin is plugin):
                raise RegistrationError(f"plugin '{pm.get_name(plugin)}' implements {caller.name}, which is no "
                                        f"effrank-bench hook; the hooks are {', '.join(hooks)}")


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of every installed plugin, loaded on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default
