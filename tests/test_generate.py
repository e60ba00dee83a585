"""The driver writes batch k while batch k + 1 is generated (WriteBehind): order, errors and the
all-or-nothing output must survive the overlap."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from augkit.augment import Augmenter, Context
from augkit.data import H5Dataset
from augkit.errors import PluginError
from augkit.generate import GENERATE_BATCH, WriteBehind, augment_to_file


def test_writes_run_in_order_and_a_failed_write_surfaces_at_the_next_submit():
    calls = []

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with WriteBehind() as behind:
            behind.submit(calls.append, 1)
            behind.submit(calls.append, 2)
            behind.submit(fail)
            behind.submit(calls.append, 4)  # raises the failed write's error; never runs
    assert calls == [1, 2]


def test_leaving_on_an_error_waits_for_the_write_in_flight_and_keeps_the_first_error():
    finished = threading.Event()

    def slow():
        time.sleep(0.2)
        finished.set()

    with pytest.raises(KeyError):
        with WriteBehind() as behind:
            behind.submit(slow)
            raise KeyError("the generator failed")
    assert finished.is_set()  # the writer is closed only after its last append returned


class _FailsOnSecondBatch(Augmenter):
    name = "fails_on_second_batch"

    def __init__(self, params=None):
        super().__init__(params)
        self.calls = 0

    def generate(self, label, n, ctx):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("the plugin's own bug")
        return np.full((n, 16, 16, 3), 7, np.uint8)


def test_a_failure_after_a_batch_was_handed_to_the_writer_leaves_no_file(tiny_h5, tmp_path):
    out = tmp_path / "out.h5"
    aug = _FailsOnSecondBatch()
    with pytest.raises(PluginError, match="the plugin's own bug"):
        augment_to_file(aug, H5Dataset(tiny_h5), out, {"per_class": GENERATE_BATCH + 5}, Context(seed=0), fit=False)
    assert aug.calls == 2
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_overlapped_writing_keeps_every_batch_in_class_order(tiny_h5, tmp_path):
    class Counter(Augmenter):
        name = "counter"

        def generate(self, label, n, ctx):
            return np.full((n, 16, 16, 3), label * 10 + ctx.rng.integers(0, 5), np.uint8)

    out = tmp_path / "out.h5"
    n = GENERATE_BATCH + 3  # two batches per class
    augment_to_file(Counter(), H5Dataset(tiny_h5), out, {"per_class": n}, Context(seed=0), fit=False)
    ds = H5Dataset(out)
    synthetic = ds.where(origin="counter")
    assert len(synthetic) == 3 * n
    np.testing.assert_array_equal(synthetic.labels, np.repeat(np.arange(3), n))
    firsts = synthetic.read(np.arange(len(synthetic)))[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(firsts, synthetic.labels)
