"""What the engine worker runs: each function takes (context, handle, ...) and runs in
the worker thread. They are the GUI's only way into the engine, and they import
it lazily so that nothing here loads torch on the main thread.
"""
from __future__ import annotations

import gc
import logging
from typing import Any

from engine.errors import FewShotError
from fewshot_gui.worker import EngineContext, JobHandle

log = logging.getLogger(__name__)


def start_engine(ctx: EngineContext, h: JobHandle) -> str:
    # Importing torch creates some 300,000 objects, and full garbage collections
    # triggered along the way (each walking all of them, holding the GIL) froze the
    # window for 0.2-0.6 s three times at start-up. Nothing it makes is garbage, and all
    # of it is then kept out of later collections (see worker._freeze_imported).
    gc.disable()
    try:
        from engine.runtime import describe_device, pick_device, tune_cpu_allocator
        tune_cpu_allocator()
        ctx.device = pick_device("auto")
        ctx.device_text = describe_device(ctx.device)
        # Import what labeling needs now, while the user is still choosing a project.
        import engine.labeling.labeler  # noqa: F401
        import engine.labeling.store  # noqa: F401
    finally:
        # Frozen before collections resume: with them off, every new object piled up in
        # the youngest generation, and its first collection would walk them all (1 s).
        gc.freeze()
        gc.enable()
    return ctx.device_text


def load_model(ctx: EngineContext, h: JobHandle, spec: str, preprocessing: dict | None = None) -> dict:
    """Load a model for labeling; returns what the window shows of it: ``description``,
    ``method`` and ``scores`` (the uncertainty scores its predictions carry).

    ``preprocessing`` (a ``Preprocessing.to_dict()``): an ONNX file's input size and
    normalisation, as the user gave them; the engine remembers them for the file."""
    from engine.model_store import load_model as load
    from engine.runtime import pick_device
    if ctx.device is None:
        ctx.device = pick_device("auto")
    prep = _preprocessing(preprocessing) if preprocessing is not None else None
    if spec.lower().endswith(".onnx"):
        if prep is None:
            _require_remembered(spec)
        else:
            _check_declared(spec, prep)
    model = load(spec, ctx.device, prep)
    ctx.model = ctx.base_model = model
    ctx.labeler = None
    return _model_info(model)


def _model_info(model: Any) -> dict:
    meta = model.meta
    return {"description": str(meta.get("description") or f"{meta.get('method')} on {meta.get('backbone')}"),
            "method": model.learner.name, "scores": tuple(model.learner.scores),
            "input": input_text(model.preprocessing)}


def input_text(prep: Any) -> str:
    """How images reach the model, in words (the model's tooltip; ONNX files: what Labeling >
    Model > ONNX Input Settings changes)."""
    h, w = prep.size
    fit = "shorter side scaled, centre cropped" if prep.resize == "shorter_side_center_crop" else "stretched"
    numbers = lambda xs: ", ".join(f"{x:.3g}" for x in xs)  # noqa: E731
    return (f"Images go in as {w} × {h} px {'colour' if prep.channels == 3 else 'grayscale'} ({fit}"
            f"{', inverted' if prep.invert else ''}), normalised with mean ({numbers(prep.mean)}) and std "
            f"({numbers(prep.std)})")


def use_method(ctx: EngineContext, h: JobHandle, name: str) -> dict:
    """Label with method ``name`` on the loaded model (engine.method_choice); the
    labeler is rebuilt, and relabeling reuses the cached embeddings."""
    from engine.method_choice import with_method
    if ctx.base_model is None:
        raise FewShotError("no model is loaded: choose one in Labeling > Model")
    ctx.model = with_method(ctx.base_model, name)
    ctx.labeler = None
    return _model_info(ctx.model)


def open_project(ctx: EngineContext, h: JobHandle, path: str, create: bool,
                 use_empty: bool = False) -> tuple[Any, str | None]:
    """The project, and the model it was last labeled with (None for a new one); for an
    empty file that the person has not agreed to use, ``(None, path)`` (the window asks)."""
    from engine.errors import EmptyProjectFileError
    from engine.labeling.store import Project
    try:
        project = Project.create(path) if create else Project.open(path, use_empty=use_empty)
    except EmptyProjectFileError:
        return None, path
    close_project(ctx, h)
    ctx.project = project
    current = project.current_model()
    return project, (current[1] if current is not None else None)


