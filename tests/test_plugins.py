"""The plugin registry: built-ins via entry points, a real third-party package, broken plugins."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from augkit import hookimpl
from augkit.augment import Augmenter, Context, Samples
from augkit.data import H5Dataset
from augkit.errors import ParamError, PluginError, UserError
from augkit.registry import Registry, get_registry
from conftest import run_cli


def test_builtins_load_once_by_module_path():
    reg = Registry().load_plugins()
    entry = reg.get("classical")
    assert entry.plugin.distribution == "augkit" and entry.plugin.module == "augkit_classical"
    assert entry.plugin.error is None
    # installed, the same modules are also entry points: they must not be loaded a second time
    assert [p.name for p in reg.plugins].count("classical") == 1 and [p.name for p in reg.plugins].count("gan") == 1
    assert not reg._conflicts


def test_a_checkout_loads_its_builtins_without_being_installed(monkeypatch, tmp_path):
    import sys

    from augkit import registry

    package = tmp_path / "plugins" / "augkit_checkout_only"
    package.mkdir(parents=True)
    (package / "augmenters.py").write_text(
        "import numpy as np\nfrom augkit.augment import Augmenter\n\n"
        "class Zero(Augmenter):\n    name = 'zero_checkout'\n\n"
        "    def generate(self, label, n, ctx):\n        return np.zeros((n, 8, 8, 3), np.uint8)\n")
    (package / "__init__.py").write_text(
        "from augkit import hookimpl\nfrom augkit_checkout_only.augmenters import Zero\n\n"
        "@hookimpl\ndef augkit_augmenters():\n    return [Zero]\n")
    monkeypatch.setattr(registry, "_CHECKOUT_PLUGINS", tmp_path / "plugins")
    monkeypatch.setattr(registry, "DEFAULT_PLUGINS", {"checkout": "augkit_checkout_only"})
    monkeypatch.setenv("AUGKIT_PLUGINS", "checkout")
    monkeypatch.delitem(sys.modules, "augkit_checkout_only", raising=False)
    monkeypatch.delitem(sys.modules, "augkit_checkout_only.augmenters", raising=False)
    reg = Registry().load_plugins()
    assert reg.names() == ["zero_checkout"]
    assert (reg.get("zero_checkout").plugin.distribution, reg.get("zero_checkout").plugin.error) == ("augkit", None)


def test_augkit_plugins_restricts_what_loads(monkeypatch):
    monkeypatch.setenv("AUGKIT_PLUGINS", "classical")
    assert Registry().load_plugins().names() == ["classical"]
    monkeypatch.setenv("AUGKIT_PLUGINS", "")
    assert Registry().load_plugins().names() == []
    monkeypatch.setenv("AUGKIT_PLUGINS", "classical, gann")
    with pytest.raises(UserError, match="AUGKIT_PLUGINS names 'gann', which is no installed plugin; did you mean 'gan'"):
        Registry().load_plugins()


def test_augkit_plugins_naming_no_plugin_is_one_line_and_exit_2():
    import os

    result = run_cli("plugins", env={**os.environ, "AUGKIT_PLUGINS": "nosuch"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "AUGKIT_PLUGINS names 'nosuch'" in result.stderr


def _loaded(monkeypatch, site) -> Registry:
    monkeypatch.syspath_prepend(str(site))
    return Registry().load_plugins()


def test_third_party_plugin_is_found_with_its_distribution(monkeypatch, plugin_site):
    reg = _loaded(monkeypatch, plugin_site)
    entry = reg.get("invert_example")
    assert (entry.plugin.distribution, entry.plugin.version) == ("augkit-plugin-example", "1.2.3")
    assert "classical" in reg.names()  # the built-ins are unaffected


def test_broken_plugins_are_reported_and_the_rest_work(monkeypatch, plugin_site):
    reg = _loaded(monkeypatch, plugin_site)
    errors = {p.name: p.error for p in reg.plugins}
    assert "augkit_dependency_that_does_not_exist" in errors["broken_import"]
    assert "not a subclass of augkit.augment.Augmenter" in errors["broken_result"]
    assert errors["broken_generate"] is None and errors["example"] is None and errors["classical"] is None
    with pytest.raises(PluginError, match=r"plugin 'broken_import' \(distribution augkit-plugin-broken 0.0.1\)"):
        reg.get("broken_import")
    with pytest.raises(UserError, match="2 plugin\\(s\\) failed to load"):
        reg.get("no_such_thing")


def test_cli_lists_and_uses_a_third_party_plugin(plugin_env, tiny_h5, tmp_path):
    listing = run_cli("plugins", env=plugin_env)
    assert listing.returncode == 0, listing.stderr
    assert "invert_example" in listing.stdout and "augkit-plugin-example" in listing.stdout
    assert "broken" in listing.stdout and "classical" in listing.stdout
    out = tmp_path / "inv.h5"
    result = run_cli("--quiet", "augment", "invert_example", "--data", str(tiny_h5), "--per-class", "2",
                     "--param", "strength=1.0", "--out", str(out), env=plugin_env)
    assert result.returncode == 0, result.stderr
    ds = H5Dataset(out)
    synthetic = ds.where(origin="invert_example")
    assert len(synthetic) == 6
    parents = ds.read(synthetic.parent)
    np.testing.assert_array_equal(synthetic.read(np.arange(6)), 255 - parents)


def test_crash_in_generate_names_plugin_and_leaves_no_file(plugin_env, tiny_h5, tmp_path):
    out = tmp_path / "x.h5"
    result = run_cli("augment", "crashes_in_generate", "--data", str(tiny_h5), "--amount", "0.5",
                     "--out", str(out), env=plugin_env)
    assert result.returncode == 1
    assert "plugin 'broken_generate' (distribution augkit-plugin-broken 0.0.1)" in result.stderr
    assert "ZeroDivisionError: the plugin's own bug" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


@dataclass(frozen=True)
class _P:
    rotate: float = field(default=10.0, metadata={"min": 0, "max": 90})
    mode: str = "a"


class _Local(Augmenter):
    name = "local"
    Params = _P

    def generate(self, label, n, ctx):
        return np.zeros((n, 8, 8, 3), np.uint8)


class _Abstract(Augmenter):
    name = "abstract"


class _Plugin:
    @hookimpl
    def augkit_augmenters(self):
        return [_Local]


def test_in_process_registration_and_name_conflicts():
    reg = Registry()
    reg.register(_Plugin(), "mine", distribution="my-pipeline")
    assert isinstance(reg.create("local", {"rotate": 5}), _Local)
    reg.register(SimpleNamespace(augkit_augmenters=hookimpl(lambda: [_Local])), "theirs",
                 distribution="their-pipeline")
    with pytest.raises(PluginError, match="both plugin 'mine'.*and plugin 'theirs'"):
        reg.get("local")


def test_hook_results_are_validated():
    reg = Registry()
    info = reg.register(SimpleNamespace(augkit_augmenters=hookimpl(lambda: [_Abstract])), "abs")
    assert "does not implement generate" in info.error
    info = reg.register(SimpleNamespace(augkit_augmenters=hookimpl(lambda: 42)), "num")
    assert "expected a list or dict" in info.error
    info = reg.register(object(), "empty")
    assert "implements no augkit hook" in info.error
    # a dict's key is what recipes and saved augmenters call the class: it must be the class's own name
    info = reg.register(SimpleNamespace(augkit_augmenters=hookimpl(lambda: {"other": _Local})), "renamed")
    assert "key 'other' differs from _Local.name 'local'" in info.error
    assert "other" not in reg.names() and "local" not in reg.names()


def test_parameters_are_typed_and_checked():
    with pytest.raises(ParamError, match="unknown parameter 'rotat'; did you mean 'rotate'"):
        _Local({"rotat": 3})
    with pytest.raises(ParamError, match="parameter 'rotate' must be a number, got 'ten'"):
        _Local({"rotate": "ten"})
    with pytest.raises(ParamError, match="parameter 'rotate' must be <= 90"):
        _Local({"rotate": 120})
    with pytest.raises(ParamError, match="parameter 'mode' must be a string, got 3"):
        _Local({"mode": 3})
    assert _Local({"rotate": 3}).params.rotate == 3.0  # an integer is a fine number


def test_generate_output_is_checked_against_the_contract(tiny_h5, tmp_path):
    from augkit.generate import augment_to_file

    class Wrong(_Local):
        name = "wrong"

        def generate(self, label, n, ctx):
            return Samples(np.zeros((n, 8, 8, 3), np.float32))

    train = H5Dataset(tiny_h5)
    with pytest.raises(PluginError, match=r"returned \(2, 8, 8, 3\) float32 from generate\(\); expected \(2, 16, 16, 3\) uint8"):
        augment_to_file(Wrong(), train, tmp_path / "o.h5", {"per_class": 2}, Context(seed=0, device="cpu"))
    assert not (tmp_path / "o.h5").exists()


def test_the_default_registry_is_cached():
    assert get_registry() is get_registry()
