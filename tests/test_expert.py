"""The expert test: statistics, sessions (draw, answers log, undo, resume), the HTTP server's
validation and what it must never reveal, and the report command."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from augkit.cli import cli
from augkit.data import H5Dataset
from augkit.data.writer import DatasetWriter
from augkit.errors import DataError, UserError
from augkit.expert import (
    AnswerRejected, Confusion, ExpertServer, Judgement, Rate, Session, breakdown, build_report, create_session,
)
from augkit.expert.session import ANSWERS_LOG
from conftest import write_dataset

CLASSES = ["class0", "class1", "class2"]


def make_sources(folder: Path, size: int = 16, real_counts=(6, 4, 3), fake_per_class: int = 3) -> tuple[Path, Path]:
    """A real dataset (random pixels) and a shard of generated rows (origin 'gan'), same classes."""
    real = write_dataset(folder / "real.h5", counts=real_counts, size=size)
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(len(CLASSES)), fake_per_class)
    fake = folder / "fake.h5"
    with DatasetWriter(fake, class_names=CLASSES, image_size=size, origins=("real", "gan")) as w:
        w.append(rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8), labels, origin=1)
    return real, fake


@pytest.fixture
def session_dir(tmp_path) -> Path:
    real, fake = make_sources(tmp_path)
    create_session(tmp_path / "sessions" / "s1", real, fake, 5, seed=3, show_class=True)
    return tmp_path / "sessions" / "s1"


# -- statistics ----------------------------------------------------------------------------------
def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_thesis_counts_give_thesis_rates_with_wilson_intervals():
    # table 2 of the thesis: 50 generated (44 caught), 50 real (27 accepted)
    m = Confusion(tp=44, fn=6, tn=27, fp=23)
    assert m.matrix() == [[27, 23], [6, 44]]
    assert m.sensitivity.value == pytest.approx(0.88)
    assert m.specificity.value == pytest.approx(0.54)
    assert m.accuracy.value == pytest.approx(0.71)
    for rate, k, n in [(m.sensitivity, 44, 50), (m.specificity, 27, 50), (m.accuracy, 71, 100)]:
        assert (rate.ci_low, rate.ci_high) == pytest.approx(_wilson(k, n), abs=1e-9)
    assert Rate.of(0, 0).value is None and Rate.of(0, 0).describe() == "—"


def test_confusion_from_pairs_and_per_class_breakdown():
    judgements = [Judgement("fake", "fake", "a"), Judgement("fake", "real", "a"), Judgement("real", "real", "b"),
                  Judgement("real", "fake", "b"), Judgement("real", "real", "a")]
    overall, per_class = breakdown(judgements)
    assert (overall.tp, overall.fn, overall.tn, overall.fp) == (1, 1, 2, 1)
    assert list(per_class) == ["a", "b"]
    assert (per_class["a"].tp, per_class["a"].fn, per_class["a"].tn, per_class["a"].fp) == (1, 1, 1, 0)
    assert per_class["b"].sensitivity.value is None and per_class["b"].specificity.value == 0.5
    assert overall == per_class["a"] + per_class["b"]
    with pytest.raises(ValueError):
        Confusion.of([("real", "maybe")])


# -- building a session --------------------------------------------------------------------------
def test_session_draws_n_of_each_source_balanced_per_class_with_opaque_ids(session_dir, tmp_path):
    s = Session(session_dir)
    assert s.total == 10
    sources = [item.source for item in s.items]
    assert sources.count("real") == 5 and sources.count("fake") == 5
    for c in CLASSES:  # the class never hints at the source
        assert sum(i.class_name == c and i.source == "real" for i in s.items) == \
            sum(i.class_name == c and i.source == "fake" for i in s.items)
    assert all(len(i.id) == 16 and int(i.id, 16) >= 0 for i in s.items)
    assert sorted(p.stem for p in (session_dir / "images").iterdir()) == sorted(i.id for i in s.items)
    for item in (next(i for i in s.items if i.source == source) for source in ("real", "fake")):
        # each PNG is the dataset's row as it is, nothing added
        assert np.array_equal(np.asarray(Image.open(s.image_path(item.id))), H5Dataset(item.file).read([item.row])[0])
    # the seed is recorded and reproduces the draw and the order
    again = create_session(tmp_path / "sessions" / "s2", s.manifest["real"]["path"], s.manifest["fake"]["path"], 5,
                           seed=s.manifest["seed"])
    assert [(i.source, i.row) for i in again.items] == [(i.source, i.row) for i in s.items]


def test_session_refuses_unusable_sources_and_leaves_no_folder(tmp_path):
    real, fake = make_sources(tmp_path)
    big = write_dataset(tmp_path / "big.h5", counts=(3, 3, 3), size=32)
    with pytest.raises(DataError, match="size alone"):
        create_session(tmp_path / "x", big, fake, 2)
    with pytest.raises(DataError, match="no generated rows"):
        create_session(tmp_path / "x", real, real, 2)
    with pytest.raises(UserError, match="only 9 images"):
        create_session(tmp_path / "x", real, fake, 10)
    assert not (tmp_path / "x").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


# -- answers, undo, resume -----------------------------------------------------------------------
def _log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ANSWERS_LOG).read_text().splitlines()]


def test_answers_are_validated_and_a_double_submission_adds_nothing(session_dir):
    with Session(session_dir, writer=True) as s:
        first, second = s.items[0].id, s.items[1].id
        with pytest.raises(AnswerRejected) as bad:
            s.answer(first, "maybe")
        assert bad.value.status == 400
        with pytest.raises(AnswerRejected) as unknown:
            s.answer("0123456789abcdef", "real")
        assert unknown.value.status == 404
        with pytest.raises(AnswerRejected) as ahead:
            s.answer(second, "real")
        assert ahead.value.status == 409
        s.answer(first, "fake")
        with pytest.raises(AnswerRejected) as twice:
            s.answer(first, "fake")
        assert twice.value.status == 409
        assert [e["event"] for e in _log_lines(session_dir)] == ["answer"]
        state = s.state()
        assert state["answered"] == 1 and state["image"]["id"] == second
        assert state["undo"] == {"id": first, "answer": "fake"}


def test_undo_takes_back_only_the_last_answer_once(session_dir):
    with Session(session_dir, writer=True) as s:
        a, b = s.items[0].id, s.items[1].id
        s.answer(a, "real")
        s.answer(b, "fake")
        with pytest.raises(AnswerRejected):
            s.undo(a)  # not the last one
        s.undo(b)
        with pytest.raises(AnswerRejected):
            s.undo(b)  # a repeated undo does not take back `a` too
        s.answer(b, "real")
        assert [j.answer for j in s.judgements()] == ["real", "real"]
    assert [e["event"] for e in _log_lines(session_dir)] == ["answer", "answer", "undo", "answer"]


def test_resume_after_a_crash_keeps_every_acknowledged_answer(session_dir):
    with Session(session_dir, writer=True) as s:
        for item in s.items[:3]:
            s.answer(item.id, "real")
        s.undo(s.items[2].id)
    with (session_dir / ANSWERS_LOG).open("a") as f:
        f.write('{"event": "answer", "id": "')  # a kill in the middle of a write
    with Session(session_dir, writer=True) as s:
        assert s.answered == 2 and s.state()["image"]["id"] == s.items[2].id
        s.answer(s.items[2].id, "fake")  # the cut line is gone, the log stays readable
    assert Session(session_dir).answered == 3


def test_a_damaged_log_is_named_with_its_line_and_a_second_writer_is_refused(session_dir):
    with Session(session_dir, writer=True):
        with pytest.raises(UserError, match="open in another"):
            Session(session_dir, writer=True)
        assert Session(session_dir).answered == 0  # reading while a writer holds it is fine
    s = Session(session_dir)
    (session_dir / ANSWERS_LOG).write_text(json.dumps({"event": "answer", "id": s.items[1].id, "answer": "real"})
                                           + "\n")
    with pytest.raises(DataError, match=r"answers.jsonl, line 1: .* does not follow"):
        Session(session_dir)


# -- the server ----------------------------------------------------------------------------------
class Client:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def request(self, path, body=None, content_type="application/json", raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path, body=None, **kw):
        status, _, data = self.request(path, body, **kw)
        return status, json.loads(data)


@pytest.fixture
def served(session_dir):
    completed = []
    session = Session(session_dir, writer=True)
    server = ExpertServer(session, port=0, on_complete=completed.append)
    server.start_in_thread()
    yield Client(server.url), session, completed
    server.shutdown()
    server.server_close()
    session.close()


def test_server_validates_input_from_the_page(served):
    client, session, _ = served
    first = session.items[0].id
    assert client.json("/api/answer", {"id": "nope", "answer": "real"}) == (404, {"error": "unknown image id 'nope'"})
    assert client.json("/api/answer", {"id": first, "answer": "yes"})[0] == 400
    assert client.json("/api/answer", {"id": session.items[1].id, "answer": "real"})[0] == 409
    assert client.request("/api/answer", raw=b"id=x", content_type="application/x-www-form-urlencoded")[0] == 415
    assert client.request("/api/answer", raw=b"{not json")[0] == 400
    assert client.request("/api/answer", raw=b"[1]")[0] == 400
    assert client.request("/api/answer", raw=b" " * 5000)[0] == 413
    assert client.json("/img/0123456789abcdef")[0] == 404
    assert client.json("/api/other")[0] == 404
    status, state = client.json("/api/answer", {"id": first, "answer": "real"})
    assert status == 200 and state["answered"] == 1
    assert client.json("/api/answer", {"id": first, "answer": "real"})[0] == 409  # double click
    assert client.json("/api/undo", {"id": session.items[1].id})[0] == 409
    assert session.answered == 1 and len(_log_lines(session.folder)) == 1


def test_nothing_served_hints_at_the_source(served):
    client, session, _ = served
    status, headers, page = client.request("/")
    html = page.decode()
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert "http://" not in html and "https://" not in html and "src=\"//" not in html  # no external asset
    manifest_words = {"real.h5", "fake.h5", "gan", "origin", "source", "row"} | {i.id for i in session.items}
    assert not any(word in html for word in manifest_words)
    seen, items = [], session.items
    for k, item in enumerate(items):
        # the state holds exactly this: progress, opaque ids, the class (asked for), the expert's own answer
        assert client.json("/api/state") == (200, {
            "total": 10, "answered": k, "done": False, "image": {"id": item.id, "class": item.class_name},
            "next": items[k + 1].id if k < 9 else None,
            "undo": None if k == 0 else {"id": items[k - 1].id, "answer": "real"}})
        status, headers, png = client.request(f"/img/{item.id}")
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert not {"Last-Modified", "ETag", "Content-Disposition"} & set(headers)
        seen.append(item.source)
        client.json("/api/answer", {"id": item.id, "answer": "real"})
    assert sorted(seen) == ["fake"] * 5 + ["real"] * 5


def test_server_restart_resumes_and_completion_is_reported_once(served, session_dir):
    client, session, completed = served
    for item in session.items[:4]:
        client.json("/api/answer", {"id": item.id, "answer": "fake"})
    # a second server on the same session (after the first one stopped) continues at image 5
    items = session.items
    session.close()
    with Session(session_dir, writer=True) as again:
        server = ExpertServer(again, port=0, on_complete=completed.append)
        server.start_in_thread()
        try:
            client2 = Client(server.url)
            assert client2.json("/api/state")[1]["image"]["id"] == items[4].id
            for item in items[4:]:
                assert client2.json("/api/answer", {"id": item.id, "answer": "real"})[0] == 200
            assert client2.json("/api/state")[1]["done"] is True
        finally:
            server.shutdown()
            server.server_close()
    assert len(completed) == 1
    assert [j.answer for j in Session(session_dir).judgements()] == ["fake"] * 4 + ["real"] * 6


# -- the report ----------------------------------------------------------------------------------
def _answer_all(folder: Path, rule) -> list[Judgement]:
    with Session(folder, writer=True) as s:
        for item in s.items:
            s.answer(item.id, rule(item))
        return s.judgements()


def test_report_of_one_and_of_several_sessions(tmp_path):
    real, fake = make_sources(tmp_path)
    sessions = tmp_path / "sessions"
    for name in ("anna", "ben"):
        create_session(sessions / name, real, fake, 4, seed=1, expert=name.title())
    _answer_all(sessions / "anna", lambda item: item.source)                   # always right
    _answer_all(sessions / "ben", lambda item: "fake")                          # calls everything fake
    runner = CliRunner()
    result = runner.invoke(cli, ["expert-test", "--report", "anna", "--sessions-dir", str(sessions)])
    assert result.exit_code == 0, result.output
    one = json.loads((sessions / "anna" / "expert_report.json").read_text())
    assert one["sessions"][0]["overall"]["matrix"] == [[4, 0], [0, 4]]
    assert one["sessions"][0]["overall"]["accuracy"]["value"] == 1.0

    result = runner.invoke(cli, ["expert-test", "--report", "anna", str(sessions / "ben"), "--sessions-dir",
                                 str(sessions)])
    assert result.exit_code == 2 and "--out DIR is needed" in result.output
    result = runner.invoke(cli, ["expert-test", "--report", "anna", "ben", "--sessions-dir", str(sessions),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "all sessions pooled" in result.output
    both = json.loads((tmp_path / "expert_report.json").read_text())
    assert both["combined"]["overall"]["matrix"] == [[4, 4], [0, 8]]
    assert both["combined"]["overall"]["specificity"]["value"] == 0.5
    assert both == build_report([Session(sessions / "anna"), Session(sessions / "ben")])
    rows = (tmp_path / "expert_report.csv").read_text().splitlines()
    assert rows[0].startswith("scope,session,expert,class,n,fake_called_fake")
    combined = [r.split(",") for r in rows if r.startswith("combined,,,all,")]
    assert combined and combined[0][4:9] == ["16", "8", "0", "4", "4"]
    again = runner.invoke(cli, ["expert-test", "--report", "anna", "ben", "--sessions-dir", str(sessions),
                                "--out", str(tmp_path)])
    assert again.exit_code == 2 and "--force" in again.output


def test_cli_serve_refuses_a_resume_with_other_sources(tmp_path, session_dir):
    real, fake = make_sources(tmp_path / "sessions")  # another pair of files
    result = CliRunner().invoke(cli, ["expert-test", "--session", "s1", "--sessions-dir", str(session_dir.parent),
                                      "--real", str(real)])
    assert result.exit_code == 2 and "was made from" in result.output
    result = CliRunner().invoke(cli, ["expert-test", "--session", "new", "--sessions-dir", str(session_dir.parent)])
    assert result.exit_code == 2 and "give --real and --fake" in result.output


def test_cli_serves_on_localhost_and_a_kill_loses_no_answer(tmp_path):
    import re
    import signal
    import subprocess
    import sys

    real, fake = make_sources(tmp_path)
    exe = Path(sys.executable).with_name("augkit")
    cmd = [str(exe), "expert-test", "--real", str(real), "--fake", str(fake), "--n", "5", "--session", "k",
           "--sessions-dir", str(tmp_path / "sessions"), "--port", "0", "--seed", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[1])
        assert url, lines
        client = Client(url.group(0))
        first = client.json("/api/state")[1]["image"]["id"]
        assert client.json("/api/answer", {"id": first, "answer": "fake"})[0] == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "stopped with 1 of 10 answered; continue with: augkit expert-test --session k --sessions-dir" in rest
    assert Session(tmp_path / "sessions" / "k").judgements()[0].answer == "fake"
