"""Images on disk -> backbone embeddings in the project's cache, as fast as the backbone allows.

Three stages: worker threads decode batches of images, the backbone runs on
them, and the calling thread writes each finished batch's embeddings in one
transaction. Pillow releases the GIL while it decodes and resizes, and PyTorch
while it computes, so on a CPU threads are enough (worker processes measured no
faster there). With the backbone on a GPU decoding is all the CPU does, and
Pillow's Python half holds the GIL: there each decode thread hands its slice to
a worker process (torch-free, :mod:`engine.data.decode_procs`), one per spare core.

On a CPU, decoding and the forward pass share the cores, and how to share them
depends on what each costs (measured on the first batches of a process's first run, see
:class:`RunPlan`). PyTorch splits each op evenly over its threads and waits
for the slowest, so a decode thread that preempts one of them stalls them all.
When decoding is a small part of the work (EfficientNet-Lite0 on photos: a
tenth), PyTorch keeps every thread and the next batch is decoded between two
forward passes, on every core: overlapping it measured slower than not
(docs/PERFORMANCE.md). When decoding is a large part (Conv4 on 28 px
characters: half as much as the forward pass), each core runs its own
single-threaded forward stream on its own batches, which nothing can stall, and
the decode threads overlap with them. On a GPU decoding always overlaps.

Every project call happens on the calling thread (SQLite connections belong
to one thread). A file that cannot be decoded is recorded with its reason and
the run goes on. The run stops between batches when its :class:`CancelToken`
is tripped, keeping every batch already written; the next run embeds only what
is still missing from the cache, so it resumes where the last one stopped.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from engine.data.decode_procs import decode_rows_anywhere, processes_enabled, shared_pool
from engine.data.pixels import check_preprocessing
from engine.data.preprocessing import Preprocessing
from engine.labeling.progress import CancelToken, ProgressCallback, ProgressMeter
from engine.labeling.runners import Runner, TorchRunner

if TYPE_CHECKING:
    from engine.labeling.store import Project
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)

# Batches decoded ahead of the ones in the backbone: one keeps each forward stream
# fed, one more absorbs the jitter of slow files (a big JPEG among small PNGs).
PREFETCH_BATCHES = 2
# More decode threads than this add little: the Python half of decoding holds the GIL.
MAX_DECODE_WORKERS = 4
# Forward streams while a first run measures its costs (see embed_items).
MEASURING_STREAMS = 2


NON_FINITE = ("the model computed NaN or infinite features for this image: its weights may be damaged; "
              "try another model")


class ImageItem(NamedTuple):
    """An image the project wants embedded: its id, where it is, and its content hash."""

    image_id: int
    path: str
    hash: str


@dataclass
class DecodedBatch:
    """The images of one batch that decoded (``pixels[i]`` is ``items[i]``), and those that did not."""

    items: list[ImageItem]
    pixels: Tensor  # uint8 (len(items), C, H, W), preprocessed up to normalisation
    failures: list[tuple[ImageItem, str]]


@dataclass
class EmbedReport:
    """What one embedding run did. ``failed`` holds (image id, path, reason) of files that did not decode."""

    total: int = 0
    embedded: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    batch_size: int = 0
    plan: "RunPlan | None" = None  # how the cores were used (None: the run was too short to plan)

    @property
    def images_per_s(self) -> float:
        done = self.embedded + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0


def available_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class BatchDecoder:
    """Decodes a list of images into uint8 batches in a thread pool, ahead of the consumer.

    ``workers`` threads decode at once and ``prefetch`` batches are kept decoding
    ahead: from the moment a batch is handed over (``eager``, overlapping the
    consumer's work) or only once the consumer asks for the next one. All three
    may change between batches. ``cpu_s``/``decoded`` add up the decode cost.

    ``processes``: each thread hands its slice to a decode worker process and waits
    (:mod:`engine.data.decode_procs`), so decoding scales past the GIL. Worth it
    where decoding is the bottleneck and cores are spare: a GPU forward pass
    (H100 host, 16 cores: 8,200 Omniglot PNGs/s in threads at best, 87,000 in 15
    processes; docs/PERFORMANCE.md). On a 2-core CPU run it measured no better
    than threads.
    """

    def __init__(self, prep: Preprocessing, batch_size: int, workers: int | None = None,
                 prefetch: int = PREFETCH_BATCHES, processes: bool = False):
        check_preprocessing(prep)
        self.prep = prep
        self.batch_size = max(1, batch_size)
        self.workers = max(1, workers if workers is not None else min(available_cores(), MAX_DECODE_WORKERS))
        self.prefetch = max(1, prefetch)
        self.eager = True
        self.cpu_s = 0.0
        self.decoded = 0
        self.processes = processes and processes_enabled()

    def start_processes(self, count: int) -> None:
        """Start ``count`` worker processes now (they load while the caller does other
        work); falls back to decoding in threads when they cannot start."""
        if not self.processes:
            return
        try:
            shared_pool().ensure(count)
        except OSError as e:
            log.warning("decode worker processes could not start (%s); decoding in threads", e)
            self.processes = False

    def batches(self, items: Sequence[ImageItem], cancel: CancelToken | None = None) -> Iterator[DecodedBatch]:
        """Yield the items in batches of ``batch_size``; stops early (between batches) on cancel."""
        c = self.prep.channels
        h, w = self.prep.size
        starts = iter(range(0, len(items), self.batch_size))
        pending: deque[tuple[list[ImageItem], np.ndarray, list[Future]]] = deque()
        pools: list[tuple[int, ThreadPoolExecutor]] = []

        def submit_next() -> bool:
            start = next(starts, None)
            if start is None:
                return False
            if not pools or pools[-1][0] != self.workers:
                # A new worker count: a new pool; the old one finishes what it was given.
                if pools:
                    pools[-1][1].shutdown(wait=False)
                pools.append((self.workers, ThreadPoolExecutor(self.workers, thread_name_prefix="decode")))
                self.start_processes(self.workers)
            pool = pools[-1][1]
            chunk = list(items[start:start + self.batch_size])
            buf = np.empty((len(chunk), c, h, w), dtype=np.uint8)
            # A few slices per worker, not one task per image: a future costs about
            # as much as decoding a 28 px character.
            step = max(1, -(-len(chunk) // (self.workers * 2)))
            tasks = [pool.submit(decode_rows_anywhere, [item.path for item in chunk[s:s + step]], self.prep,
                                 buf[s:s + step], self.processes)
                     for s in range(0, len(chunk), step)]
            pending.append((chunk, buf, tasks))
            return True

        try:
            while len(pending) < self.prefetch and submit_next():
                pass
            while pending:
                chunk, buf, tasks = pending.popleft()
                reasons: list[str | None] = []
                for task in tasks:
                    part, cpu = task.result()
                    reasons.extend(part)
                    self.cpu_s += cpu
                self.decoded += len(chunk)
                if self.eager:  # keep the pool busy while the consumer works on this batch
                    while len(pending) < self.prefetch and submit_next():
                        pass
                ok = [i for i, r in enumerate(reasons) if r is None]
                pixels = torch.from_numpy(buf if len(ok) == len(chunk) else buf[ok])
                failures = [(chunk[i], r) for i, r in enumerate(reasons) if r is not None]
                yield DecodedBatch([chunk[i] for i in ok], pixels, failures)
                if cancel is not None and cancel.cancelled:
                    return
                while len(pending) < self.prefetch and submit_next():
                    pass
        finally:
            for _, pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class RunPlan:
    """How a run uses the cores: decode threads, PyTorch threads per op, parallel forward
    streams, and whether decoding overlaps the forward pass or runs between passes."""

    decode_workers: int
    torch_threads: int
    streams: int = 1
    overlap: bool = True

    @classmethod
    def plan(cls, cores: int, decode_cpu: float, forward_cpu: float, on_cpu: bool = True,
             max_workers: int = MAX_DECODE_WORKERS, prefer_streams: bool = False) -> "RunPlan":
        """``decode_cpu``/``forward_cpu``: CPU seconds per image.

        Decoding is worth ``share x cores`` cores. Under half a core, the forward pass
        keeps every PyTorch thread and each batch is decoded on every core between
        two passes. Otherwise each core runs a single-threaded forward stream and
        decoding overlaps with them on its share of the cores (the threads outnumber
        the cores, but each blocks when the next stage is full, so they settle on
        the split by themselves). A GPU forward needs one stream and little CPU:
        decoding overlaps it on most of the cores. ``prefer_streams``: a runtime whose
        single-threaded streams beat its own threading (onnxruntime: a stream per core
        never waits for a preempted partner) always runs a stream per core.
        """
        cores = max(1, cores)
        total = decode_cpu + forward_cpu
        share = decode_cpu / total if total > 0 else 0.5
        decode_cores = share * cores
        if not on_cpu:
            return cls(max(1, min(round(decode_cores), max_workers, cores - 1)), cores, 1)
        if decode_cores < 0.5 and not prefer_streams:
            return cls(min(cores, max_workers), cores, 1, overlap=False)
        # Rounded up: a decode thread with too little to do blocks on the full queue, while one too
        # few caps the run (12-megapixel JPEGs want 1.3 cores of decoding: one thread gave 38 images/s).
        return cls(max(1, min(math.ceil(decode_cores - 1e-9), max_workers, cores)), 1, cores)


BatchCallback = Callable[[list[ImageItem], np.ndarray], None]

# Plans measured in this process, by (backbone id, backend, device, threads, batch size),
# with the forward pass's CPU per image: that cost does not change between runs, so only
# a process's first run pays for measuring it (two batches run in a slower way). Decoding
# does change (small PNGs, then 12-megapixel photos): each later run checks its own decode
# cost on its first batch and plans again when it calls for another split.
_PLANS: dict[tuple[str, str, str, int, int], tuple[RunPlan, float]] = {}


def _finished(value: Tensor) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def embed_items(project: "Project", model: "LoadedModel", items: Sequence[ImageItem], *,
                runner: "Runner | None" = None, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None, on_batch: BatchCallback | None = None,
                workers: int | None = None, plan: RunPlan | None = None, stage: str = "embedding") -> EmbedReport:
    """Embed ``items`` into the cache, one transaction per batch; bad files go to ``mark_errors``.

    ``on_batch(items, embeddings)`` runs after each batch is committed (the labeler
    predicts there, while the batch is still in memory). ``plan`` fixes how the
    cores are used; by default it is chosen from the costs measured during the
    first run of this backbone in the process, and reused by later runs (with an
    explicit ``workers``, the run keeps one stream). PyTorch's
    process-wide thread count follows the plan during the run and is restored
    after it: run one labeling job at a time.
    """
    runner = runner or TorchRunner(model)
    report = EmbedReport(total=len(items), batch_size=runner.batch_size)
    meter = ProgressMeter(stage, len(items), progress)
    meter.start()
    t0 = time.perf_counter()
    if cancel is not None and cancel.cancelled:
        report.cancelled = True
        return report
    torch_threads = runner.get_threads()
    own_threads = torch.get_num_threads()
    forward_batch = runner.batch_size
    plan_key = (model.backbone_id, runner.backend, str(runner.device), torch_threads, runner.batch_size)
    known_forward: float | None = None  # the forward cost of a cached plan: this run checks its decoding
    if plan is None and workers is None and plan_key in _PLANS:
        plan, known_forward = _PLANS[plan_key]
    on_cpu = runner.device.type == "cpu"
    # With a GPU forward, decoding is the work: worker processes, one per spare core.
    processes = not on_cpu and processes_enabled() and available_cores() > 1
    default_workers = available_cores() - 1 if processes else None
    decoder = BatchDecoder(model.preprocessing, runner.batch_size,
                           workers if workers is not None else (plan.decode_workers if plan else default_workers),
                           processes=processes)
    max_decode = workers if workers is not None else (default_workers or min(available_cores(), MAX_DECODE_WORKERS))
    streams: ThreadPoolExecutor | None = None
    n_streams = 1
    in_flight: deque[tuple[DecodedBatch, Future | None]] = deque()
    marks: tuple[float, int, float, int] | None = None
    committed = 0
    provisional: RunPlan | None = None  # the plan a CPU run measures with, until it has its own
    retired: list[ThreadPoolExecutor] = []  # stream pools a new plan replaced

    def apply(p: RunPlan) -> ThreadPoolExecutor | None:
        nonlocal n_streams
        n_streams = p.streams
        decoder.workers = p.decode_workers
        decoder.eager = p.overlap
        decoder.prefetch = p.streams + PREFETCH_BATCHES - 1 if p.overlap else 1
        runner.set_threads(p.torch_threads if on_cpu else torch_threads)
        # Each stream runs its batch in 1/streams-sized pieces: the streams together then
        # hold as many activations as one stream with the whole batch would.
        runner.batch_size = max(1, forward_batch // p.streams)
        return ThreadPoolExecutor(p.streams, thread_name_prefix="forward") if p.streams > 1 else None

    def plan_for(decode_cpu: float, forward_cpu: float) -> RunPlan:
        return RunPlan.plan(torch_threads if on_cpu else available_cores(), decode_cpu, forward_cpu, on_cpu,
                            max_decode, prefer_streams=runner.prefers_streams)

    check_mark: tuple[float, int] | None = None  # decoding's CPU time and count when a cached plan's check starts

    def replan(p: RunPlan) -> None:
        nonlocal streams
        if p == provisional and streams is not None:
            return  # already running this way
        if streams is not None:
            retired.append(streams)  # its batches in flight still finish and commit in order
        streams = apply(p)

    def commit(batch: DecodedBatch, z: Future | None) -> None:
        nonlocal committed
        committed += 1
        if batch.failures:
            project.mark_errors([(item.image_id, reason) for item, reason in batch.failures])
            report.failed.extend((item.image_id, item.path, reason) for item, reason in batch.failures)
        if z is not None:
            emb = z.result().numpy()
            items = batch.items
            finite = np.isfinite(emb).all(axis=1)
            if not finite.all():
                # Never cached: a NaN in the cache would be served on every later run.
                bad = [(items[i].image_id, NON_FINITE) for i in np.flatnonzero(~finite)]
                project.mark_errors(bad)
                report.failed.extend((i, items[k].path, reason) for k, (i, reason) in
                                     zip(np.flatnonzero(~finite).tolist(), bad))
                items = [it for it, ok in zip(items, finite.tolist()) if ok]
                emb = emb[finite]
            project.put_embeddings(model.backbone_id, [(item.hash, emb[i]) for i, item in enumerate(items)])
            report.embedded += len(items)
            if on_batch is not None and items:
                on_batch(items, emb)
        meter.advance(len(batch.items) + len(batch.failures))

    try:
        if on_cpu and runner.backend != "torch":
            # PyTorch only scores each batch here, on tiny tensors: its threads would
            # just spin between those ops, on cores the forward streams need (about
            # a tenth of the forward's CPU time for Lite0, measured).
            torch.set_num_threads(1)
        if plan is not None:
            streams = apply(plan)
        elif on_cpu and workers is None:
            # Measure while running single-threaded streams (two at most) and one decode
            # thread: each thread's CPU time is then its own work (no partner to spin for),
            # and on two cores it is the plan most runs keep, so the run does not slow
            # down while it measures.
            provisional = RunPlan(1, 1, min(torch_threads, MEASURING_STREAMS))
            streams = apply(provisional)
        elif workers is None:
            # A GPU: measure the second batch (the first pays for warm-up) with one decode thread.
            decoder.workers = 1
        # Batches committed before the costs are read: each stream's first pays for warm-up.
        warm = n_streams
        for batch in decoder.batches(items, cancel):
            z = None
            if batch.items:
                z = streams.submit(runner, batch.pixels) if streams else _finished(runner(batch.pixels))
            in_flight.append((batch, z))
            while len(in_flight) >= n_streams:
                commit(*in_flight.popleft())
            if known_forward is not None and check_mark is None and decoder.decoded >= forward_batch:
                check_mark = (decoder.cpu_s, decoder.decoded)  # the first batch paid for the decoders' warm-up
            elif known_forward is not None and check_mark is not None and \
                    decoder.decoded - check_mark[1] >= forward_batch:
                # A cached plan, checked against this run's own decoding (a batch after the first).
                checked = plan_for((decoder.cpu_s - check_mark[0]) / (decoder.decoded - check_mark[1]), known_forward)
                known_forward = None
                if checked != plan:
                    log.debug("this run's decoding calls for %s instead of %s", checked, plan)
                    plan = checked
                    _PLANS[plan_key] = (plan, _PLANS[plan_key][1])
                    replan(plan)
            if plan is not None or workers is not None or committed < warm:
                continue
            if marks is None:
                marks = (decoder.cpu_s, decoder.decoded, runner.cpu_s, runner.images)
                if provisional is None:
                    runner.set_threads(1)
                continue
            if runner.images - marks[3] < forward_batch:
                continue  # not a whole batch measured since the marks yet
            decode_cpu = (decoder.cpu_s - marks[0]) / max(1, decoder.decoded - marks[1])
            forward_cpu = (runner.cpu_s - marks[2]) / max(1, runner.images - marks[3])
            plan = plan_for(decode_cpu, forward_cpu)
            log.debug("decode %.3f ms/img, forward %.3f ms/img: %s", 1e3 * decode_cpu, 1e3 * forward_cpu, plan)
            _PLANS[plan_key] = (plan, forward_cpu)
            replan(plan)
        while in_flight:
            commit(*in_flight.popleft())
    finally:
        for pool in retired:  # normally idle already: every batch they ran was committed
            pool.shutdown(wait=True, cancel_futures=True)
        if streams is not None:
            streams.shutdown(wait=True, cancel_futures=True)
            # Back to whole batches, unless out-of-memory halved the pieces meanwhile.
            runner.batch_size = min(forward_batch, runner.batch_size * n_streams)
        runner.set_threads(torch_threads)
        if torch.get_num_threads() != own_threads:
            torch.set_num_threads(own_threads)
    report.cancelled = cancel is not None and cancel.cancelled and report.embedded + len(report.failed) < len(items)
    report.seconds = time.perf_counter() - t0
    report.batch_size = runner.batch_size
    report.plan = plan if plan is not None else provisional
    return report


def items_to_embed(project: "Project", model: "LoadedModel", first: Iterable[int] = ()) -> list[ImageItem]:
    """The project's images missing from the cache for this backbone, ``first`` ids at the front."""
    front = set(first)
    items = [ImageItem(int(i), str(p), str(h)) for i, p, h in project.images_to_embed(model.backbone_id)]
    items.sort(key=lambda it: it.image_id not in front)  # stable: keeps the store's order otherwise
    return items


def embed_missing(project: "Project", model: "LoadedModel", *, progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, batch_size: int | None = None,
                  workers: int | None = None) -> EmbedReport:
    """Fill the cache for every usable image of the project; what is cached already is not redone."""
    runner = TorchRunner(model, batch_size)
    return embed_items(project, model, items_to_embed(project, model), runner=runner, progress=progress,
                       cancel=cancel, workers=workers)
