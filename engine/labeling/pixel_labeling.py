"""Labeling with methods that adapt the backbone (MAML, Meta-SGD, Reptile, Proto-MAML).

Their adapted network is not the one embeddings were cached with, so an exact
prediction needs every image through the adapted weights again. A label run
decodes the examples, adapts on their pixels, and predicts every image from its
pixels; on the way it also caches each image's embedding under the meta-learned
start (the model's ``backbone_id``), which is what makes a correction cheap to
show: :func:`provisional_refresh` fits a prototype head on those cached embeddings
in milliseconds and marks its predictions provisional, and the next label run
(the exact one, which the app runs in the background and a newer correction
cancels) replaces them.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch

from engine.data.transforms import normalize
from engine.labeling.embedder import BatchDecoder, ImageItem
from engine.labeling.label_results import (AdaptedTask, LabelSummary, RefreshReport, stored_model_meta,
                                           support_fingerprint, write_arrays)
from engine.labeling.progress import CancelToken, ProgressCallback, ProgressMeter
from engine.labeling.scoring import PredictionArrays

log = logging.getLogger(__name__)
# ``lab`` below is the engine.labeling.labeler.Labeler calling (typed Any: that module imports this one).

# A provisional refresh is shown only when at least this share of the usable images
# has a cached embedding of the start; below it, most tiles would keep old guesses.
PROVISIONAL_MIN_SHARE = 0.5


def adapt_on_pixels(lab: Any, decoder: BatchDecoder | None = None
                    ) -> tuple[AdaptedTask, list[tuple[int, str, str]]]:
    """Decode the examples and adapt on them; (task, examples that could not be read)."""
    project, model = lab.project, lab.model
    records = {r.id: r for r in project.iter_images() if r.error is None and r.hash is not None}
    pairs = [(image_id, cid) for image_id, cid in project.examples() if image_id in records]
    runner = lab._backbone(None)
    decoder = decoder or BatchDecoder(model.preprocessing, runner.batch_size, lab.workers)
    support = [ImageItem(i, records[i].path, str(records[i].hash)) for i, _ in pairs]
    class_of = dict(pairs)
    xs, ys_cid, kept_items, failed = [], [], [], []
    for batch in decoder.batches(support):
        xs.append(batch.pixels)
        ys_cid += [class_of[it.image_id] for it in batch.items]
        kept_items += batch.items
        failed += [(it.image_id, it.path, reason) for it, reason in batch.failures]
    if failed:
        project.mark_errors([(i, reason) for i, _, reason in failed])
    class_ids, skipped = lab._classes_with_examples(set(ys_cid))
    index = {cid: k for k, cid in enumerate(class_ids)}
    keep = [k for k, cid in enumerate(ys_cid) if cid in index]
    x = normalize(torch.cat(xs)[keep], model.preprocessing).to(runner.device)
    y = torch.tensor([index[ys_cid[k]] for k in keep], dtype=torch.long, device=runner.device)
    predictor = model.learner.adapt(x, y, len(class_ids))  # owns its grad mode: no inference_mode here
    if getattr(predictor, "batch_norm", None) == "transductive":
        # A label must not depend on which images share its batch: label with the support statistics.
        log.warning("the model normalizes queries transductively; labeling uses its examples' statistics instead")
        predictor = predictor.non_transductive()
    fingerprint = support_fingerprint([(ys_cid[k], kept_items[k].hash) for k in keep])
    return AdaptedTask(predictor, class_ids, len(keep), fingerprint, skipped), failed


def label_by_pixels(lab: Any, progress: ProgressCallback | None, cancel: CancelToken | None) -> LabelSummary:
    project, model = lab.project, lab.model
    runner = lab._backbone(progress)
    decoder = BatchDecoder(model.preprocessing, runner.batch_size, lab.workers)
    task, failed = adapt_on_pixels(lab, decoder)
    # Over provisional predictions, the exact model becomes current only once every image has
    # its prediction: until then most tiles are still provisional, and the app says so.
    current = project.current_model()
    over_provisional = current is not None and bool(current[2].get("provisional"))
    meta = stored_model_meta(model, task)
    model_id = project.set_model(model.name, meta, make_current=not over_provisional)
    summary = LabelSummary(model_id, task.class_ids, task.examples, failed=list(failed),
                           skipped_classes=task.skipped_classes)
    done = project.predicted_image_ids(model_id)
    failed_ids = {i for i, _, _ in failed}
    records = [r for r in project.iter_images() if r.error is None and r.hash is not None]
    items = [ImageItem(r.id, r.path, str(r.hash)) for r in records if r.id not in done and r.id not in failed_ids]
    cached = set(project.get_embeddings(model.backbone_id, [it.hash for it in items])[0]) if items else set()
    meter = ProgressMeter("labeling", len(items), progress)
    meter.start()
    for batch in decoder.batches(items, cancel):
        if batch.failures:
            project.mark_errors([(it.image_id, reason) for it, reason in batch.failures])
            summary.failed += [(it.image_id, it.path, reason) for it, reason in batch.failures]
        if batch.items:
            x = normalize(batch.pixels.to(runner.device), model.preprocessing)
            with torch.inference_mode():
                p = task.predictor.predict(x)
                fresh = [k for k, it in enumerate(batch.items) if it.hash not in cached]
                if fresh:  # the start's embeddings, for provisional refreshes after a correction
                    z = model.learner.embed(x[fresh]).float().cpu().numpy()
            if fresh:
                project.put_embeddings(model.backbone_id, [(batch.items[k].hash, z[n]) for n, k in enumerate(fresh)])
                cached.update(batch.items[k].hash for k in fresh)
            write_arrays(project, model_id, [it.image_id for it in batch.items],
                         PredictionArrays.from_prediction(p), task.class_ids)
            summary.embedded += len(batch.items)
            summary.predicted += len(batch.items)
        meter.advance(len(batch.items) + len(batch.failures))
    summary.cancelled = cancel is not None and cancel.cancelled and meter.done < len(items)
    if over_provisional and not summary.cancelled:
        project.set_model(model.name, meta)
    lab._invalidate()
    return summary


def provisional_refresh(lab: Any) -> RefreshReport | None:
    from engine.methods.protonet import ProtoNet, ProtoNetConfig

    t0 = time.perf_counter()
    project, model = lab.project, lab.model
    table = lab._ensure_table()
    usable = project.count() - project.count(status="error")
    if usable == 0 or len(table) < PROVISIONAL_MIN_SHARE * usable:
        return None
    pairs = project.examples()
    rows = [(cid, lab._row_of_image.get(image_id)) for image_id, cid in pairs]
    rows = [(cid, r) for cid, r in rows if r is not None]
    if not rows:  # no example embedded yet (added since the last run): only the exact run can show them
        return None
    class_ids, skipped = lab._classes_with_examples({cid for cid, _ in rows})
    index = {cid: k for k, cid in enumerate(class_ids)}
    rows = [(cid, r) for cid, r in rows if cid in index]
    z = table.matrix[[r for _, r in rows]]
    y = torch.tensor([index[cid] for cid, _ in rows], dtype=torch.long)
    # A calibrated prototype head (temperature fitted on the examples, or the scale rule).
    head = ProtoNet(model.learner.backbone, ProtoNetConfig()).adapt_embeddings(z, y, len(class_ids))
    fingerprint = support_fingerprint([(cid, table.hashes[r]) for cid, r in rows])
    task = AdaptedTask(head, class_ids, len(rows), fingerprint, skipped)
    t1 = time.perf_counter()
    scores = lab._scorer_for(table).score(head, class_ids)
    t2 = time.perf_counter()
    meta = {**stored_model_meta(model, task), "provisional": True}
    model_id = project.set_model(model.name, meta)
    write_arrays(project, model_id, table.image_ids, scores, class_ids)
    t3 = time.perf_counter()
    log.info("provisional refresh of %d images in %.0f ms", len(table), 1e3 * (t3 - t0))
    return RefreshReport(model_id, len(table), len(class_ids), t1 - t0, t2 - t1, t3 - t2, 0)

