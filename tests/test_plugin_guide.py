"""docs/plugins.md and its example: a trainable generator built on augkit's public modules only,
installed offline into a temporary environment, run through a recipe and reused from the cache."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augkit.hookspecs import PUBLIC_MODULES
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "fixtures" / "augkit-plugin-generator"


def _augkit_imports(package: Path) -> set[str]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            found.update(n for n in names if n == "augkit" or n.startswith("augkit."))
    return found


def _public(module: str) -> bool:
    return module in PUBLIC_MODULES or any(module.startswith(p + ".") for p in PUBLIC_MODULES if p != "augkit")


def test_every_public_module_exists_and_the_guide_describes_it():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for module in PUBLIC_MODULES:
        importlib.import_module(module)
        assert f"`{module}`" in guide, module


@pytest.mark.parametrize("package", [EXAMPLE / "augkit_tinyvae", ROOT / "plugins" / "augkit_classical",
                                     ROOT / "plugins" / "augkit_gan",
                                     ROOT / "plugins" / "augkit-diffusion" / "augkit_diffusion"], ids=lambda p: p.name)
def test_plugins_import_only_public_modules(package):
    imports = _augkit_imports(package)
    assert imports, "the walker found no augkit import"
    assert {m for m in imports if not _public(m)} == set()
    assert not _public("augkit.runner") and not _public("augkit.cli")  # the rule has teeth


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("tinyvae-site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--no-index", "--target", str(site), str(EXAMPLE)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=site)
    assert result.returncode == 0, f"installing the example failed:\n{result.stdout}\n{result.stderr}"
    return site


RECIPE = """
[recipe]
name = "tinyvae"

[data]
source = "demo"
image_size = 16
demo_images = 120

[[augment]]
name = "tinyvae"
amount = 0.5
params = { steps = 30, batch_size = 16, width = 32, latent_dim = 8 }

[[augment]]
id = "perturb"
name = "latent_perturb"
amount = 0.25
params = { generator = "tinyvae", encoder_steps = 4, encoder_batch_size = 8, encoder_channels = 8 }
"""


def test_the_example_runs_through_a_recipe_and_is_reused_from_the_cache(example_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")]),
           "AUGKIT_CACHE_DIR": str(tmp_path / "cache")}
    listing = run_cli("plugins", env=env)
    assert "tinyvae" in listing.stdout and "augkit-plugin-tinyvae" in listing.stdout, listing.stdout
    recipe = tmp_path / "tinyvae.toml"
    recipe.write_text(RECIPE)
    first = run_cli("--quiet", "run", str(recipe), "--out", str(tmp_path / "first"), env=env)
    assert first.returncode == 0, first.stderr
    from augkit.data.reader import H5Dataset

    shard = H5Dataset(tmp_path / "first" / "shards" / "tinyvae.h5")
    assert len(shard.where(origin="tinyvae")) > 0
    assert (tmp_path / "first" / "steps" / "tinyvae" / "tinyvae" / "losses.csv").is_file()  # the loop's run folder
    assert len(H5Dataset(tmp_path / "first" / "shards" / "perturb.h5").where(origin="latent_perturb")) > 0
    second = run_cli("--quiet", "run", str(recipe), "--out", str(tmp_path / "second"), env=env)
    assert second.returncode == 0, second.stderr
    log = (tmp_path / "second" / "run.log").read_text()
    assert "reusing the trained 'tinyvae' from the cache" in log
