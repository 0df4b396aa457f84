"""Adapt a model on a project's examples and label every image of the project.

Head-only methods (ProtoNet now) work on cached embeddings: a run embeds what
is missing from the cache (examples first, since adapting needs them), predicts
each new batch as soon as it is embedded, and predicts images embedded by
earlier runs straight from the cache. Re-adapting after the examples change
(:meth:`Labeler.refresh`) never decodes an image again.

Methods that adapt the backbone cannot reuse embeddings for exact predictions
(engine.labeling.pixel_labeling): the labeler decodes the examples, adapts on the
pixels, and predicts every image from its pixels, caching the meta-learned start's
embeddings on the way so that a correction can show provisional predictions at once.

Which predictions are current: the model recorded with ``set_model`` carries a
fingerprint of the examples it adapted on, so the same examples give the same
model id and an interrupted run resumes with only the images that have no
prediction from it; changed examples give a new id and every image is
predicted again (from the cache, in milliseconds, for head-only methods).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.errors import FewShotError
from engine.labeling.embedder import ImageItem, RunPlan, embed_items, items_to_embed
from engine.labeling.fresh_predictions import FreshPredictions
from engine.labeling.label_results import (AdaptedTask, LabelSummary, RefreshReport, stored_model_meta,
                                           support_fingerprint, write_arrays)
from engine.labeling.pixel_labeling import adapt_on_pixels, label_by_pixels, provisional_refresh
from engine.labeling.runners import Runner, TorchRunner, choose_runner
from engine.labeling.progress import CancelToken, Progress, ProgressCallback, ProgressMeter
from engine.labeling.scoring import CachedScorer, EmbeddingTable, PredictionArrays

if TYPE_CHECKING:
    from engine.labeling.store import Project
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)

# Predictions per transaction when predicting from the cache during a run: big
# enough that commits (each an fsync) cost little, small enough that a kill
# loses at most a moment of work.
CACHE_PREDICT_CHUNK = 4096


class Labeler:
    """Labels one project with one model; keeps the cache in memory between refreshes.

    The GUI keeps one per (project, model) and calls :meth:`refresh` after each
    correction; the CLI calls :meth:`label` once.
    """

    def __init__(self, project: "Project", model: "LoadedModel", *, batch_size: int | None = None,
                 workers: int | None = None, plan: RunPlan | None = None, backend: str = "auto"):
        self.project = project
        self.model = model
        self.head_only = not model.learner.adapts_backbone
        self.batch_size = batch_size
        self.workers = workers
        self.plan = plan  # how labeling uses the cores; None: measured and chosen per run
        self.backend = backend  # the backbone's runtime: torch, onnxruntime, or auto (the faster)
        self._runner: Runner | None = None
        self._table: EmbeddingTable | None = None
        self._predicted_uncached = 0  # images with a prediction but no cached embedding, at the table's load
        self._row_of_image: dict[int, int] = {}
        self._scorer: CachedScorer | None = None
        self._table_key: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ public

    def label(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LabelSummary:
        """Adapt on the examples and predict every usable image that has no current prediction."""
        t0 = time.perf_counter()
        summary = self._label_head_only(progress, cancel) if self.head_only else self._label_by_pixels(progress, cancel)
        summary.seconds = time.perf_counter() - t0
        if self._runner is not None and summary.embedded:
            summary.backend = self._runner.backend
        log.info("labeling: %d embedded, %d from cache, %d predicted, %d failed in %.1f s%s", summary.embedded,
                 summary.from_cache, summary.predicted, len(summary.failed), summary.seconds,
                 " (cancelled)" if summary.cancelled else "")
        return summary

    def refresh(self, on_computed: Callable[[FreshPredictions], None] | None = None) -> RefreshReport:
        """Re-adapt on the current examples and recompute every prediction from the cache.

        Head-only methods only; images not embedded yet (a cancelled run) keep no prediction
        until :meth:`label` runs: a cancel holds until the person labels again. All
        predictions are written in one transaction; ``on_computed`` gets them first, before
        that write (the app shows them at once).
        """
        if not self.head_only:
            raise FewShotError(f"{self.model.learner.name} adapts the whole network, so its predictions cannot be "
                               "refreshed from cached embeddings; run labeling again")
        t0 = time.perf_counter()
        table = self._ensure_table()
        t1 = time.perf_counter()
        task = self.adapt()
        if self._table is not table:  # adapt embedded new examples: they get predictions too
            table = self._ensure_table()
        scores = self._scorer_for(table).score(task.predictor, task.class_ids)
        t2 = time.perf_counter()
        if on_computed is not None:
            on_computed(FreshPredictions.of(table.image_ids, scores.probs, scores.scores, task.class_ids))
        model_id = self.project.set_model(self.model.name, stored_model_meta(self.model, task))
        write_arrays(self.project, model_id, table.image_ids, scores, task.class_ids)
        t3 = time.perf_counter()
        assert self._scorer is not None
        return RefreshReport(model_id, len(table), len(task.class_ids), t1 - t0, t2 - t1, t3 - t2,
                             self._scorer.recomputed_classes)

    def warm(self) -> bool:
        """Load the cache and score every image once, writing nothing, so that the next
        refresh (a person's first correction) recomputes only the class it changed. Head-only
        methods whose refresh works from the cache; returns whether it did anything."""
        if not self.head_only or not self.project.examples() or not self.refresh_covers_predictions():
            return False
        task = self.adapt()
        self._scorer_for(self._ensure_table()).score(task.predictor, task.class_ids)
        return True

    def predictions_behind(self) -> bool:
        """Whether the current predictions were adapted on other examples than the project
        holds: a stop came after a correction was committed and before the refresh that
        follows it was written. False when the predictions recorded no examples (written
        elsewhere: nothing to compare with). The examples counted are those ``adapt``
        counts: usable, with a content hash."""
        current = self.project.current_model()
        adapted_on = (current[2].get("adapted_on") or {}).get("fingerprint") if current else None
        pairs = self.project.examples()
        if adapted_on is None or not pairs:
            return False
        records = [(class_id, self.project.image(image_id)) for image_id, class_id in pairs]
        return adapted_on != support_fingerprint([(c, r.hash) for c, r in records if r.usable and r.hash])

    def adapt(self) -> AdaptedTask:
        """Adapt on the examples: a head on their cached embeddings (head-only methods;
        examples not embedded yet are embedded first), else on their pixels."""
        if not self.head_only:
            return adapt_on_pixels(self)[0]
        pairs = self.project.examples()
        found = self._example_embeddings(pairs)
        if len(found) < len(pairs):
            self._embed_examples(None, None)  # examples added since: embed them (a few images)
            self._invalidate()
            found = self._example_embeddings(pairs)
        class_ids, skipped = self._classes_with_examples({cid for cid, _, _ in found})
        index = {cid: k for k, cid in enumerate(class_ids)}
        found = [f for f in found if f[0] in index]
        z = torch.stack([v for _, _, v in found]) if found else torch.zeros((0, 0))
        y = torch.tensor([index[cid] for cid, _, _ in found], dtype=torch.long)
        head = self.model.learner.adapt_embeddings(z, y, len(class_ids))
        fingerprint = support_fingerprint([(cid, h) for cid, h, _ in found])
        return AdaptedTask(head, class_ids, len(found), fingerprint, skipped)

    def _example_embeddings(self, pairs: list[tuple[int, int]]) -> list[tuple[int, str, torch.Tensor]]:
        """(class id, content hash, embedding) of each example with a cached embedding: from
        the in-memory table when it is loaded (a refresh), else from the store (a few rows)."""
        if self._table is not None and self._table_key == self._cache_key():
            table = self._table
            rows = [(cid, self._row_of_image.get(image_id)) for image_id, cid in pairs]
            return [(cid, table.hashes[r], table.matrix[r]) for cid, r in rows if r is not None]
        hashes = [self.project.image(image_id).hash for image_id, _ in pairs]
        cached, matrix = self.project.get_embeddings(self.model.backbone_id, [h for h in hashes if h])
        row = {h: k for k, h in enumerate(cached)}
        vectors = torch.from_numpy(matrix)
        return [(cid, h, vectors[row[h]]) for (_, cid), h in zip(pairs, hashes) if h in row]

    # ------------------------------------------------------------------ head-only labeling

    def _label_head_only(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> LabelSummary:
        example_report = self._embed_examples(progress, cancel)
        failed = list(example_report.failed)
        if example_report.cancelled:
            return LabelSummary(None, [], 0, embedded=example_report.embedded, failed=failed, cancelled=True)
        self._invalidate()
        task = self.adapt()
        model_id = self.project.set_model(self.model.name, stored_model_meta(self.model, task))
        summary = LabelSummary(model_id, task.class_ids, task.examples, embedded=example_report.embedded,
                               failed=failed, skipped_classes=task.skipped_classes)

        # 1. Images embedded before (earlier runs, other models with this backbone):
        # predicted straight from the cache.
        done = self.project.predicted_image_ids(model_id)
        items = items_to_embed(self.project, self.model)
        usable = self.project.count() - self.project.count(status="error")
        todo = np.zeros(0, dtype=np.int64)
        if len(done) + len(items) < usable:  # some cached image lacks this model's prediction
            table = self._ensure_table()
            todo = np.flatnonzero(~np.isin(table.image_ids, np.fromiter(done, dtype=np.int64, count=len(done))))
        meter = ProgressMeter("predicting from cache", len(todo), progress)
        meter.start()
        if len(todo):
            scores = self._scorer_for(table).score(task.predictor, task.class_ids)
            for start in range(0, len(todo), CACHE_PREDICT_CHUNK):
                if cancel is not None and cancel.cancelled:
                    summary.cancelled = True
                    return summary
                rows = todo[start:start + CACHE_PREDICT_CHUNK]
                part = scores.take(rows)
                write_arrays(self.project, model_id, table.image_ids[rows], part, task.class_ids)
                summary.from_cache += len(rows)
                summary.predicted += len(rows)
                meter.advance(len(rows))

        # 2. Images never embedded: embed in batches, predicting each batch while it is in memory.
        if items:
            def predict_batch(batch: list[ImageItem], z: np.ndarray) -> None:
                with torch.inference_mode():
                    p = task.predictor.predict_embeddings(torch.from_numpy(z))
                write_arrays(self.project, model_id, [it.image_id for it in batch],
                             PredictionArrays.from_prediction(p), task.class_ids)
                summary.predicted += len(batch)

            report = embed_items(self.project, self.model, items, runner=self._backbone(progress), progress=progress,
                                 cancel=cancel, on_batch=predict_batch, workers=self.workers, plan=self.plan,
                                 stage="labeling")
            summary.embedded += report.embedded
            summary.failed.extend(report.failed)
            summary.cancelled = report.cancelled
            summary.plan = report.plan
            self._invalidate()  # new rows in the cache
        return summary

    def _embed_examples(self, progress: ProgressCallback | None, cancel: CancelToken | None):
        example_ids = {image_id for image_id, _ in self.project.examples()}
        items = [it for it in items_to_embed(self.project, self.model, example_ids) if it.image_id in example_ids]
        return embed_items(self.project, self.model, items, runner=self._backbone(progress), progress=progress,
                           cancel=cancel, workers=self.workers, stage="embedding examples")

    # ------------------------------------------------------------------ methods that adapt the backbone

    def _label_by_pixels(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> LabelSummary:
        return label_by_pixels(self, progress, cancel)

    def provisional_refresh(self) -> RefreshReport | None:
        """For methods that adapt the backbone: predictions at once from the cached
        embeddings of the meta-learned start (a prototype head on them), marked
        provisional until a label run re-embeds every image with the adapted weights.
        None when too few images are cached to be worth showing."""
        return provisional_refresh(self)

    def _classes_with_examples(self, with_examples: set[int]) -> tuple[list[int], list[str]]:
        classes = self.project.classes()
        class_ids = [c.id for c in classes if c.id in with_examples]
        skipped = [c.name for c in classes if c.id not in with_examples]
        if not class_ids:
            if not classes:
                raise FewShotError("the project has no classes yet: add a class and a few example images of it")
            raise FewShotError("no class has a usable example image: add at least one readable example "
                               f"to {', '.join(repr(c.name) for c in classes)}")
        if skipped:
            log.warning("classes without a usable example are left out until they get one: %s", ", ".join(skipped))
        return class_ids, skipped

    def _backbone(self, progress: ProgressCallback | None = None) -> Runner:
        if self._runner is None:
            def notify(text: str) -> None:
                # A step with nothing to count: the app shows it as busy, the CLI prints it.
                if progress is not None:
                    progress(Progress(text, 0, 0, 0.0, None, 0.0, busy=True))
            # Methods that adapt the backbone run it in PyTorch (they need its weights' gradients).
            self._runner = (choose_runner(self.model, self.batch_size, self.backend, notify) if self.head_only
                            else TorchRunner(self.model, self.batch_size))
        return self._runner

    def _invalidate(self) -> None:
        self._table = None
        self._table_key = None

    def _cache_key(self) -> tuple[int, ...]:
        return self.project.image_generation()

    def _ensure_table(self) -> EmbeddingTable:
        key = self._cache_key()
        if self._table is not None and key == self._table_key:
            return self._table
        ids, hashes, predicted = [], [], []
        for rec in self.project.iter_images():
            if rec.error is None and rec.hash is not None:
                ids.append(rec.id)
                hashes.append(rec.hash)
                if rec.predicted_class_id is not None:
                    predicted.append(rec.id)
        cached_hashes, matrix = self.project.get_embeddings(self.model.backbone_id, hashes)
        row_of_hash = {h: k for k, h in enumerate(cached_hashes)}
        id_of_hash = dict(zip(hashes, ids))
        image_ids = np.array([id_of_hash[h] for h in cached_hashes], dtype=np.int64)
        table = EmbeddingTable(image_ids, cached_hashes, torch.from_numpy(matrix))
        self._table, self._table_key = table, key
        self._row_of_image = {int(i): row_of_hash[h] for i, h in zip(image_ids, cached_hashes)}
        self._predicted_uncached = sum(1 for i in predicted if i not in self._row_of_image)
        if self._scorer is None or self._scorer.table is not table:
            self._scorer = None
        return table

    def refresh_covers_predictions(self) -> bool:
        """Whether a refresh from the cache renews every prediction the project shows: False
        when nothing is cached, or when an image with a prediction has no cached embedding
        (predictions written elsewhere, or a cache emptied), which would keep a prediction
        adapted on other examples; a label run covers those. Images never predicted (a
        cancelled run) do not count: they wait for the label run the person starts."""
        table = self._ensure_table()
        return len(table) > 0 and self._predicted_uncached == 0

    def _scorer_for(self, table: EmbeddingTable) -> CachedScorer:
        if self._scorer is None or self._scorer.table is not table:
            self._scorer = CachedScorer(table)
        return self._scorer


def label_project(project: "Project", model: "LoadedModel", progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> LabelSummary:
    """Adapt ``model`` on the project's examples and label every usable image (see :class:`Labeler`)."""
    return Labeler(project, model).label(progress, cancel)


def refresh_predictions(project: "Project", model: "LoadedModel") -> RefreshReport:
    """Re-adapt on the current examples and recompute every prediction from the embedding cache."""
    return Labeler(project, model).refresh()
