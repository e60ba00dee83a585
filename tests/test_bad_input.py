"""A catalogue of bad inputs and faults, as a new user makes them, through the command line.

Each case asserts what the README promises: exit code 2, one line on stderr that names the culprit
(a file, an option, a key or a line), no traceback, and nothing written at the output or left beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from augkit.cli import cli


def invoke(*args, input=None):
    return CliRunner().invoke(cli, ["--quiet", *args], catch_exceptions=False, input=input)


RECIPE = """[recipe]
name = "tiny"

[data]
source = "{data}"

[[augment]]
name = "classical"
amount = 0.5

[evaluate]
model = "test_resnet"
epochs = 1
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Good inputs to spoil: a demo dataset, another size, a single class, a shard, a split, saved
    augmenters, checkpoints that are not state dicts, and files that are not what they claim."""
    from augkit.data import import_source

    root = tmp_path_factory.mktemp("bad-input")
    import_source("demo", root / "d.h5", size=16, n=64, seed=0)
    import_source("demo", root / "d24.h5", size=24, n=64, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    np.savez(root / "one.npz", images=images, labels=np.zeros(12, np.int64))
    import_source(root / "one.npz", root / "single.h5", size=16, class_names=["lymphocyte"])
    assert invoke("data", "split", str(root / "d.h5"), "--out", str(root / "split.json")).exit_code == 0
    assert invoke("data", "split", str(root / "d24.h5"), "--out", str(root / "split24.json")).exit_code == 0
    assert invoke("augment", "classical", "--data", str(root / "d.h5"), "--amount", "0.5", "--shard",
                  "--out", str(root / "shard.h5")).exit_code == 0
    from augkit.registry import get_augmenter

    get_augmenter("classical").save(root / "classical_saved")
    torch.save([1, 2, 3], root / "list.pt")
    from fractions import Fraction

    torch.save({"model": Fraction(1, 3)}, root / "code.pt")  # a pickle that needs code to load
    (root / "notes.txt").write_text("not an image\n")
    (root / "fake.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature, then nothing
    (root / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    (root / "empty_folder").mkdir()
    (root / "exists.h5").write_bytes(b"keep me")
    (root / "exists_folder").mkdir()
    (root / "exists_folder" / "keep.txt").write_text("keep me")
    (root / "recipe.toml").write_text(RECIPE.format(data=root / "d.h5"))
    return {"root": root}


def _recipe(root: Path, text: str) -> str:
    path = root / "case.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


#: an augment command on the split, for the filter's cases
WITH_SPLIT = "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --split {r}/split.json "

# (id, command line with {r} for the files' folder and {o} for this case's output folder, what the one line
# must name, outputs that must not exist afterwards)
CASES = [
    # -- import --------------------------------------------------------------------------------------
    ("import-missing-source", "data import {r}/nowhere {o}/x.h5", "nowhere", ["x.h5"]),
    ("import-workers-0", "data import demo {o}/x.h5 --workers 0", "--workers", ["x.h5"]),
    ("import-n-0", "data import demo {o}/x.h5 --n 0", "--n", ["x.h5"]),
    ("import-size-4", "data import demo {o}/x.h5 --size 4", "--size", ["x.h5"]),
    ("import-size-word", "data import demo {o}/x.h5 --size big", "--size", ["x.h5"]),
    ("import-over-existing", "data import demo {r}/exists.h5", "already exists", []),
    ("import-into-missing-folder", "data import demo {o}/no/such/x.h5", "does not exist", ["no"]),
    ("import-text-file", "data import {r}/notes.txt {o}/x.h5", "notes.txt", ["x.h5"]),
    ("import-empty-folder", "data import {r}/empty_folder {o}/x.h5", "empty_folder", ["x.h5"]),
    ("import-corrupt-npz", "data import {r}/bad.npz {o}/x.h5", "bad.npz", ["x.h5"]),
    ("import-corrupt-h5", "data import {r}/fake.h5 {o}/x.h5", "fake.h5", ["x.h5"]),
    # -- inspect, split, export ------------------------------------------------------------------------
    ("info-missing", "data info {r}/missing.h5", "missing.h5", []),
    ("info-not-hdf5", "data info {r}/notes.txt", "notes.txt", []),
    ("info-corrupt", "data info {r}/fake.h5", "fake.h5", []),
    ("split-val-over-1", "data split {r}/d.h5 --out {o}/s.json --val 1.5", "--val", ["s.json"]),
    ("split-train-fraction-0", "data split {r}/d.h5 --out {o}/s.json --train-fraction 0", "--train-fraction",
     ["s.json"]),
    ("split-fractions-over-1", "data split {r}/d.h5 --out {o}/s.json --val 0.6 --test 0.6", "split", ["s.json"]),
    ("split-missing-data", "data split {r}/missing.h5 --out {o}/s.json", "missing.h5", ["s.json"]),
    ("split-over-existing", "data split {r}/d.h5 --out {r}/exists.h5", "already exists", []),
    ("export-over-existing", "data export {r}/d.h5 {r}/exists_folder", "already exists", []),
    ("export-limit-0", "data export {r}/d.h5 {o}/ex --limit 0", "--limit", ["ex"]),
    # -- augment ---------------------------------------------------------------------------------------
    ("augment-unknown", "augment clasical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5", "clasical", ["a.h5"]),
    ("augment-no-amount", "augment classical --data {r}/d.h5 --out {o}/a.h5", "--amount", ["a.h5"]),
    ("augment-two-amounts", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --per-class 3",
     "exactly one", ["a.h5"]),
    ("augment-amount-0", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0", "--amount", ["a.h5"]),
    ("augment-per-class-negative", "augment classical --data {r}/d.h5 --out {o}/a.h5 --per-class -3",
     "--per-class", ["a.h5"]),
    ("augment-balance-word", "augment classical --data {r}/d.h5 --out {o}/a.h5 --balance-to lots",
     "--balance-to", ["a.h5"]),
    ("augment-unknown-class", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --classes basophill",
     "basophill", ["a.h5"]),
    ("augment-class-twice", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --classes ig,ig",
     "--classes", ["a.h5"]),
    ("augment-param-typo", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --param rotat=5",
     "rotat", ["a.h5"]),
    ("augment-param-type", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --param rotate=ten",
     "rotate", ["a.h5"]),
    ("augment-param-range", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --param rotate=999",
     "rotate", ["a.h5"]),
    ("augment-param-syntax", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --param rotate",
     "--param", ["a.h5"]),
    ("augment-missing-data", "augment classical --data {r}/missing.h5 --out {o}/a.h5 --amount 0.5",
     "missing.h5", ["a.h5"]),
    ("augment-foreign-split", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --split {r}/split24.json",
     "split24.json", ["a.h5"]),
    ("augment-unconditional", "augment vanilla --data {r}/d.h5 --out {o}/a.h5 --per-class 2",
     "cannot choose a class", ["a.h5"]),
    ("augment-from-missing", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --from {r}/nothing",
     "nothing", ["a.h5"]),
    ("augment-filter-no-split", "augment classical --data {r}/d.h5 --out {o}/a.h5 --amount 0.5 --filter",
     "--split", ["a.h5"]),
    ("augment-filter-param-alone", WITH_SPLIT + "--filter-param threshold=0.9", "--filter", ["a.h5"]),
    ("augment-filter-threshold", WITH_SPLIT + "--filter --filter-param threshold=2", "threshold", ["a.h5"]),
    ("augment-filter-typo", WITH_SPLIT + "--filter --filter-param treshold=0.9", "treshold", ["a.h5"]),
    ("augment-filter-model", WITH_SPLIT + "--filter --filter-param model=resnet10_smal", "resnet10_smal", ["a.h5"]),
    ("augment-filter-unconditional", "augment vanilla --data {r}/d.h5 --out {o}/a.h5 --per-class 2 --split "
     "{r}/split.json --filter", "cannot choose a class", ["a.h5"]),
    ("augment-over-existing", "augment classical --data {r}/d.h5 --out {r}/exists.h5 --amount 0.5",
     "already exists", []),
    # -- train -------------------------------------------------------------------------------------------
    ("train-nothing-to-train", "train classical --data {r}/d.h5 --out {o}/run", "nothing to train", ["run"]),
    ("train-param-range", "train vanilla --data {r}/d.h5 --out {o}/run --param steps=0", "steps", ["run"]),
    ("train-resume-nothing", "train vanilla --data {r}/d.h5 --out {o}/run --resume --param steps=1",
     "no checkpoint", ["run/augmenter"]),
    ("train-unsupported-size", "train vanilla --data {r}/d24.h5 --out {o}/run --param steps=1", "24 px",
     ["run/augmenter"]),
    ("train-seed-negative", "train vanilla --data {r}/d.h5 --out {o}/run --seed -1", "--seed", ["run"]),
    # -- evaluate -----------------------------------------------------------------------------------------
    ("evaluate-missing-shard", "evaluate --data {r}/d.h5 --arm x={r}/missing.h5 --out {o}/e", "missing.h5", ["e"]),
    ("evaluate-unknown-model", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model resnet10_smal",
     "resnet10_smal", ["e"]),
    ("evaluate-seeds-0", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --seeds 0", "--seeds", ["e"]),
    ("evaluate-bootstrap-5", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --bootstrap 5", "--bootstrap",
     ["e"]),
    ("evaluate-pretrained-missing", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model test_resnet "
     "--pretrained {r}/missing.pt", "missing.pt", ["e"]),
    ("evaluate-pretrained-list", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model test_resnet "
     "--pretrained {r}/list.pt", "not a state dict", ["e"]),
    ("evaluate-pretrained-code", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model test_resnet "
     "--pretrained {r}/code.pt", "code.pt", ["e"]),
    ("evaluate-versus-unknown-arm", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model test_resnet "
                                    "--versus gan=classical", "--versus 'gan=classical': no arm named 'gan'", ["e"]),
    ("evaluate-single-class", "evaluate --data {r}/single.h5 --arm baseline --out {o}/e --model test_resnet",
     "one class", ["e"]),
    ("evaluate-arm-syntax", "evaluate --data {r}/d.h5 --arm =x.h5 --out {o}/e", "arm", ["e"]),
    ("evaluate-arm-per-seed", "evaluate --data {r}/d.h5 --arm x={r}/shard.h5|{r}/shard.h5 --out {o}/e --seeds 3",
     "one per seed", ["e"]),
    ("evaluate-hub-weights", "evaluate --data {r}/d.h5 --arm baseline --out {o}/e --model test_resnet "
     "--pretrained imagenet", "cannot be downloaded", ["e"]),
    # -- quality -------------------------------------------------------------------------------------------
    ("quality-missing-real", "quality --real {r}/missing.h5 --fake {r}/shard.h5 --out {o}/q", "missing.h5", ["q"]),
    ("quality-unknown-check", "quality --real {r}/d.h5 --fake {r}/shard.h5 --out {o}/q --checks fd", "fd", ["q"]),
    ("quality-other-size", "quality --real {r}/d24.h5 --fake {r}/shard.h5 --out {o}/q --checks distances",
     "px", ["q"]),
    ("quality-epochs-0", "quality --real {r}/d.h5 --fake {r}/shard.h5 --out {o}/q --epochs 0", "--epochs", ["q"]),
    # -- interpolate ----------------------------------------------------------------------------------------
    ("interpolate-no-latent-space", "interpolate --from {r}/classical_saved --out {o}/s.png", "cannot interpolate",
     ["s.png"]),
    ("interpolate-steps-1", "interpolate --from {r}/classical_saved --out {o}/s.png --steps 1", "--steps",
     ["s.png"]),
    # -- expert test -------------------------------------------------------------------------------------------
    ("expert-report-nothing", "expert-test --report", "--report", []),
    ("expert-new-without-sources", "expert-test --session s1 --sessions-dir {o}/sessions", "--real", ["sessions/s1"]),
    ("expert-port-range", "expert-test --real {r}/d.h5 --fake {r}/shard.h5 --port 70000", "--port", []),
    ("expert-sizes-differ", "expert-test --real {r}/d24.h5 --fake {r}/shard.h5 --session s2 --sessions-dir "
     "{o}/sessions", "px", ["sessions/s2"]),
    ("expert-n-0", "expert-test --real {r}/d.h5 --fake {r}/shard.h5 --n 0", "--n", []),
    # -- the command line itself --------------------------------------------------------------------------------
    ("unknown-command", "agument classical", "agument", []),
    ("unknown-option", "data import demo {o}/x.h5 --sise 16", "--sise", ["x.h5"]),
]

RECIPE_CASES = [
    # (id, recipe text ({data} = the demo dataset) or bytes, extra --set values, what the line must name)
    ("recipe-unknown-table", RECIPE + "\n[evaluation]\nseeds = 2\n", [], "evaluation"),
    ("recipe-unknown-key", RECIPE.replace("epochs = 1", "epochz = 1"), [], "line 13"),
    ("recipe-not-toml", RECIPE + "\n[evaluate\n", [], "not valid TOML"),
    ("recipe-not-utf8", b'[recipe]\nname = "caf\xe9"\n', [], "line 2"),
    ("recipe-unknown-model", RECIPE.replace("test_resnet", "resnet10_smal"), [], "line 12"),
    ("recipe-unknown-augmenter", RECIPE.replace('name = "classical"', 'name = "clasical"'), [], "clasical"),
    ("recipe-bad-amount", RECIPE.replace("amount = 0.5", "amount = -1"), [], "amount"),
    ("recipe-unknown-class", RECIPE.replace("amount = 0.5", 'amount = {{ fraction = 0.5, classes = ["basophill"] }}'),
     [], "line 9"),
    ("recipe-arm-not-a-step", RECIPE.replace("epochs = 1", 'epochs = 1\narms = ["baseline", "cgan"]'), [],
     "cgan"),
    ("recipe-fractions-without-1", RECIPE.replace("epochs = 1", "epochs = 1\ntrain_fractions = [0.1, 0.5]"), [],
     "train_fractions"),
    ("recipe-quality-check", RECIPE + '\n[quality]\nchecks = ["fd"]\n', [], "fd"),
    ("recipe-quality-model", RECIPE + '\n[quality]\ncas_model = "resnet999"\n', [], "cas_model"),
    ("recipe-filter-model", RECIPE.replace("amount = 0.5", 'amount = 0.5\nfilter = {{ model = "resnet999" }}'), [],
     "resnet999"),
    ("recipe-runs-not-seeds", RECIPE.replace("amount = 0.5", "amount = 0.5\nruns = 2"), [], "line 10"),
    ("recipe-runs-0", RECIPE.replace("amount = 0.5", "amount = 0.5\nruns = 0"), [], "runs"),
    ("set-unknown-key", RECIPE, ["evaluate.epochz=2"], "--set evaluate.epochz=2"),
    ("set-bad-value", RECIPE, ["evaluate.epochs=[1,"], "--set evaluate.epochs=[1,"),
    ("set-no-equals", RECIPE, ["evaluate.epochs"], "--set"),
    ("set-unknown-table", RECIPE, ["evalute.epochs=2"], "evalute"),
    ("set-unknown-step", RECIPE, ["augment.cgan.amount=0.5"], "cgan"),
    ("set-unknown-model", RECIPE, ["evaluate.model=resnet999"], "--set evaluate.model=resnet999"),
]


def _check_one_line(result, culprit: str) -> None:
    """Exit 2; the error is one line (the last: a command may have said what it starts on before), and
    it names the culprit; no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines, result.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], result.stderr
    assert culprit in lines[-1], lines[-1]