def close_project(ctx: EngineContext, h: JobHandle) -> None:
    if ctx.project is not None:
        ctx.project.close()
    ctx.project = None
    ctx.labeler = None


def project_of(ctx: EngineContext) -> Any:
    if ctx.project is None:
        raise FewShotError("no project is open: create or open one first (File menu)")
    return ctx.project


def _labeler(ctx: EngineContext) -> Any:
    """One Labeler per (project, model): it keeps the embedding table in memory, so
    re-adapting after a correction costs milliseconds instead of a reload."""
    from engine.labeling.labeler import Labeler
    project = project_of(ctx)
    if ctx.model is None:
        raise FewShotError("no model is loaded: choose one in Labeling > Model")
    lab = ctx.labeler
    if lab is None or lab.project is not project or lab.model is not ctx.model:
        lab = Labeler(project, ctx.model)
        ctx.labeler = lab
    return lab


def add_images(ctx: EngineContext, h: JobHandle, folder: str) -> tuple[Any, bool]:
    """Register a folder's images; also says whether there are examples to label them with."""
    project = project_of(ctx)
    report = project.add_images([folder], recursive=True,
                                progress=lambda done, total: h.report("reading files", done, total))
    return report, bool(project.examples())


def label(ctx: EngineContext, h: JobHandle) -> Any:
    return _labeler(ctx).label(progress=_progress(h), cancel=h.cancel)


def label_and_count(ctx: EngineContext, h: JobHandle) -> dict:
    """Label, then the project's counts by status: what the window reports is what the
    status bar and the grid show, not the number of predictions written (which counts
    the examples and confirmed images too)."""
    summary = label(ctx, h)
    project = project_of(ctx)
    counts = {s: project.count(status=s) for s in ("predicted", "confirmed", "error", "unlabeled")}
    return {"summary": summary, "counts": counts}


def _progress(h: JobHandle):
    def callback(p: Any) -> None:
        h.progress(p)
        if p.done:
            h.batch_done()
    return callback


def refresh(ctx: EngineContext, h: JobHandle) -> Any:
    """Re-adapt on the current examples and refresh every prediction.

    Head-only models do it from cached embeddings, and hand the predictions to the window
    (fewshot_gui/fresh_view.py) before writing them. Others first write provisional
    predictions from the cached embeddings of their meta-learned start (shown at once:
    the grid re-reads), then label every image again with the adapted network, which
    a newer correction cancels (docs/ARCHITECTURE.md). With no
    usable example left (all undone), predictions stay as they were: there is
    nothing to adapt on, and a refresh must not throw the user's view away.
    """
    project = project_of(ctx)
    if not project.examples():
        return None
    lab = _labeler(ctx)
    if not lab.head_only:
        if lab.provisional_refresh() is not None:
            h.batch_done()
        return lab.label(progress=_progress(h), cancel=h.cancel)
    if not lab.refresh_covers_predictions():  # a label run embeds what the cache lacks, then predicts
        return lab.label(progress=_progress(h), cancel=h.cancel)
    return lab.refresh(on_computed=h.publish)  # shown at once; the write follows


def stale_predictions(ctx: EngineContext, h: JobHandle) -> bool:
    """Whether the project's predictions were adapted on other examples than it holds (the
    app stopped between a correction and its refresh's write): the window then refreshes them."""
    if ctx.project is None or ctx.model is None:
        return False
    return _labeler(ctx).predictions_behind()


def warm_up(ctx: EngineContext, h: JobHandle) -> bool:
    """Ready the next correction's refresh: the project's cached embeddings in memory, every
    image scored once (engine Labeler.warm). Without it a person's first correction in a
    session waited for that: 200 ms at 10,000 images, 1.6 s at 100,000."""
    if ctx.project is None or ctx.model is None:
        return False
    return _labeler(ctx).warm()


def add_examples(ctx: EngineContext, h: JobHandle, class_id: int, items: list, auto_model: bool = False) -> dict:
    """Make files, folders or project images examples, then re-adapt (:func:`_readapt`).
    Returns ``{"report", "model"}``; ``model`` is the info of a model switched to (see
    :func:`_suit_model`), else None."""
    project = project_of(ctx)
    first = not project.examples()
    report = project.add_examples(class_id, items)
    model = _suit_model(ctx, h, [project.image(i).path for i in report.added]) if auto_model and first else None
    _readapt(ctx, h, bool(report.added))
    return {"report": report, "model": model}


