"""Batch sizes: ``auto`` where it starts, and the back-off when a unit runs out of memory."""

import pickle

import pytest
import torch

from dvbench.harness.errors import InputError
from dvbench.harness.lm.batching import Sizes, out_of_memory, ran_at


def _sizes(setting, device="cuda:0", default=8, ceiling=64, log=None):
    return Sizes({"batch_size": (setting, default, ceiling)}, device=device, what="valuators.x", log=log)


def test_auto_starts_at_the_ceiling_on_a_gpu_and_at_the_default_on_the_cpu():
    assert _sizes("auto")["batch_size"] == 64
    assert _sizes("auto", device="cpu")["batch_size"] == 8
    assert _sizes(5)["batch_size"] == 5 and _sizes(5, device="cpu")["batch_size"] == 5


def _fits(limit, calls):
    """A unit that runs out of memory above ``limit`` rows, as CUDA would, after advancing 3."""
    def unit(sizes):
        def run(advance):
            calls.append(sizes["batch_size"])
            advance(3)
            if sizes["batch_size"] > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return sizes["batch_size"]
        return run
    return unit


def test_auto_halves_until_the_unit_fits_and_keeps_that_size():
    lines, calls, progress = [], [], []
    sizes = _sizes("auto", log=lines.append)
    unit = _fits(10, calls)(sizes)
    assert sizes.run(unit, lambda n: progress.append(n)) == 8
    assert calls == [64, 32, 16, 8]
    assert sum(progress) == 3  # each failed try's progress taken back
    assert lines == [f"valuators.x: out of memory on cuda:0; running the unit again at batch_size {n}"
                     for n in (32, 16, 8)]
    assert sizes.run(unit) == 8 and calls[-1] == 8  # found once: the next unit starts there
    assert ran_at([sizes.record(), {"size_batch_size": 16, "other": 1}]) == {"batch_size": 8}


def test_a_later_unit_that_still_runs_out_halves_again():
    calls = []
    sizes = _sizes("auto")
    assert sizes.run(_fits(40, calls)(sizes)) == 32
    assert sizes.run(_fits(20, calls)(sizes)) == 16
    assert calls == [64, 32, 32, 16]


def test_a_number_is_never_changed_out_of_memory_is_one_line():
    sizes = _sizes(16)
    with pytest.raises(InputError, match=r"^valuators.x: out of memory on cuda:0 at batch_size 16; "
                                         r"set batch_size lower, or to auto$"):
        sizes.run(_fits(10, [])(sizes))
    tight = _sizes("auto", ceiling=2)
    with pytest.raises(InputError, match="at batch_size 1; shorten the sequences"):
        tight.run(_fits(0, [])(tight))


def test_other_errors_are_not_retried():
    calls = []

    def unit(advance):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _sizes("auto").run(unit)
    assert calls == [1]


def test_what_counts_as_out_of_memory():
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                      "memory: you tried to allocate 1099511627776 bytes."))
    assert not out_of_memory(RuntimeError("expected scalar type Float"))
    assert not out_of_memory(MemoryError())  # Python's own: not a batch's to retry


def test_a_real_cpu_allocation_failure_is_recognised():
    try:
        torch.empty(2**62, dtype=torch.uint8)
    except Exception as error:  # noqa: BLE001 - whatever torch raises is what is checked
        assert out_of_memory(error)
    else:
        pytest.fail("allocating 4 EiB succeeded")


def test_pickled_for_a_worker_without_the_drivers_log():
    lines = []
    sizes = pickle.loads(pickle.dumps(_sizes("auto", log=lines.append)))
    assert sizes.run(_fits(40, [])(sizes)) == 32 and lines == []
    assert sizes.record() == {"size_batch_size": 32}
