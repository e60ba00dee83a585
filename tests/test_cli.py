"""The command line as a user meets it: happy paths, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from augkit import __version__
from augkit.cli import cli
from augkit.data import H5Dataset
from conftest import write_dataset


def invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *args], catch_exceptions=False)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_import_info_split_augment_export(tmp_path):
    data = tmp_path / "demo.h5"
    assert invoke("data", "import", "demo", str(data), "--size", "16", "--n", "120").exit_code == 0
    info = json.loads(invoke("data", "info", str(data), "--json").stdout)
    assert info["rows"] == 120 and info["origins"] == {"real": 120}
    result = invoke("data", "split", str(data), "--out", str(tmp_path / "split.json"), "--seed", "1")
    assert result.exit_code == 0 and "train" in result.stdout
    out = tmp_path / "aug.h5"
    result = invoke("augment", "classical", "--data", str(data), "--amount", "0.5", "--out", str(out),
                    "--split", str(tmp_path / "split.json"), "--param", "rotate=45", "--seed", "3")
    assert result.exit_code == 0, result.output
    ds = H5Dataset(out)
    assert len(ds.where(origin="real")) == 120 and ds.provenance["augment"]["params"]["rotate"] == 45.0
    table = invoke("data", "info", str(out)).stdout
    assert "classical" in table and "total" in table
    result = invoke("data", "export", str(out), str(tmp_path / "view"), "--limit", "2")
    assert result.exit_code == 0
    pngs = list((tmp_path / "view").rglob("*.png"))
    assert len(pngs) == 2 * len(ds.class_names) * 2
    assert {p.parent.parent.name for p in pngs} == {"real", "classical"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "info", "missing.h5"], "missing.h5: no such file"),
        (["data", "import", "nowhere", "o.h5"], "nowhere: no such file or folder"),
        (["data", "import", "demo", "o.h5", "--size", "3"], "'--size': 3 is not in the range 8<=x<=1024"),
        (["augment", "clasical", "--data", "{tiny}", "--amount", "0.5", "--out", "o.h5"],
         "unknown augmenter 'clasical'; did you mean 'classical'?"),
        (["augment", "classical", "--data", "{tiny}", "--out", "o.h5"], "exactly one of --amount"),
        (["augment", "classical", "--data", "{tiny}", "--amount", "0.5", "--out", "o.h5", "--param", "spin=3"],
         "augmenter 'classical': unknown parameter 'spin'"),
        (["augment", "classical", "--data", "{tiny}", "--amount", "-1", "--out", "o.h5"],
         "'--amount': -1.0 is not in the range x>0"),
        (["augment", "classical", "--data", "{tiny}", "--amount", "0.5", "--out", "{tiny}"],
         "already exists; pass --force"),
        (["augment", "classical", "--data", "{tiny}", "--balance-to", "most", "--out", "o.h5"],
         "--balance-to: expected 'max' or an integer"),
        (["data", "split", "{tiny}", "--out", "s.json", "--val", "0.5", "--test", "0.6"], "train > 0"),
        (["data", "export", "{tiny}", "view", "--origin", "gan"], "origin 'gan' not in this dataset"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    tiny = write_dataset(tmp_path / "tiny.h5")
    result = invoke(*[a.replace("{tiny}", str(tiny)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.h5").exists()


def test_augment_uses_only_the_train_folder_of_a_fixed_split(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "src" / part / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "src" / part / cls / f"{i}.png")
    invoke("data", "import", str(tmp_path / "src"), str(tmp_path / "d.h5"), "--size", "8")
    result = invoke("augment", "classical", "--data", str(tmp_path / "d.h5"), "--per-class", "4",
                    "--out", str(tmp_path / "a.h5"))
    assert result.exit_code == 0 and "train folder" in result.stderr
    out = H5Dataset(tmp_path / "a.h5")
    train_rows = set(np.flatnonzero(out.split == 0).tolist())
    assert set(out.where(origin="classical").parent.tolist()) <= train_rows
    assert out.read_sources([0, len(out) - 1]) == ["test/a/0.png", ""]  # imported files stay traceable


def test_augment_classes_adds_images_only_to_the_named_classes_and_records_them(tmp_path):
    data = write_dataset(tmp_path / "d.h5", counts=(6, 4, 3), size=16)
    result = invoke("augment", "classical", "--data", str(data), "--amount", "1.0", "--classes", "class0, class2",
                    "--shard", "--out", str(tmp_path / "a.h5"))
    assert result.exit_code == 0, result.stderr
    assert "only in class0, class2" in result.stderr
    shard = H5Dataset(tmp_path / "a.h5")
    assert shard.class_counts().tolist() == [6, 0, 3]  # +100% of the named classes, none of class1
    record = shard.provenance["augment"]
    assert record["amount"]["classes"] == ["class0", "class2"] and record["per_class"]["class1"] == 0


def test_augment_filter_keeps_only_accepted_images_records_the_rates_and_trains_its_classifier_once(
        tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "d.h5", counts=(20, 20), size=16)
    assert invoke("data", "split", str(data), "--out", str(tmp_path / "s.json")).exit_code == 0
    common = ["augment", "classical", "--data", str(data), "--split", str(tmp_path / "s.json"), "--amount", "0.5",
              "--shard", "--filter", "--filter-param", "model=test_resnet", "--filter-param", "epochs=1",
              "--filter-param", "batch_size=8"]
    everything = invoke(*common, "--filter-param", "threshold=0", "--out", str(tmp_path / "all.h5"))
    assert everything.exit_code == 0, everything.output
    assert "filter acceptance per class: class0 100%, class1 100%" in everything.output
    kept = H5Dataset(tmp_path / "all.h5").provenance["filter"]
    assert kept["spec"]["threshold"] == 0 and {v["rate"] for v in kept["per_class"].values()} == {1.0}
    # selective, with the same classifier: rotated noise lies off the manifold of the real noise images,
    # so the amount cannot be reached: one line that says why, and no shard
    selective = invoke(*common, "--filter-param", "threshold=0", "--filter-param", "manifold_k=2",
                       "--out", str(tmp_path / "sel.h5"))
    assert selective.exit_code == 2 and "outside the real class's manifold" in selective.stderr, selective.output
    assert "reusing the test_resnet classifier" in selective.stderr and not (tmp_path / "sel.h5").exists()
    assert len(list((tmp_path / "cache" / "filters").iterdir())) == 1


def test_progress_shows_in_a_log_unless_quiet(tmp_path, monkeypatch):
    import augkit.progress as progress

    monkeypatch.setattr(progress, "LOG_FIRST_S", 0.0)  # the import takes less than the usual first 5 s
    noisy = CliRunner().invoke(cli, ["data", "import", "demo", str(tmp_path / "a.h5"), "--size", "16", "--n", "50"])
    assert "Importing demo: 50/50 (100%)" in noisy.stderr and "done" in noisy.stderr
    quiet = invoke("data", "import", "demo", str(tmp_path / "b.h5"), "--size", "16", "--n", "50")
    assert "Importing" not in quiet.stderr


def test_a_log_gets_a_line_every_ten_seconds_or_tenth_of_the_work_with_rate_and_eta():
    from augkit.progress import LogBar, format_rate

    now, lines = [0.0], []
    bar = LogBar("training cgan", 1000, clock=lambda: now[0], write=lines.append)
    for _ in range(1000):
        now[0] += 0.02  # 50 steps a second: 20 s in all
        bar(1)
    bar.note("D 0.512  G 1.204")
    bar.close()
    first = lines[0]
    assert first.startswith("training cgan: 251/1000 (25%)") and "50.0/s" in first and "ETA 0:15" in first
    assert len(lines) == 1 + 7 + 1  # after 5 s, then at each further tenth (2 s apart), then the closing line
    assert lines[-1].endswith("done  D 0.512  G 1.204") and "1000/1000 (100%)" in lines[-1]
    silent = []
    short = LogBar("quick", 10, clock=lambda: 0.0, write=silent.append)
    short(10)
    short.close()
    assert silent == []  # work shorter than the first interval writes nothing
    assert [format_rate(r) for r in (2500, 42.1, 3.14159, 0.2, 0.001)] == ["2,500/s", "42.1/s", "3.14/s", "12/min",
                                                                          "3.6/h"]


def test_a_resumed_runs_log_counts_only_this_pieces_work_in_its_rate_and_eta():
    from augkit.progress import LogBar

    now, lines = [0.0], []
    bar = LogBar("training cgan", 1000, clock=lambda: now[0], write=lines.append, done=600)
    for _ in range(400):
        now[0] += 0.1  # 10 steps a second, from step 600
        bar(1)
    first = lines[0]
    # 600 steps before this piece are not 600 steps in its first 5 s
    assert first.startswith("training cgan: 651/1000 (65%)") and "10.0/s" in first and "ETA 0:35" in first


def test_sigterm_during_import_leaves_no_output(tmp_path):
    target = tmp_path / "big.h5"
    exe = Path(sys.executable).with_name("augkit")
    proc = subprocess.Popen([str(exe), "--quiet", "data", "import", "demo", str(target), "--size", "64",
                             "--n", "200000"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".big.h5*partial")) and time.time() < deadline:
        time.sleep(0.1)
    # the signal must land while the import is writing, or this test would prove nothing
    assert list(tmp_path.glob(".big.h5*partial")), "the import never started writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not target.exists() and not list(tmp_path.glob(".big.h5.*"))


def test_train_then_augment_from_the_saved_gan(tmp_path):
    data = tmp_path / "d.h5"
    invoke("data", "import", "demo", str(data), "--size", "16", "--n", "64")
    tiny = ["--param", "steps=2", "--param", "g_channels=16", "--param", "d_channels=8", "--param", "batch_size=8"]
    result = invoke("train", "cgan", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu", *tiny)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "augmenter" / "weights.pt").is_file()
    assert (tmp_path / "run" / "cgan" / "checkpoints" / "latest.pt").is_file()
    diversity = json.loads((tmp_path / "run" / "diversity.json").read_text())
    assert [row["class"] for row in diversity] == list(H5Dataset(data).class_names)
    assert "generated MS-SSIM" in (tmp_path / "run" / "diversity.md").read_text()
    result = invoke("augment", "cgan", "--from", str(tmp_path / "run" / "augmenter"), "--data", str(data),
                    "--per-class", "2", "--out", str(tmp_path / "g.h5"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(H5Dataset(tmp_path / "g.h5").where(origin="cgan")) == 2 * 8
    again = invoke("train", "cgan", "--data", str(data), "--out", str(tmp_path / "run"), *tiny)
    assert again.exit_code == 2 and "holds a finished run" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "classical"], "has nothing to train"),
    (["train", "cgan", "--resume"], "no checkpoint to resume from"),
    (["augment", "cgan", "--from", "nowhere", "--per-class", "1", "--out", "o.h5"], "no saved augmenter here"),
    (["augment", "cgan", "--from", "nowhere", "--param", "steps=1", "--per-class", "1", "--out", "o.h5"],
     "--param and --from exclude each other"),
])
def test_train_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    tiny = write_dataset(tmp_path / "tiny.h5")
    extra = ["--data", str(tiny)] + (["--out", "run"] if args[0] == "train" else [])
    result = invoke(*args, *extra)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_evaluate_reuses_finished_runs_from_the_model_cache_unless_told_not_to(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = write_dataset(tmp_path / "d.h5", counts=(20, 20), size=16)
    write_dataset(tmp_path / "locked.h5", counts=(6, 6), size=16, seed=1)
    args = ["evaluate", "--data", str(data), "--arm", "baseline", "--model", "test_resnet", "--epochs", "1",
            "--batch-size", "16", "--bootstrap", "100", "--device", "cpu"]
    first = invoke(*args, "--test", "locked.h5", "--out", str(tmp_path / "first"))
    assert first.exit_code == 0, first.output
    assert "reused" not in first.output
    # the same test set by another path (as a recipe gives it, absolute) is the same run
    again = invoke(*args, "--test", str(tmp_path / "locked.h5"), "--out", str(tmp_path / "again"))
    assert again.exit_code == 0 and "reused finished runs from" in again.output and "baseline seed 0" in again.output
    runs = [json.loads((tmp_path / name / "metrics.json").read_text())["arms"]["baseline"]["runs"][0]
            for name in ("first", "again")]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert len(list((tmp_path / "cache" / "classifier-runs").iterdir())) == 1
    fresh = invoke(*args, "--test", "locked.h5", "--no-reuse", "--out", str(tmp_path / "fresh"))
    assert fresh.exit_code == 0 and "reused" not in fresh.output
