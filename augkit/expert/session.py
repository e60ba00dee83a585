"""An expert-test session: which images an expert sees, in which order, and every answer given.

A session is a folder:

- ``manifest.json``  the shuffled items (opaque id → source, file, row, class) and how they were
  drawn (seed, files and their fingerprints). Never served to the page.
- ``images/<id>.png`` each image as a plain PNG named by its random id only.
- ``answers.jsonl``  an append-only log, one JSON event a line (``answer`` or ``undo``), flushed and
  fsync'd before the page hears back, so a closed browser, Ctrl-C or ``kill`` loses no answer.

The items are answered strictly in order; the state (how many answered, the current image) is the
log replayed. Building a session is atomic: an error leaves no folder behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from augkit import atomic
from augkit.data.reader import H5Dataset, ImageDataset
from augkit.data.schema import REAL
from augkit.errors import DataError, UserError
from augkit.expert.stats import ANSWERS, FAKE, Judgement

MANIFEST = "manifest.json"
ANSWERS_LOG = "answers.jsonl"
IMAGES = "images"
FORMAT = "augkit-expert-session"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AnswerRejected(UserError):
    """An answer or undo from the page that cannot be taken; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Item:
    id: str
    source: str          # "real" or "fake"
    class_name: str
    file: str            # the dataset the image came from
    row: int             # its row there
    origin: str          # the row's origin in that file ("real", "acgan", ...)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(f"--session '{name}': use letters, digits, '.', '_' or '-' (up to 64), not starting "
                        "with '.' or '-'")
    return name


