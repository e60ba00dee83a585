"""The training skeleton every generator and encoder augkit trains runs on, written once.

A run is a :class:`Task` (what one step does, what a checkpoint holds, what a sample grid shows) driven
by :func:`run_training`, which owns everything else:

- the run folder: ``config.json``, ``checkpoints/latest.pt``, ``samples/step_XXXXXXX.png``,
  ``losses.csv`` and ``losses.png`` (StyleGAN2-ADA's layout: a run is a folder);
- resuming to the same weights and random streams (:class:`Streams`, saved per rank);
- the wall-time budget (the run ends with samples and a checkpoint to continue from);
- Ctrl-C: the run stops after the current step, with a checkpoint, and says how to continue;
- the cadence of log rows, sample grids and checkpoints;
- metric-driven snapshots (:class:`Snapshots`): scores in ``metrics.jsonl``, the best in
  ``checkpoints/best.pt``;
- under torchrun: every rank stops at the same step; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from augkit import distributed
from augkit.errors import Paused, UserError
from augkit.progress import track
from augkit.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint


@dataclass(frozen=True)
class Cadence:
    """How long a run trains and how often it logs, samples and checkpoints."""

    steps: int
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 500
    max_minutes: float = 0.0  # wall-time budget of this session; 0: none


@dataclass(frozen=True)
class Snapshots:
    """Score the run every ``every`` steps and at its last, and keep the best snapshot.

    ``score()`` returns a row of JSON numbers (rank 0 calls it); ``row[key]`` chooses (``minimise``:
    lower is better); ``keep()`` returns what a snapshot saves (the generating network's weights). Rows
    go to ``metrics.jsonl``, the best snapshot to ``checkpoints/best.pt`` (with its step, key and
    value), and a checkpoint follows every score, so a resumed run continues the same record. A run
    stopped by its wall-time budget is not scored where it stopped: the run made in pieces scores the
    steps the run made in one piece scores, and keeps the same best snapshot."""

    every: int
    score: Callable[[], dict]
    keep: Callable[[], dict]
    key: str
    minimise: bool = True
    plot: Callable[[list[dict], Path], None] | None = None

    def better(self, value: float, best: dict | None) -> bool:
        if best is None:
            return True
        return value < best["value"] if self.minimise else value > best["value"]


def best_snapshot_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "best.pt"


def read_metrics(run_dir: Path) -> list[dict]:
    """The score rows of a run's ``metrics.jsonl`` (none when it has no such file)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Streams:
    """A run's random streams: torch's global generator, a numpy Generator (``np``) and named torch
    Generators (``torch``), each seeded from ``seed`` plus its offset.

    ``per_rank``: under torchrun every rank draws its own streams (rank 0 those of a single process);
    otherwise every rank draws the same ones (a network that is not wrapped in DDP must stay the same on
    every rank)."""

    def __init__(self, seed: int, offsets: dict[str, int] | None = None, per_rank: bool = True):
        self.seed, self.offsets, self.per_rank = seed, dict(offsets or {}), per_rank
        torch.manual_seed(self._seed(0))  # dropout and anything else drawing from the global generator
        self.np = np.random.default_rng(self._seed(0))
        self.torch = {name: torch.Generator().manual_seed(self._seed(off)) for name, off in self.offsets.items()}

    def _seed(self, offset: int) -> int:
        return distributed.rank_seed(self.seed, offset) if self.per_rank else self.seed + offset

    def state(self) -> dict:
        return rng_state(np_rng=self.np, generators=self.torch)

    def restore(self, saved: dict) -> None:
        restore_rng_state(saved, np_rng=self.np, generators=self.torch)

    def restart_after(self, step: int) -> None:
        """Fresh streams past ``step``: for a rank whose streams the checkpoint does not hold (resumed
        with another world size)."""
        torch.manual_seed(self._seed(10 + step))
        self.np = np.random.default_rng([self._seed(0), step])
        for name, off in self.offsets.items():
            self.torch[name].manual_seed(self._seed(10 + off + step))


class Task:
    """One kind of training run, as the loop drives it. Subclasses implement :meth:`step`,
    :meth:`state_dict`, :meth:`load_state_dict` and :meth:`sample`; :meth:`note` formats the progress
    bar's line."""

    #: the checkpoint's kind: a run refuses another kind's checkpoint
    kind: str = "run"

    def begin(self, start: int) -> None:
        """Called once before the first step (``start``: the step a resumed run continues from)."""

    def step(self) -> tuple[dict[str, float], int]:
        """One optimiser step: the values to log (means over the log interval) and the images this rank used."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything besides the step, the streams and the history that resuming needs (networks,
        optimisers, averages)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def sample(self, step: int, path: Path) -> None:
        """Write a grid of what the run makes now (rank 0 only)."""

    def note(self, means: dict[str, float], rate: float) -> str:
        return "  ".join(f"{k} {v:.3f}" for k, v in means.items()) + f"  {rate:.0f} img/s"


def checkpoint_path(run_dir: Path, resume: bool) -> Path:
    """The run's checkpoint file, after checking that the folder suits a new run or a resumed one."""
    path = run_dir / "checkpoints" / "latest.pt"
    if path.exists() and not resume:
        raise UserError(f"{run_dir}: holds a run already; resume it (--resume) or choose another folder")
    if resume and not path.exists():
        raise UserError(f"{run_dir}: no checkpoint to resume from ({path} is missing)")
    return path


def write_history(history: list[dict], path: Path) -> None:
    """The logged rows (step, losses, images/s) as CSV."""
    with open(path, "w", newline="") as f:
        if history:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def plot_losses(history: list[dict], path: Path) -> None:
    """The logged losses against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in [k for k in history[0] if k.startswith("loss_")]:
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class StopFlag:
    """Ctrl-C asks the loop to stop after the current step, so the checkpoint it saves is consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C then falls back to the last periodic checkpoint
            self._previous = None
        return self

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _differences(saved, now, prefix: str = "", defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """(dotted key, saved value, value now) of every leaf that differs between two JSON-like records.
    A key on one side only is no difference when its value there is its entry in ``defaults``."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            key = f"{prefix}{k}"
            if (k in saved) != (k in now) and key in (defaults or {}):
                if (saved[k] if k in saved else now[k]) == defaults[key]:
                    continue
            out += _differences(saved.get(k), now.get(k), f"{key}.", defaults)
        return out
    return [(prefix.rstrip("."), saved, now)] if saved != now else []


def check_resumable(run_dir: Path, identity: dict, defaults: dict | None = None) -> None:
    """A resumed run must be the run that was started: the same ``identity`` (architecture, objective,
    optimiser settings; not the budget). A difference is named, instead of a state_dict mismatch later.

    ``defaults`` (dotted key -> value) are the options a version of augkit may have added after the run
    started: a new option at its default behaves as the older version did, so a run started before it
    existed still resumes, and one set otherwise is refused by name."""
    saved_file = run_dir / "config.json"
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text()).get("identity")
    if saved is None:
        return  # a run folder of a version that did not record it
    as_json = json.loads(json.dumps({"identity": identity, "defaults": defaults or {}}, default=str))
    diffs = _differences(saved, as_json["identity"], defaults=as_json["defaults"])
    if diffs:
        key, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise UserError(f"{run_dir}: cannot resume: it was started with {key} = {old!r}, now {new!r}{more}; "
                        "resume with the parameters it was started with, or start a new run in another folder")


def run_training(task: Task, streams: Streams, cadence: Cadence, run_dir: str | Path, *, config: dict,
                 resume: bool = False, label: str | None = None, mean_over_ranks: bool = True,
                 callback: Callable[[int], None] | None = None, identity: dict | None = None,
                 identity_defaults: dict | None = None, snapshots: Snapshots | None = None) -> dict:
    """Train ``task`` for ``cadence.steps`` steps in ``run_dir`` (``config`` is written to config.json);
    returns {"steps", "history", "stopped_early", "best_snapshot"}. ``mean_over_ranks``: log values
    averaged over ranks (false for a task every rank runs identically). ``callback(step)`` runs after
    every step. ``identity``: what a resumed run must share with the run it continues, and
    ``identity_defaults`` the defaults of options added since (see :func:`check_resumable`).
    ``snapshots``: score the run and keep its best snapshot (:class:`Snapshots`;
    ``best_snapshot`` is then {"step", "key", "value"} of the kept one)."""
    run_dir = Path(run_dir)
    ckpt_path = checkpoint_path(run_dir, resume)
    if resume and identity is not None:
        check_resumable(run_dir, identity, identity_defaults)
    if identity is not None:
        config = {**config, "identity": identity}
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    history: list[dict] = []
    # the log interval in progress: a checkpoint keeps it, so a resumed run logs the same means
    log = {"sums": {}, "count": 0}
    start = 0
    best: dict | None = None  # the kept snapshot: step, key, value
    trained_s = 0.0  # seconds spent in steps, over every piece of the run: what a score row's time means
    if resume:
        state = load_checkpoint(ckpt_path, kind=task.kind)
        task.load_state_dict(state)
        start = int(state["step"])
        per_rank = state.get("rng_ranks")
        if per_rank is not None and len(per_rank) == world:
            streams.restore(per_rank[rank])
        elif rank == 0 or not streams.per_rank:
            streams.restore(state["rng"])
        else:  # a world size other than the checkpoint's: this rank's streams start afresh, past `start`
            streams.restart_after(start)
        history = json.loads(state["history"])
        log = json.loads(state.get("log", json.dumps(log)))
        best = json.loads(state.get("best_snapshot", "null"))
        trained_s = float(state.get("trained_s", 0.0))
        if main and snapshots is not None:  # scores written after the checkpoint are scored again
            rows = [r for r in read_metrics(run_dir) if r["step"] <= start]
            _write_rows(rows, run_dir / "metrics.jsonl")
    if main:  # a resumed piece may have another budget (steps, minutes): config.json says what runs now
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "config.json.tmp"  # a kill while writing keeps the old file: a resume reads it
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, run_dir / "config.json")

    def checkpoint(step: int) -> None:
        rngs = distributed.all_gather_object(streams.state())
        if not main:
            return
        state = {"step": step, **task.state_dict(), "rng": rngs[0], "history": json.dumps(history),
                 "log": json.dumps({"sums": sums, "count": count}), "best_snapshot": json.dumps(best),
                 "trained_s": trained_s}
        if world > 1:
            state["rng_ranks"] = rngs
        save_checkpoint(ckpt_path, state, kind=task.kind)
        write_history(history, run_dir / "losses.csv")

    sums: dict[str, float] = log["sums"]
    count, t0, seen = log["count"], time.perf_counter(), 0
    deadline = time.monotonic() + 60 * cadence.max_minutes if cadence.max_minutes > 0 else None
    stopped_early = False
    step = start
    task.begin(start)
    with StopFlag() as stop, track(f"training {label or task.kind}", cadence.steps, done=start) as bar:
        while step < cadence.steps:
            began = time.perf_counter()
            values, images = task.step()
            trained_s += time.perf_counter() - began
            step += 1
            seen += images
            bar(1)
            out_of_time = deadline is not None and step < cadence.steps and time.monotonic() >= deadline
            if world > 1:  # every rank stops at the same step
                out_of_time, = distributed.any_true(out_of_time)
            if out_of_time:
                stopped_early = True  # the time budget is spent: finish this step like the last one
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            count += 1
            final = step == cadence.steps or stopped_early
            if step % cadence.log_every == 0 or final:
                rate = seen * world / max(time.perf_counter() - t0, 1e-9)
                means = {k: v / count for k, v in sums.items()}
                if mean_over_ranks:
                    means = distributed.mean_over_ranks(means)
                history.append({"step": step, **means, "images_per_s": rate})
                bar.note(task.note(means, rate))
                sums = dict.fromkeys(sums, 0.0)
                count, t0, seen = 0, time.perf_counter(), 0
            if (step % cadence.sample_every == 0 or final) and main:
                task.sample(step, run_dir / "samples" / f"step_{step:07d}.png")
            scored = snapshots is not None and (step % snapshots.every == 0 or step == cadence.steps)
            if scored:
                if main:
                    best = _score(snapshots, step, best, run_dir, task.kind, trained_s)
                best = distributed.all_gather_object(best)[0]  # every rank keeps rank 0's record
            if step % cadence.checkpoint_every == 0 or final or scored:
                checkpoint(step)
            if callback is not None:
                callback(step)
            stop_requested = stop.requested
            if world > 1:
                stop_requested, = distributed.any_true(stop_requested)
            if stop_requested:
                if step % cadence.checkpoint_every and not final:
                    checkpoint(step)
                raise KeyboardInterrupt(f"stopped at step {step}; continue with --resume")
            if stopped_early:
                break
    if main and history:
        plot_losses(history, run_dir / "losses.png")
    return {"steps": step, "history": history, "stopped_early": stopped_early, "best_snapshot": best}


def pause_if_budget_spent(result: dict, what: str, steps: int, minutes: float) -> None:
    """Raise :class:`augkit.errors.Paused` when ``result`` (of :func:`run_training`) ended at the budget:
    the run is not finished, so nothing may use it as if it were."""
    if result["stopped_early"]:
        raise Paused(f"{what}: the wall-time budget (minutes = {minutes:g}) was spent at step {result['steps']} of "
                     f"{steps}, with a checkpoint; run the same command with --resume to continue")


def _write_rows(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _score(snapshots: Snapshots, step: int, best: dict | None, run_dir: Path, kind: str,
           trained_s: float) -> dict | None:
    """Score the run at ``step``, append the row (with the training seconds so far: quality per
    CPU-minute), keep the snapshot when it is the best; returns the record."""
    row = {"step": step, "train_seconds": round(trained_s, 2), **snapshots.score()}
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    value = float(row[snapshots.key])
    if snapshots.better(value, best):
        best = {"step": step, "key": snapshots.key, "value": value}
        save_checkpoint(best_snapshot_path(run_dir), {**snapshots.keep(), **best}, kind=f"{kind}-snapshot")
    if snapshots.plot is not None:
        snapshots.plot(read_metrics(run_dir), run_dir / "metrics.png")
    return best