def import_examples(ctx: EngineContext, h: JobHandle, folder: str, auto_model: bool = False) -> dict:
    """A folder of class sub-folders as examples (engine.labeling.folder_import), then re-adapt."""
    from engine.labeling.folder_import import import_example_folders
    project = project_of(ctx)
    first = not project.examples()
    report = import_example_folders(project, folder)
    paths = [project.image(i).path for i, _ in project.examples()][:50]
    model = _suit_model(ctx, h, paths) if auto_model and first else None
    _readapt(ctx, h, report.total > 0)
    return {"report": report, "model": model}


def _readapt(ctx: EngineContext, h: JobHandle, changed: bool) -> None:
    """A project's first examples start its first label run; later ones refresh, which
    decides itself whether it needs a label run (:func:`refresh`). Images a cancelled run
    left unlabeled stay so until the person labels again: a cancel holds."""
    if changed and ctx.model is not None:
        if project_of(ctx).current_model() is None:
            label(ctx, h)
        else:
            refresh(ctx, h)


def _suit_model(ctx: EngineContext, h: JobHandle, paths: list[str]) -> dict | None:
    """For a project's first examples: switch to the bundled model that suits them (the
    omniglot model for small grayscale images, else photos) unless it is loaded already.
    Returns the new model's info, or None."""
    from engine.labeling.folder_import import suggest_model
    wanted = suggest_model(paths)
    if ctx.model is not None and ctx.model.name == wanted:
        return None
    info = load_model(ctx, h, wanted)
    return {**info, "spec": wanted}


def class_folders(ctx: EngineContext, h: JobHandle, folder: str) -> list[str]:
    """The sub-folders of ``folder`` that hold images (candidates for classes)."""
    from engine.labeling.folder_import import class_folders as find
    return [str(d) for d in find(folder)]


def remove_images(ctx: EngineContext, h: JobHandle, image_ids: list[int]) -> dict:
    """Remove images from the project (files stay); says whether examples went with them."""
    project = project_of(ctx)
    examples = {i for i, _ in project.examples()}
    removed = project.remove_images(image_ids)
    return {"removed": removed, "examples": bool(examples & set(image_ids))}


def set_labels(ctx: EngineContext, h: JobHandle, image_ids: list[int], class_id: int | None) -> bool:
    """Confirm images; returns whether predictions need refreshing (some were corrections).

    Only database writes: this runs as a quick job, possibly between the batches of a
    label run, so the re-adaptation is left to a job of its own after it."""
    project = project_of(ctx)
    corrections = []
    for image_id in image_ids:
        rec = project.image(image_id)
        if class_id is not None and rec.predicted_class_id is not None and rec.predicted_class_id != class_id:
            corrections.append(image_id)  # the model was wrong here: teach it (one undo step for all)
        else:
            project.set_label(image_id, class_id)
    if corrections:
        project.add_examples(class_id, corrections)
    return bool(corrections)


def accept_prediction(ctx: EngineContext, h: JobHandle, image_id: int) -> None:
    """Confirm the model's prediction as the label (read here, so the decision uses the
    prediction as the database holds it, not as the screen showed it a moment ago)."""
    project = project_of(ctx)
    rec = project.image(image_id)
    if rec.predicted_class_id is None:
        raise FewShotError(f"{rec.path} has no prediction to accept yet; assign a class with its number key")
    project.set_label(image_id, rec.predicted_class_id)


def delete_class(ctx: EngineContext, h: JobHandle, class_id: int) -> None:
    project = project_of(ctx)
    project.delete_class(class_id)
    if ctx.model is not None and project.current_model() is not None:
        refresh(ctx, h)


def review_order(ctx: EngineContext, h: JobHandle, mode: str) -> list[int]:
    from engine.labeling.review import review_order as order
    return order(project_of(ctx), mode)


def export_labels(ctx: EngineContext, h: JobHandle, kind: str, path: str, include_predictions: bool = False) -> Any:
    """``include_predictions`` (folders): every predicted image goes into its predicted
    class's folder too, as ``fewshot label --export-folder`` does; else confirmed ones only."""
    from engine.export import labels
    project = project_of(ctx)
    if kind == "csv":
        return labels.export_csv(project, path, overwrite=True)  # the save dialog asked before replacing
    if kind == "json":
        return labels.export_json(project, path, overwrite=True)
    if kind == "folders":
        return labels.export_folders(project, path, include_predictions=include_predictions, min_confidence=0.0,
                                     progress=lambda done, total: h.report("copying", done, total))
    raise FewShotError(f"unknown export kind {kind!r}; use csv, json or folders")