# -- building ------------------------------------------------------------------------------------
def _spread(n: int, capacity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n items over classes as evenly as their capacities allow; leftover ties go to random classes."""
    counts = np.zeros(len(capacity), np.int64)
    while n > 0:
        open_ = np.flatnonzero(counts < capacity)
        take = open_ if len(open_) <= n else rng.choice(open_, size=n, replace=False)
        counts[take] += 1
        n -= len(take)
    return counts


def _pick(view: ImageDataset, label: int, k: int, rng) -> np.ndarray:
    return np.sort(rng.choice(np.flatnonzero(view.labels == label), size=k, replace=False))


def create_session(folder: str | Path, real: str | Path, fake: str | Path, n: int, *, seed: int | None = None,
                   show_class: bool = False, expert: str | None = None) -> "Session":
    """Draw n real images (origin "real" in ``real``) and n generated ones (any other origin in
    ``fake``), the same number of each per class so a class never hints at the source, shuffle them
    with ``seed`` (random and recorded when None) and write the session folder."""
    folder = Path(folder)
    if folder.exists():
        raise UserError(f"{folder}: already exists; resume it with --session, or choose another name")
    if n < 1:
        raise UserError(f"--n {n}: need at least one image per source")
    real_ds, fake_ds = H5Dataset(real), H5Dataset(fake)
    if real_ds.image_size != fake_ds.image_size:
        raise DataError(f"{real} holds {real_ds.image_size[0]}x{real_ds.image_size[1]} px images, {fake} "
                        f"{fake_ds.image_size[0]}x{fake_ds.image_size[1]} px: the size alone would tell them apart")
    real_view = real_ds.real()
    fake_view = fake_ds.subset(np.flatnonzero(fake_ds.origin != fake_ds.origins.index(REAL)))
    if not len(real_view):
        raise DataError(f"{real}: no rows with origin 'real'")
    if not len(fake_view):
        raise DataError(f"{fake}: no generated rows (every row has origin 'real')")
    classes = [c for c in real_ds.class_names if c in fake_ds.class_names]
    if not classes:
        raise DataError(f"{real} and {fake} share no class name")
    real_counts, fake_counts = real_view.class_counts(), fake_view.class_counts()
    capacity = np.array([min(real_counts[real_ds.class_names.index(c)], fake_counts[fake_ds.class_names.index(c)])
                         for c in classes])
    if capacity.sum() < n:
        raise UserError(f"--n {n}: the two files have only {int(capacity.sum())} images of each source in classes "
                        "they share; lower --n")
    seed = secrets.randbits(32) if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    per_class = _spread(n, capacity, rng)

    real, fake = str(Path(real).resolve()), str(Path(fake).resolve())
    drawn = []  # (source, view, path, positions in the view, class name)
    for c, k in zip(classes, per_class):
        if k:
            drawn.append((REAL, real_view, real, _pick(real_view, real_ds.class_names.index(c), k, rng), c))
            drawn.append((FAKE, fake_view, fake, _pick(fake_view, fake_ds.class_names.index(c), k, rng), c))
    order = rng.permutation(2 * n)
    ids = set()
    while len(ids) < 2 * n:
        ids.add(secrets.token_hex(8))
    ids = list(ids)

    items, images = [], []
    for source, ds, path, positions, c in drawn:
        pixels = ds.read(positions)
        for pos, image in zip(positions, pixels):
            items.append(Item(ids[len(items)], source, c, path, int(ds.rows[pos]), ds.origins[int(ds.origin[pos])]))
            images.append(image)
    items = [items[k] for k in order]
    images = [images[k] for k in order]

    manifest = {
        "format": FORMAT, "version": 1, "name": folder.name, "expert": expert or folder.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed,
        "n_per_source": n, "show_class": bool(show_class), "image_size": list(real_ds.image_size),
        "real": {"path": real, "fingerprint": real_ds.info.fingerprint},
        "fake": {"path": fake, "fingerprint": fake_ds.info.fingerprint},
        "per_class": {c: int(k) for c, k in zip(classes, per_class)},
        "items": [item.__dict__ for item in items],
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic.folder(folder) as tmp:
        (tmp / IMAGES).mkdir(parents=True)
        for item, image in zip(items, images):
            Image.fromarray(image).save(tmp / IMAGES / f"{item.id}.png", optimize=False)
        atomic.write_json(tmp / MANIFEST, manifest)
        (tmp / ANSWERS_LOG).touch()
    return Session(folder)


# -- answering -----------------------------------------------------------------------------------
class Session:
    """A session folder opened for reading (reports) or, with ``writer=True``, for answering.

    A writer holds an exclusive lock on the answers log, so two servers never interleave answers.
    All methods are thread-safe.
    """

    def __init__(self, folder: str | Path, *, writer: bool = False):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise UserError(f"{self.folder}: not an expert-test session (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
            self.items = [Item(**item) for item in manifest["items"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable session manifest ({exc})") from None
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.expert: str = manifest["expert"]
        self.show_class: bool = manifest["show_class"]
        self._by_id = {item.id: k for k, item in enumerate(self.items)}
        self._lock = threading.Lock()
        self._log = self.folder / ANSWERS_LOG
        self._fd = None
        if writer:
            self._fd = os.open(self._log, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                raise UserError(f"{self.folder}: this session is open in another augkit expert-test") from None
        try:
            self._answers: list[str] = self._replay()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def answered(self) -> int:
        return len(self._answers)

    @property
    def done(self) -> bool:
        return len(self._answers) == len(self.items)

    def image_path(self, image_id: str) -> Path:
        self._position(image_id)  # an unknown id is refused
        return self.folder / IMAGES / f"{image_id}.png"

    def state(self) -> dict:
        """What the page may know: progress, the current image's id (and class with --show-class),
        the next id to preload, and the expert's own last answer for undo. Never the source."""
        with self._lock:
            k = len(self._answers)
            current = self.items[k] if k < len(self.items) else None
            return {
                "total": len(self.items), "answered": k, "done": current is None,
                "image": None if current is None else {
                    "id": current.id, "class": current.class_name if self.show_class else None},
                "next": self.items[k + 1].id if k + 1 < len(self.items) else None,
                "undo": None if k == 0 else {"id": self.items[k - 1].id, "answer": self._answers[-1]},
            }

    def answer(self, image_id: str, answer: str) -> dict:
        """Record ``answer`` for the current image; anything else (a double click, an old tab) is refused."""
        if answer not in ANSWERS:
            raise AnswerRejected(f"answer must be 'real' or 'fake', got {answer!r}", 400)
        with self._lock:
            position = self._position(image_id)
            if position < len(self._answers):
                raise AnswerRejected("this image is already answered", 409)
            if position > len(self._answers):
                raise AnswerRejected("this image is not the current one", 409)
            self._append({"event": "answer", "id": image_id, "answer": answer})
            self._answers.append(answer)
        return self.state()

    def undo(self, image_id: str) -> dict:
        """Take back the last answer; ``image_id`` must name it, so a repeated undo takes back only one."""
        with self._lock:
            position = self._position(image_id)
            if not self._answers or position != len(self._answers) - 1:
                raise AnswerRejected("only the last answer can be undone", 409)
            self._append({"event": "undo", "id": image_id})
            self._answers.pop()
        return self.state()

    def judgements(self) -> list[Judgement]:
        with self._lock:
            return [Judgement(item.source, answer, item.class_name)
                    for item, answer in zip(self.items, self._answers)]

    # -- the log -------------------------------------------------------------------------------
    def _position(self, image_id: object) -> int:
        if not isinstance(image_id, str) or image_id not in self._by_id:
            raise AnswerRejected(f"unknown image id {image_id!r}", 404)
        return self._by_id[image_id]

    def _append(self, event: dict) -> None:
        if self._fd is None:
            raise RuntimeError("session opened read-only")
        event["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        os.write(self._fd, (json.dumps(event) + "\n").encode())
        os.fsync(self._fd)

    def _replay(self) -> list[str]:
        raw = self._log.read_bytes() if self._log.exists() else b""
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) < len(raw) and self._fd is not None:
            # a line cut off by a crash mid-write was never acknowledged to the page: drop it
            os.ftruncate(self._fd, len(complete))
        answers: list[str] = []
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
            where = f"{self._log}, line {number}"
            try:
                event = json.loads(line)
                kind, image_id = event["event"], event["id"]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{where}: not an answer event") from None
            position = self._by_id.get(image_id)
            if kind == "answer" and position == len(answers) and event.get("answer") in ANSWERS:
                answers.append(event["answer"])
            elif kind == "undo" and answers and position == len(answers) - 1:
                answers.pop()
            else:
                raise DataError(f"{where}: event {kind!r} for image {image_id!r} does not follow the ones before")
        return answers


def open_or_create(folder: Path, real: Path | None, fake: Path | None, n: int | None, *, seed: int | None,
                   show_class: bool, expert: str | None) -> bool:
    """Make sure ``folder`` holds a session: an existing one is resumed when every option given agrees
    with what it was made with (a mismatch names the option); otherwise a new one is made from ``real``
    and ``fake``. Returns True when it was made now."""
    folder = Path(folder)
    if folder.exists():
        manifest = Session(folder).manifest
        for option, given, kept in [("--real", real, manifest["real"]["path"]), ("--fake", fake, manifest["fake"]["path"])]:
            if given is not None and str(Path(given).resolve()) != kept:
                raise UserError(f"{option} {given}: session '{folder.name}' was made from {kept}; leave {option} out "
                                "to resume it, or choose another --session")
        for option, given, kept in [("--n", n, manifest["n_per_source"]), ("--seed", seed, manifest["seed"]),
                                    ("--show-class", show_class or None, manifest["show_class"] or None),
                                    ("--expert", expert, manifest["expert"])]:
            if given is not None and given != kept:
                raise UserError(f"{option}: session '{folder.name}' was made with {kept}; leave it out to resume")
        return False
    if real is None or fake is None:
        raise UserError(f"no session '{folder.name}' in {folder.parent}: give --real and --fake to start one")
    create_session(folder, real, fake, 50 if n is None else n, seed=seed, show_class=show_class, expert=expert)
    return True


def find_sessions(given: list[str], sessions_dir: Path) -> list[Path]:
    """The session folders named by ``given``: folders, or names of sessions in ``sessions_dir``."""
    if not given:
        raise UserError("--report needs one or more SESSION folders (or names in --sessions-dir)")
    folders = []
    for name in given:
        folder = Path(name)
        if not folder.is_dir() and (Path(sessions_dir) / name).is_dir():
            folder = Path(sessions_dir) / name
        if not folder.is_dir():
            raise UserError(f"{name}: no such session folder (nor in {sessions_dir})")
        folders.append(folder)
    return folders