@pytest.mark.parametrize("case, command, culprit, outputs", CASES, ids=[c[0] for c in CASES])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(files, tmp_path, case, command, culprit, outputs):
    root = files["root"]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*command.format(r=root, o=out).split())
    _check_one_line(result, culprit)
    for name in outputs:
        assert not (out / name).exists(), name
    assert not [p for p in out.rglob(".*partial")], "a partial file was left behind"
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.name != "case.toml"} == \
           {p: t for p, t in before.items() if p.name != "case.toml"}, "an input was changed"


@pytest.mark.parametrize("case, text, sets, culprit", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_a_bad_recipe_fails_its_check_on_one_line(files, tmp_path, case, text, sets, culprit):
    root = files["root"]
    path = tmp_path / "case.toml"
    path.write_bytes(text.format(data=root / "d.h5").encode() if isinstance(text, str) else text)
    args = ["run", str(path), "--check", "--out", str(tmp_path / "run")]
    for value in sets:
        args += ["--set", value]
    _check_one_line(invoke(*args), culprit)
    assert not (tmp_path / "run").exists()


def test_a_refused_file_system_is_one_line_with_the_path(files, tmp_path, monkeypatch):
    """A folder the user may not write to (simulated: the tests run as root, which may write anywhere)."""
    import augkit.data.importers as importers

    def refuse(src, out, **kwargs):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(importers, "import_source", refuse)
    result = invoke("data", "import", "demo", str(tmp_path / "x.h5"))
    _check_one_line(result, f"{tmp_path / 'x.h5'}: Permission denied")


def test_a_deeply_nested_answer_gets_a_400_not_a_dropped_connection(files, tmp_path):
    import http.client

    from augkit.expert import ExpertServer, Session, create_session

    folder = tmp_path / "s"
    create_session(folder, files["root"] / "d.h5", files["root"] / "shard.h5", 4, seed=0)
    with Session(folder, writer=True) as session:
        server = ExpertServer(session, "127.0.0.1", 0)
        import threading

        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            host, port = server.server_address[:2]
            body = ("[" * 2000 + "]" * 2000).encode()  # under the size limit, deeper than the parser goes
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("POST", "/api/answer", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 400 and "JSON object" in json.loads(response.read())["error"]
        finally:
            server.shutdown()
            server.server_close()


def test_a_decompression_bomb_is_skipped_and_listed_like_any_unreadable_file(tmp_path, monkeypatch):
    from PIL import Image

    import augkit.data.importers as importers
    from augkit.data import H5Dataset

    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (20, 20), (40 * k, 90, 120)).save(tmp_path / "src" / cls / f"{k}.png")
    Image.new("RGB", (300, 300)).save(tmp_path / "src" / "a" / "bomb.png")  # small file, "huge" under the limit below
    monkeypatch.setattr(importers, "MAX_PIXELS", 300 * 300 - 1)
    result = CliRunner().invoke(cli, ["data", "import", str(tmp_path / "src"), str(tmp_path / "x.h5"), "--size",
                                      "16"], catch_exceptions=False)
    assert result.exit_code == 0 and "bomb.png" in result.stderr and "decompression bomb" in result.stderr
    assert len(H5Dataset(tmp_path / "x.h5")) == 6


def test_leftover_partial_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    from augkit.atomic import fresh_partial
    from augkit.data import DatasetWriter

    target = tmp_path / "x.h5"
    old = [tmp_path / ".x.h5.partial", tmp_path / ".x.h5.1a2b3c4d.partial"]  # this version's name, and 0.1's
    for path in old:
        path.write_bytes(b"half")
    (tmp_path / ".other.h5.partial").write_bytes(b"not ours")
    assert fresh_partial(target) == tmp_path / ".x.h5.partial" and not any(p.exists() for p in old)
    for path in old:
        path.write_bytes(b"half")
    with DatasetWriter(target, class_names=["a"], image_size=16) as writer:
        writer.append(np.zeros((2, 16, 16, 3), np.uint8), np.zeros(2, np.int64))
    assert target.exists() and not any(p.exists() for p in old)
    assert (tmp_path / ".other.h5.partial").exists()  # another target's file is not touched


def test_a_swallowed_sigterm_stops_the_work_at_its_next_safe_point():
    from augkit import interrupt
    from augkit.progress import track

    interrupt.reset()
    try:
        with pytest.raises(SystemExit) as caught, track("work", 10) as advance:
            try:
                interrupt.on_sigterm(15, None)
            except SystemExit:
                pass  # swallowed, as inside a weakref callback
            advance(1)
        assert caught.value.code == 128 + 15
    finally:
        interrupt.reset()


def test_resuming_with_changed_parameters_names_the_parameter(files, tmp_path):
    run = tmp_path / "run"
    tiny = ["--param", "g_channels=16", "--param", "d_channels=8", "--param", "batch_size=8"]
    first = invoke("train", "vanilla", "--data", str(files["root"] / "d.h5"), "--out", str(run), "--param", "steps=2",
                   *tiny)
    assert first.exit_code == 0, first.stderr
    import shutil

    shutil.rmtree(run / "augmenter")  # as if interrupted before the end
    again = invoke("train", "vanilla", "--data", str(files["root"] / "d.h5"), "--out", str(run), "--resume",
                   "--param", "steps=4", "--param", "g_channels=32", "--param", "d_channels=8", "--param",
                   "batch_size=8")
    _check_one_line(again, "arch.g_channels = 16, now 32")


def test_a_log_gets_progress_of_a_run(files, tmp_path, monkeypatch):
    import augkit.progress as progress
    from augkit.recipe import load_recipe
    from augkit.runner import run_recipe

    monkeypatch.setattr(progress, "LOG_FIRST_S", 0.0)
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    recipe = load_recipe(files["root"] / "recipe.toml", ["evaluate.bootstrap=100", "evaluate.batch_size=16"],
                         out=tmp_path / "run")
    run_recipe(recipe, device="cpu")
    log = (tmp_path / "run" / "run.log").read_text()
    assert "baseline seed 0: " in log and "ETA" in log and "done" in log  # the classifier's progress, in the log


def _kaggle_layout(root: Path) -> Path:
    """TRAIN/<CLASS>/ and TEST/<CLASS>/, upper case, .jpeg, 32x24 (the public blood-cell sets' layout,
    smaller), no validation folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("TRAIN", 20), ("TEST", 6)):
        for cls in ("EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"):
            folder = root / "src" / part / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"_{i}.jpeg")
    return root / "src"


def test_a_train_test_folder_layout_gets_validation_carved_from_train(tmp_path):
    from augkit.data import H5Dataset
    from augkit.data.split import Split

    src = _kaggle_layout(tmp_path)
    assert invoke("data", "import", str(src), str(tmp_path / "d.h5"), "--size", "16").exit_code == 0
    result = invoke("data", "split", str(tmp_path / "d.h5"), "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 0 and "val carved from the train folder" in result.stdout, result.stdout
    data = H5Dataset(tmp_path / "d.h5")
    split = Split.load(tmp_path / "s.json", fingerprint=data.info.fingerprint)
    train_folder = set(data.rows[data.split == 0].tolist())
    assert set(split.test.tolist()) == set(data.rows[data.split == 2].tolist())  # the test folder, untouched
    assert set(split.val.tolist()) <= train_folder and set(split.train.tolist()) <= train_folder
    assert not set(split.val.tolist()) & set(split.train.tolist())
    # 15/85 of each class's 20 train-folder images (and at least one): stratified
    assert np.bincount(data.labels[split.val]).tolist() == [4, 4, 4]
    again = invoke("data", "split", str(tmp_path / "d.h5"), "--out", str(tmp_path / "s2.json"))
    assert again.exit_code == 0
    assert Split.load(tmp_path / "s2.json").val.tolist() == split.val.tolist()  # seeded


def test_a_recipe_on_that_layout_plans_what_runs(tmp_path):
    from augkit.recipe import load_recipe

    src = _kaggle_layout(tmp_path)
    path = tmp_path / "r.toml"
    path.write_text(f'[data]\nsource = "{src}"\nimage_size = 16\nsplit = {{ train = 0.85, val = 0.15 }}\n')
    check = invoke("run", str(path), "--check", "--out", str(tmp_path / "run"))
    assert check.exit_code == 0, check.stderr
    assert "a part they lack carved from the train folder by train 0.85, val 0.15" in check.stdout
    from augkit.runner import run_recipe

    run_recipe(load_recipe(path, out=tmp_path / "run"), device="cpu")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert "val carved from the train folder" in split["method"] and len(split["val"]) == 12
    assert len(split["test"]) == 18  # the TEST folder
