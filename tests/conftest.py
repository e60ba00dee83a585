"""Shared fixtures: tiny datasets written through augkit's own writer, the real PBC folder, and
third-party plugin packages installed (as real distributions) into a temporary site folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from augkit.data.writer import DatasetWriter

ROOT = Path(__file__).resolve().parents[1]
PBC = ROOT.parent / "shared" / "data" / "pbc128"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_dataset(path: Path, counts=(6, 4, 3), size: int = 16, seed: int = 0, **writer_kwargs) -> Path:
    """A small dataset with random pixels: class k has counts[k] real rows."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
    names = [f"class{k}" for k in range(len(counts))]
    with DatasetWriter(path, class_names=names, image_size=size, provenance={"test": True}, **writer_kwargs) as w:
        w.append(images[: len(labels) // 2], labels[: len(labels) // 2])
        w.append(images[len(labels) // 2:], labels[len(labels) // 2:])
    return path


@pytest.fixture
def tiny_h5(tmp_path) -> Path:
    return write_dataset(tmp_path / "tiny.h5")


@pytest.fixture
def pbc_path() -> Path:
    if not PBC.is_dir():
        pytest.skip(f"real data not found at {PBC} (the shared PBC folder is absent on this machine)")
    return PBC


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The example and broken plugin packages, pip-installed into a folder that tests put on the path."""
    site = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--no-index", "--target", str(site),
           str(FIXTURES / "augkit-plugin-example"), str(FIXTURES / "augkit-plugin-broken")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=site)
    assert result.returncode == 0, f"installing the fixture plugins failed:\n{result.stdout}\n{result.stderr}"
    return site


@pytest.fixture
def plugin_env(plugin_site) -> dict:
    """Environment for an `augkit` subprocess that sees the fixture plugins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("AUGKIT_TRACEBACK", None)
    return env


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `augkit` command in a fresh process, as a user would."""
    exe = Path(sys.executable).with_name("augkit")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
