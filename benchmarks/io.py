"""IO benchmark: import throughput and random-batch read throughput of augkit's HDF5 dataset.

Everything is measured in one run on the real images (``../shared/data/pbc128`` beside the
repository, or ``--src``), each augkit number next to a plain reference doing the same work:

1. import: ``augkit.data.import_source`` over the whole folder, against a single-threaded loop of
   PIL open + centre-crop + resize + write into a pre-sized h5py dataset with the same chunking;
2. random batches of 64 seeded indices: ``H5Dataset.read``, a torch DataLoader over the dataset
   (``__getitems__``; 0 and 2 workers), plain h5py one index at a time, plain h5py fancy indexing
   with sorted indices, and numpy fancy indexing in memory (the upper bound);
3. the same random reads on copies of the file written with 1, 4, 16 and 64 rows per chunk (plus
   augkit's default where it differs, and contiguous), which is what justifies augkit's chunking.

Read measurements run after the page cache is warmed (the file is read once), are repeated 3
times and the median is reported; each repeat stops after ``--max-seconds`` so slow methods do not
dominate the runtime. Prints one table, a PASS/FAIL line against the goal (the augkit reader
delivers >= 5,000 images/s at 64 px with random batches of 64), and with ``--json FILE`` writes the
rows as JSON.

    python benchmarks/io.py [--src DIR] [--size 64] [--batches 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

GOAL_IMAGES_PER_S = 5_000
GOAL_SIZE = 64
DEFAULT_SRC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pbc128"
CHUNK_VARIANTS = (1, 4, 16, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=DEFAULT_SRC,
                   help="image folder (<class>/<image>), default: ../shared/data/pbc128 beside the repository")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--batches", type=int, default=300, help="random batches per measurement (default 300)")
    p.add_argument("--batch-size", type=int, default=64, help="indices per random batch (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each read measurement; median reported")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="stop one repeat of a read measurement after this long (slow methods)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random batches")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to write the benchmark files (default: a temporary folder); removed at the end")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    return p.parse_args(argv)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def warm(path: Path) -> None:
    """Read a file once so that every timed read finds it in the page cache."""
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def list_images(src: Path) -> list[tuple[int, Path]]:
    """(class index, file) in the order augkit's folder importer uses: sorted classes, sorted files."""
    from augkit.data.importers import IMAGE_SUFFIXES

    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [(k, f) for k, d in enumerate(classes) for f in sorted(d.rglob("*"))
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES]


