"""The plugin registry: augkit's own plugins, then every installed distribution's ``augkit`` entry points.

Each plugin loads and answers in isolation: one that fails to import, registers nothing, or returns
something unusable is recorded as broken (with its distribution and the reason) and the others keep
working. Using a broken plugin's augmenter raises a PluginError that says which package to fix.

augkit's own plugins (``DEFAULT_PLUGINS``) are loaded by module path, as datasette loads its default
plugins: a source checkout on ``PYTHONPATH`` has its augmenters without a reinstall. Installed, the same
modules are also named by entry points; those are not loaded twice. ``AUGKIT_PLUGINS`` (comma-separated
plugin names; empty: none) restricts which plugins load, built-in or not.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from augkit import __version__, hookspecs
from augkit.augment import Augmenter
from augkit.errors import PluginError, UserError
from augkit.params import did_you_mean

ENTRY_POINT_GROUP = "augkit"
PLUGINS_ENV = "AUGKIT_PLUGINS"
#: plugin name -> module of augkit's own plugins (the packages under plugins/)
DEFAULT_PLUGINS = {"classical": "augkit_classical", "gan": "augkit_gan"}
#: where a source checkout keeps them (absent from an installed augkit, whose packages are on sys.path)
_CHECKOUT_PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def allowed_plugins() -> set[str] | None:
    """The plugin names ``AUGKIT_PLUGINS`` allows, or None when it is not set (all load)."""
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _import_builtin(module: str):
    """Import one of augkit's own plugin packages: installed, or from the checkout's plugins/ folder."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        init = _CHECKOUT_PLUGINS / module / "__init__.py"
        if exc.name != module or not init.is_file():
            raise
    spec = importlib.util.spec_from_file_location(module, init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[module] = package  # before running it: its own `from module.sub import ...` find it
    try:
        spec.loader.exec_module(package)
    except BaseException:
        sys.modules.pop(module, None)
        raise
    return package


@dataclass
class PluginInfo:
    """One plugin: where it came from, what it provides, and why it is broken if it is."""

    name: str
    module: str
    distribution: str
    version: str
    augmenters: list[str] = field(default_factory=list)
    quality_checks: list[str] = field(default_factory=list)
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
    """Plugins and their augmenters. ``Registry()`` is empty; ``load_plugins()`` fills it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._entries: dict[str, AugmenterEntry] = {}
        self._checks: dict[str, object] = {}
        self._conflicts: dict[str, list[PluginInfo]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load_plugins(self) -> "Registry":
        """augkit's own plugins and every installed one, as ``AUGKIT_PLUGINS`` allows."""
        allowed = allowed_plugins()
        loaded_modules = set()
        for name, module in DEFAULT_PLUGINS.items():
            if allowed is not None and name not in allowed:
                continue
            info = PluginInfo(name=name, module=module, distribution="augkit", version=__version__)
            loaded_modules.add(module)
            try:
                obj = _import_builtin(module)
            except Exception as exc:  # noqa: BLE001 - recorded like any plugin's failure
                info.error = f"failed to import '{module}': {exc.__class__.__name__}: {exc}"
                self.plugins.append(info)
                continue
            self._add(obj, info)
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.value in loaded_modules or (allowed is not None and ep.name not in allowed):
                continue
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
        if allowed:
            missing = sorted(allowed - {p.name for p in self.plugins})
            if missing:
                found = sorted({*DEFAULT_PLUGINS, *(ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP))})
                raise UserError(f"{PLUGINS_ENV} names {', '.join(repr(m) for m in missing)}, which is no installed "
                                f"plugin{did_you_mean(missing[0], found)} (plugins: {', '.join(found)})")
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
        # through pluggy's hook callers of a manager holding this plugin alone: its failure stays its own
        own = pluggy.PluginManager(hookspecs.PROJECT)
        own.add_hookspecs(hookspecs)
        own.register(obj, name=info.name)
        if not own.hook.augkit_augmenters.get_hookimpls() and not own.hook.augkit_quality_checks.get_hookimpls():
            info.error = ("implements no augkit hook (expected a function `augkit_augmenters` or "
                          "`augkit_quality_checks` marked @augkit.hookimpl)")
            return
        try:
            classes = {}
            for result in own.hook.augkit_augmenters():
                classes.update(self._validate_result(result))
        except Exception as exc:  # noqa: BLE001
            info.error = f"augkit_augmenters() failed: {exc.__class__.__name__}: {exc}"
            return
        try:
            checks = [c for result in own.hook.augkit_quality_checks() for c in self._validate_checks(result)]
        except Exception as exc:  # noqa: BLE001
            info.error = f"augkit_quality_checks() failed: {exc.__class__.__name__}: {exc}"
            return
        taken = [c.name for c in checks if c.name in self._checks]
        if taken:
            info.error = f"quality check '{taken[0]}' is registered by another plugin already"
            return
        for check in checks:
            self._checks[check.name] = check
            info.quality_checks.append(check.name)
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
            own = getattr(cls, "name", None)
            if not isinstance(own, str) or not own:
                raise TypeError(f"{cls.__name__} has no name (set the class attribute `name`)")
            if name != own:
                # saved augmenters and shards name the class by `name`: a different key could not load them
                raise TypeError(f"key '{name}' differs from {cls.__name__}.name '{own}'; use the class's name")
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(cls.__abstractmethods__))
                raise TypeError(f"{cls.__name__} does not implement {missing}")
            classes[name] = cls
        return classes

    @staticmethod
    def _validate_checks(result: object) -> list:
        # by shape, not class: the registry sits below the quality package and must not import it
        if not isinstance(result, (list, tuple)):
            raise TypeError(f"expected a list of QualityCheck, got {type(result).__name__}")
        for check in result:
            if not (isinstance(getattr(check, "name", None), str) and callable(getattr(check, "run", None))):
                raise TypeError(f"{check!r} is not an augkit.quality.checks.QualityCheck")
        return list(result)

    def quality_checks(self) -> dict:
        """The quality checks plugins registered, by name."""
        return dict(self._checks)

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
        _default = Registry().load_plugins()
    return _default


def get_augmenter(name: str, params: object = None) -> Augmenter:
    """Create an installed augmenter by name: ``get_augmenter("classical", {"rotate": 90})``."""
    return get_registry().create(name, params)


def load_augmenter(path: str | Path) -> Augmenter:
    """A saved augmenter of any installed kind, rebuilt by the class its augmenter.json names."""
    return get_registry().get(Augmenter.saved_meta(path)["augmenter"]).cls.load(path)


def list_plugins() -> list[PluginInfo]:
    return list(get_registry().plugins)
