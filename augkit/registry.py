"""The plugin registry: augmenters from every installed distribution's ``augkit`` entry points.

Each plugin loads and answers in isolation: one that fails to import, registers nothing, or returns
something unusable is recorded as broken (with its distribution and the reason) and the others keep
working. Using a broken plugin's augmenter raises a PluginError that says which package to fix.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from augkit import hookspecs
from augkit.augment import Augmenter
from augkit.errors import PluginError, UserError
from augkit.params import did_you_mean

ENTRY_POINT_GROUP = "augkit"


@dataclass
class PluginInfo:
    """One plugin: where it came from, what it provides, and why it is broken if it is."""

    name: str
    module: str
    distribution: str
    version: str
    augmenters: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def origin(self) -> str:
        return f"plugin '{self.name}' (distribution {self.distribution} {self.version})"


@dataclass
class AugmenterEntry:
    name: str
    cls: type[Augmenter]
    plugin: PluginInfo


class Registry:
    """Plugins and their augmenters. ``Registry()`` is empty; ``load_entry_points()`` fills it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._entries: dict[str, AugmenterEntry] = {}
        self._conflicts: dict[str, list[PluginInfo]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> "Registry":
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(name=ep.name, module=ep.value, distribution=dist.name if dist else "?",
                              version=dist.version if dist else "?")
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any failure of third-party code is recorded, not fatal
                info.error = f"failed to import '{ep.value}': {exc.__class__.__name__}: {exc}"
                self.plugins.append(info)
                continue
            self._add(obj, info)
        return self

    def register(self, obj: object, name: str, *, distribution: str = "(in-process)", version: str = "") -> PluginInfo:
        """Register a plugin object directly (a notebook, a test, a pipeline's own augmenter)."""
        info = PluginInfo(name=name, module=getattr(obj, "__name__", repr(obj)), distribution=distribution,
                          version=version)
        self._add(obj, info)
        return info

    def _add(self, obj: object, info: PluginInfo) -> None:
        self.plugins.append(info)
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation or a duplicate name
            info.error = f"cannot be registered: {exc}"
            return
        impls = [i for i in self.pm.hook.augkit_augmenters.get_hookimpls() if i.plugin_name == info.name]
        if not impls:
            info.error = "implements no augkit hook (expected a function `augkit_augmenters` marked @augkit.hookimpl)"
            return
        try:
            result = impls[0].function()
            classes = self._validate_result(result)
        except Exception as exc:  # noqa: BLE001
            info.error = f"augkit_augmenters() failed: {exc.__class__.__name__}: {exc}"
            return
        for name, cls in classes.items():
            info.augmenters.append(name)
            if name in self._entries:
                self._conflicts.setdefault(name, [self._entries[name].plugin]).append(info)
            else:
                self._entries[name] = AugmenterEntry(name, cls, info)

    @staticmethod
    def _validate_result(result: object) -> dict[str, type[Augmenter]]:
        if isinstance(result, dict):
            items = list(result.items())
        elif isinstance(result, (list, tuple)):
            items = [(getattr(c, "name", None), c) for c in result]
        else:
            raise TypeError(f"expected a list or dict of Augmenter subclasses, got {type(result).__name__}")
        classes = {}
        for name, cls in items:
            if not (inspect.isclass(cls) and issubclass(cls, Augmenter)):
                raise TypeError(f"{cls!r} is not a subclass of augkit.augment.Augmenter")
            if not isinstance(name, str) or not name:
                raise TypeError(f"{cls.__name__} has no name (set the class attribute `name`)")
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(cls.__abstractmethods__))
                raise TypeError(f"{cls.__name__} does not implement {missing}")
            classes[name] = cls
        return classes

    # -- lookup ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> AugmenterEntry:
        """The augmenter called ``name``, or an error that says what to do."""
        if name in self._conflicts:
            origins = " and ".join(p.origin for p in self._conflicts[name])
            raise PluginError(f"augmenter '{name}' is provided by both {origins}; uninstall one of them")
        if name in self._entries:
            return self._entries[name]
        broken = [p for p in self.plugins if p.error and p.name == name]
        if broken:
            raise PluginError(f"augmenter '{name}' is unavailable: {broken[0].origin} {broken[0].error}")
        known = ", ".join(self.names()) or "none"
        broken = [p for p in self.plugins if p.error]
        note = f"; {len(broken)} plugin(s) failed to load, see `augkit plugins`" if broken else ""
        raise UserError(f"unknown augmenter '{name}'{did_you_mean(name, self.names())} (installed: {known}){note}")

    def create(self, name: str, params: object = None) -> Augmenter:
        return self.get(name).cls(params)

    def plugin_of(self, augmenter: Augmenter | type[Augmenter]) -> PluginInfo | None:
        cls = augmenter if inspect.isclass(augmenter) else type(augmenter)
        entry = self._entries.get(cls.name)
        return entry.plugin if entry is not None and entry.cls is cls else None


_default: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry of installed plugins, loaded on first use."""
    global _default
    if _default is None or reload:
        _default = Registry().load_entry_points()
    return _default


def get_augmenter(name: str, params: object = None) -> Augmenter:
    """Create an installed augmenter by name: ``get_augmenter("classical", {"rotate": 90})``."""
    return get_registry().create(name, params)


def load_augmenter(path: str | Path) -> Augmenter:
    """A saved augmenter of any installed kind, rebuilt by the class its augmenter.json names."""
    return get_registry().get(Augmenter.saved_meta(path)["augmenter"]).cls.load(path)


def list_plugins() -> list[PluginInfo]:
    return list(get_registry().plugins)