def reference_import(files: list[tuple[int, Path]], out: Path, size: int) -> int:
    """The plain way: one loop, PIL open + centre-crop + resize, write each image into h5py."""
    import h5py
    import numpy as np
    from PIL import Image

    from augkit.data.schema import chunk_rows

    with h5py.File(out, "w") as f:
        images = f.create_dataset("images", shape=(len(files), size, size, 3), dtype="uint8",
                                  chunks=(chunk_rows(size, size), size, size, 3))
        labels = np.empty(len(files), dtype=np.int64)
        n = 0
        for label, path in files:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize(
                    (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
                images[n] = np.asarray(im, dtype=np.uint8)
            labels[n] = label
            n += 1
        f.create_dataset("labels", data=labels)
    return n


def copy_with_chunks(src: Path, dst: Path, images, rows: int | None) -> None:
    """A copy of an augkit file whose images use ``rows`` rows per chunk (None: contiguous)."""
    import h5py

    n, h, w, _ = images.shape
    with h5py.File(src, "r") as fin, h5py.File(dst, "w", libver=("v110", "latest")) as fout:
        if rows is None:
            fout.create_dataset("images", data=images)
        else:
            fout.create_dataset("images", data=images, chunks=(rows, h, w, 3), maxshape=(None, h, w, 3))
        for name in fin:
            if name != "images":
                fin.copy(fin[name], fout, name=name)
        for key, value in fin.attrs.items():
            fout.attrs[key] = value


def measure(run: Callable[[float], int], repeats: int, max_seconds: float) -> tuple[float, list[float], int]:
    """Median images/s of ``repeats`` calls of ``run(deadline_s) -> images read``."""
    rates, images = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = run(max_seconds)
        dt = time.perf_counter() - t0
        rates.append(n / dt)
        images = n
    return statistics.median(rates), rates, images


def over_batches(read: Callable, batches: list) -> Callable[[float], int]:
    def run(max_seconds: float) -> int:
        t0, n = time.perf_counter(), 0
        for idx in batches:
            read(idx)
            n += len(idx)
            if time.perf_counter() - t0 > max_seconds:
                break
        return n
    return run


def over_loader(make_loader: Callable, num_batches: int) -> Callable[[float], int]:
    def run(max_seconds: float) -> int:
        t0, n = time.perf_counter(), 0
        for k, (images, labels) in enumerate(make_loader()):
            n += len(labels)
            if k + 1 >= num_batches or time.perf_counter() - t0 > max_seconds:
                break
        return n
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src = args.src.resolve()
    if not src.is_dir():
        print(f"skipped: image folder {src} not found (give one with --src PATH)")
        return 0

    import h5py
    import numpy as np
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from torch.utils.data import DataLoader, RandomSampler

    import augkit
    from augkit.data import H5Dataset, import_source
    from augkit.data.schema import CHUNK_BYTES, chunk_rows
    from augkit.progress import set_quiet

    set_quiet(True)
    console = Console(width=None if sys.stdout.isatty() else 132)  # one line per row in logs and READMEs
    size, bs = args.size, args.batch_size
    rows: list[dict] = []

    def add(section: str, method: str, rate: float, runs: list[float] | None = None, images: int = 0,
            seconds: float | None = None, note: str = "", ref: bool = False) -> dict:
        row = {"section": section, "method": method, "images_per_s": round(rate, 1),
               "runs_images_per_s": [round(r, 1) for r in runs] if runs else None, "images": images,
               "seconds": None if seconds is None else round(seconds, 3), "note": note, "reference": ref}
        rows.append(row)
        return row

    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="augkit-io-", dir=base))
    started = time.perf_counter()
    try:
        files = list_images(src)
        if not files:
            print(f"skipped: no images found in {src}")
            return 0
        for _, path in files:  # the JPEGs come from the page cache for both importers
            warm(path)

        # -- 1. import -----------------------------------------------------------------------
        out = work / "augkit.h5"
        t0 = time.perf_counter()
        report = import_source(src, out, size=size)
        dt = time.perf_counter() - t0
        add("import", "augkit import_source (4 threads, default)", report.num_rows / dt, images=report.num_rows,
            seconds=dt, note="decode+resize, sha256, streaming atomic write")
        ref_out = work / "reference.h5"
        t0 = time.perf_counter()
        n_ref = reference_import(files, ref_out, size)
        dt = time.perf_counter() - t0
        add("import", "plain loop: PIL + h5py, 1 thread", n_ref / dt, images=n_ref, seconds=dt,
            note="pre-sized dataset, same chunking", ref=True)
        ref_out.unlink()

        # -- 2. random batches ---------------------------------------------------------------
        warm(out)
        ds = H5Dataset(out)
        n = len(ds)
        rng = np.random.default_rng(args.seed)
        order = np.concatenate([rng.permutation(n) for _ in range(-(-args.batches * bs // n))])
        batches = [order[k * bs:(k + 1) * bs] for k in range(args.batches)]
        f = h5py.File(out, "r")
        dset = f["images"]
        in_memory = dset[:]
        assert np.array_equal(ds.read(batches[0]), in_memory[batches[0]]), "H5Dataset.read returned wrong images"
        sec = "random batches"
        reps, cap = args.repeats, args.max_seconds

        def loader(workers: int) -> Callable:
            def make():
                g = torch.Generator().manual_seed(args.seed)
                sampler = RandomSampler(ds, num_samples=args.batches * bs, generator=g)
                return DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=workers)
            return make

        def per_index(d) -> Callable:
            return lambda idx: np.stack([d[i] for i in idx])

        methods = [
            ("(a) augkit H5Dataset.read(idx)", over_batches(ds.read, batches), ""),
            ("(b) augkit DataLoader, num_workers=0", over_loader(loader(0), args.batches),
             "RandomSampler, __getitems__, collate"),
            ("(b) augkit DataLoader, num_workers=2", over_loader(loader(2), args.batches),
             "incl. worker start-up each repeat"),
            ("(c) plain h5py, one index at a time", over_batches(per_index(dset), batches), "f['images'][i]"),
            ("(d) plain h5py, fancy sorted indices", over_batches(lambda idx: dset[np.sort(idx)], batches),
             "f['images'][sorted_idx]"),
            ("(e) numpy fancy indexing in memory", over_batches(lambda idx: in_memory[idx], batches),
             "upper bound"),
        ]
        results = {}
        for name, run, note in methods:
            rate, runs, imgs = measure(run, reps, cap)
            results[name] = add(sec, name, rate, runs, imgs, note=note, ref=name.startswith("(c)"))
        f.close()

        # -- 3. chunk sizes ------------------------------------------------------------------
        default_rows = chunk_rows(size, size)
        for crows in (*sorted({*CHUNK_VARIANTS, default_rows}), None):  # plus the default, e.g. 5 rows at 32 px
            path = work / f"chunks_{crows}.h5"
            copy_with_chunks(out, path, in_memory, crows)
            warm(path)
            label = "contiguous" if crows is None else f"{crows} row{'s' * (crows != 1)}/chunk"
            note = f"{crows * size * size * 3 // 1024} KiB chunks" if crows else "no chunking"
            if crows == default_rows:
                note += " (augkit default)"
            v = H5Dataset(path)
            with h5py.File(path, "r") as fc:
                d = fc["images"]
                for name, run in (("H5Dataset.read", over_batches(v.read, batches)),
                                  ("h5py one index at a time", over_batches(per_index(d), batches))):
                    rate, runs, imgs = measure(run, reps, cap)
                    add("chunk size", f"{label}: {name}", rate, runs, imgs, note=note)
            v.close()
            path.unlink()
        ds.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started

    # -- report --------------------------------------------------------------------------------
    ref_of = {"import": next(r for r in rows if r["section"] == "import" and r["reference"])["images_per_s"]}
    read_ref = next(r for r in rows if r["section"] == sec and r["reference"])["images_per_s"]
    ref_of[sec] = ref_of["chunk size"] = read_ref
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores {cpu_model()}, {platform.system()} {platform.machine()}",
        "python": platform.python_version(), "augkit": augkit.__version__, "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version, "torch": torch.__version__, "numpy": np.__version__,
        "src": str(src), "images": n, "size": size, "batch_size": bs, "batches": args.batches,
        "repeats": reps, "max_seconds_per_repeat": cap, "seed": args.seed,
        "chunk_bytes": CHUNK_BYTES, "chunk_rows": default_rows, "runtime_s": round(total, 1),
        "page_cache": "warm (each file read once before its timed reads)",
    }
    table = Table(title=f"augkit IO: {n:,} images of {src.name} at {size} px, random batches of {bs}")
    table.add_column("section")
    table.add_column("method")
    table.add_column("images/s", justify="right")
    table.add_column("× ref", justify="right")
    table.add_column("note")
    for r in rows:
        ratio = r["images_per_s"] / ref_of[r["section"]]
        table.add_row(r["section"], escape(r["method"]), f"{r['images_per_s']:,.0f}",
                      "ref" if r["reference"] else f"{ratio:.2f}", escape(r["note"]))
    console.print(f"{meta['machine']}; python {meta['python']}, h5py {meta['h5py']} (HDF5 {meta['hdf5']}), "
                  f"torch {meta['torch']}, numpy {meta['numpy']}")
    console.print(f"page cache warmed before timing (every file read once); reads: median of {reps} repeats, "
                  f"each {args.batches} batches or {cap:g} s, whichever ends first; import: one run")
    console.print(table)
    gate = {k: results[k]["images_per_s"] for k in ("(a) augkit H5Dataset.read(idx)",
                                                   "(b) augkit DataLoader, num_workers=0")}
    passed = min(gate.values()) >= GOAL_IMAGES_PER_S
    verdict = "PASS" if passed else "FAIL"
    detail = "; ".join(f"{k[4:]}: {v:,.0f} img/s" for k, v in gate.items())
    console.print(f"goal: augkit reader >= {GOAL_IMAGES_PER_S:,} img/s at {GOAL_SIZE} px, random batches of 64: "
                  f"[bold]{verdict}[/bold] ({detail})"
                  + ("" if size == GOAL_SIZE and bs == 64 else f" [measured at {size} px, batch {bs}]"))
    console.print(f"total runtime {total:.0f} s")
    if args.json:
        payload = {"meta": meta, "goal": {"images_per_s": GOAL_IMAGES_PER_S, "size": GOAL_SIZE,
                                          "measured": gate, "result": verdict}, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