def _preprocessing(d: dict) -> Any:
    from engine.data.preprocessing import Preprocessing
    try:
        return Preprocessing.from_dict(d)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FewShotError(f"the input size and normalisation given are incomplete ({e}); "
                           "fill in every field of the dialog") from None


def _require_remembered(path: str) -> None:
    """The engine's own message for an unknown ONNX file is about the command line; here
    the way to fix it is the dialog."""
    from engine.models.onnx_features import remembered_preprocessing
    _check_onnx_file(path)
    if remembered_preprocessing(path) is None:
        raise FewShotError(f"{path}: the app does not know this ONNX model's input size and normalisation yet; "
                           "choose it with Labeling > Model > ONNX Feature Extractor\u2026 and fill them in once")


def _check_onnx_file(path: str) -> None:
    from pathlib import Path
    if not Path(path).is_file():
        raise FewShotError(f"ONNX file not found: {path}; it may have been moved or deleted, choose it again")


def onnx_preprocessing(ctx: EngineContext, h: JobHandle, path: str) -> tuple[dict | None, dict | None, list]:
    """(what was remembered for this ONNX file, or None; what its header suggests, only
    when nothing was remembered; its declared input shape, ints where fixed) as plain
    data: the main thread never sees engine types."""
    from engine.models.onnx_features import prepare, remembered_preprocessing, suggested_preprocessing
    _check_onnx_file(path)
    # Reads, rewrites and test-runs the file (cached by content): a file that is no usable
    # image model fails here, before the person is asked anything about it.
    shape = list(prepare(path).input_shape)
    remembered = remembered_preprocessing(path)
    if remembered is not None:
        return remembered.to_dict(), None, shape
    return None, suggested_preprocessing(path).to_dict(), shape


def _check_declared(path: str, prep: Any) -> None:
    """Refuse a size or channel count the file's fixed input contradicts: the engine would
    remember it, and every later run would fail inside onnxruntime."""
    from engine.models.onnx_features import prepare
    _check_onnx_file(path)
    shape = prepare(path).input_shape
    if len(shape) != 4:
        return
    given = (("channels", prep.channels), ("height", prep.size[0]), ("width", prep.size[1]))
    wrong = [f"{what} {value} (the file says {fixed})" for (what, value), fixed in zip(given, shape[1:])
             if isinstance(fixed, int) and fixed > 0 and value != fixed]
    if wrong:
        raise FewShotError(f"{path} takes input of a fixed shape {shape}, but the dialog gave " + ", ".join(wrong)
                           + "; choose the model again and use the file's values")


def restore_method(ctx: EngineContext, h: JobHandle) -> dict | None:
    """After a project opens: label with the head it was labeled with (bayes-proto, say),
    when the loaded model is the one it was labeled with and offers it. Returns the
    model's info when it switched, else None."""
    from engine.method_choice import offered_methods, with_method
    current = project_of(ctx).current_model()
    if current is None or ctx.base_model is None or current[1] != ctx.base_model.name:
        return None
    method = current[2].get("method")
    offered = offered_methods(ctx.base_model)
    if not method or method == ctx.model.meta["method"] or method not in offered or offered[method] is not None:
        return None
    ctx.model = with_method(ctx.base_model, method)
    ctx.labeler = None
    return _model_info(ctx.model)


def methods(ctx: EngineContext, h: JobHandle) -> tuple[list[tuple[str, str, str | None]], str | None]:
    """Every registered method as (key, display name, why the loaded model cannot use it
    or None), and the method labeling now."""
    from engine.method_choice import offered_methods
    from engine.methods.registry import METHODS
    if ctx.base_model is None:
        return [(key, cls.__name__, "load a model first") for key, cls in sorted(METHODS.items())], None
    offered = offered_methods(ctx.base_model)
    active = str(ctx.model.meta.get("method"))
    return [(key, cls.__name__, offered.get(key)) for key, cls in sorted(METHODS.items())], active


def export_model(ctx: EngineContext, h: JobHandle, path: str, model_spec: str, bundle: bool, force: bool) -> Any:
    """The project's examples adapted by ``model_spec``, written as ONNX (or a bundle zip)
    after the engine checked it against PyTorch; ``force`` only when the user agreed to
    replace the file."""
    from engine.export.onnx_model import export_from_project
    return export_from_project(project_of(ctx), path, model_spec=model_spec, bundle=bundle, force=force,
                               cancel=h.cancel)
