"""Decode worker processes: the same pixels and reasons as decoding in a thread, a worker
that dies is replaced without losing its files, and a file that kills a worker is
recorded with a reason instead of ending the run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import engine.data.decode_procs as decode_procs
from engine.data.decode_procs import CRASH_REASON, DecodePool, DecodeWorker, WorkerDied
from engine.data.decode_worker import decode_rows
from engine.data.preprocessing import Preprocessing
from engine.labeling.embedder import BatchDecoder, ImageItem
from labeling_data import extract_omniglot

PREP = Preprocessing(size=(28, 28), channels=1, invert=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("files")
    good = [p for ps in extract_omniglot(root / "omniglot", 2, per_character=5).values() for p in ps]
    (root / "empty.png").write_bytes(b"")
    (root / "page.png").write_text("<html><body>not an image</body></html>")
    (root / "cut.png").write_bytes(good[0].read_bytes()[:60])
    return [str(p) for p in good[:4]] + [str(root / n) for n in ("empty.png", "page.png", "cut.png")] + \
        [str(p) for p in good[4:]]


@pytest.fixture
def pool():
    p = DecodePool()
    yield p
    p.close()


def rows(n: int) -> np.ndarray:
    return np.zeros((n, 1, 28, 28), dtype=np.uint8)


def test_a_worker_decodes_what_a_thread_decodes(files, pool):
    here, there = rows(len(files)), rows(len(files))
    expected, _ = decode_rows(files, PREP, here)
    reasons, cpu = pool.decode(files, PREP, there)
    assert reasons == expected and cpu > 0
    assert sum(r is not None for r in reasons) == 3, "the empty, the HTML and the cut file"
    ok = [i for i, r in enumerate(reasons) if r is None]
    assert np.array_equal(here[ok], there[ok]) and there[ok].any()


def test_a_dead_worker_is_replaced_and_its_files_still_decoded(files, pool):
    pool.ensure(1)
    victim = pool._all[0]
    victim.proc.kill()
    victim.proc.wait()
    out = rows(len(files))
    reasons, _ = pool.decode(files, PREP, out)
    assert sum(r is None for r in reasons) == len(files) - 3
    assert pool.size() == 1 and pool._all[0] is not victim and pool._all[0].proc.poll() is None


def test_the_file_that_kills_a_worker_gets_a_reason(files, pool, monkeypatch):
    poison = files[1]
    real = DecodeWorker.decode

    def dies_on_poison(self, paths, prep, buf):
        if poison in paths:
            self.proc.kill()
            self.proc.wait()
            raise WorkerDied("killed")
        return real(self, paths, prep, buf)

    monkeypatch.setattr(DecodeWorker, "decode", dies_on_poison)
    reasons, _ = pool.decode(files, PREP, rows(len(files)))
    assert reasons[1] == CRASH_REASON
    assert reasons[0] is None and reasons[2] is None and reasons[-1] is None
    assert pool.size() == 1


def test_batch_decoder_with_processes_yields_what_threads_yield(files, monkeypatch):
    local = DecodePool()
    monkeypatch.setattr(decode_procs, "_pool", local)
    try:
        items = [ImageItem(i, f, str(i)) for i, f in enumerate(files)]
        got = {}
        for processes in (False, True):
            decoder = BatchDecoder(PREP, batch_size=4, workers=2, processes=processes)
            batches = list(decoder.batches(items))
            got[processes] = ([it.image_id for b in batches for it in b.items],
                              np.concatenate([b.pixels.numpy() for b in batches]),
                              sorted((it.image_id, r) for b in batches for it, r in b.failures))
        assert local.size() == 2, "one worker per decode thread"
        assert got[True][0] == got[False][0] and got[True][2] == got[False][2]
        assert np.array_equal(got[True][1], got[False][1])
    finally:
        local.close()


def test_processes_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(decode_procs.ENV_SWITCH, "0")
    assert not decode_procs.processes_enabled()
    assert not BatchDecoder(PREP, 4, processes=True).processes
    monkeypatch.setenv(decode_procs.ENV_SWITCH, "1")
    assert BatchDecoder(PREP, 4, processes=True).processes
    assert not BatchDecoder(PREP, 4).processes, "threads unless asked: on a CPU they measured as fast"


def test_the_worker_never_imports_torch():
    import subprocess
    import sys
    code = "import sys, engine.data.decode_worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(decode_procs.__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "False"
