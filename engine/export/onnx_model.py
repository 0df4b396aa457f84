"""Export a project's adapted model to ONNX: backbone plus adapted head in one graph.

The graph maps ``pixels`` (float32 NCHW in the model's normalisation, any batch
size) to ``probs`` (N, C) and the method's exported uncertainty scores (N) each
(ProtoNet: ``entropy`` and ``ood_score``; the list is engine.methods.uncertainty's),
the same numbers the labeler computes (:meth:`Predictor.as_module` bakes the
adapted weights -- ProtoNet's prototypes -- into the graph as constants). The model's
``metadata_props`` carry the contract other programs need (docs/EXPORT.md):
``class_names`` and ``preprocessing`` as JSON, ``method``, ``source_model``,
``project_version`` (the fingerprint of the examples it adapted on) and
``exported_at``.

Every export is checked before it is written: ``onnx.checker`` must pass, and
onnxruntime must give the probabilities PyTorch gives on the project's own
example images (decoded by the engine's preprocessing) within
:data:`PARITY_TOLERANCE`. The file is written beside the target and renamed at
the end, so a failed export leaves nothing behind, and an existing file is never
replaced unless ``force``.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.errors import ExportError, ImageDecodeError
from engine.export.bundle import write_bundle
from engine.export.labels import publish, temp_beside
from engine.paths import export_target

if TYPE_CHECKING:
    import onnx

    from engine.labeling.labeler import AdaptedTask
    from engine.labeling.store import Project
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)

#: ONNX opset of the exported graph (the task asks for 17 or newer; 18 is what the
#: dynamo exporter writes natively, so no version conversion step can alter the graph).
OPSET = 18
INPUT_NAME = "pixels"
PROBS = "probs"
#: Largest |p_onnx - p_torch| over the parity images that still passes.
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 32
#: Version of the metadata contract below, for programs that read it. 2 added the optional
#: outputs ``mutual_info`` and ``aleatoric`` (Bayesian heads); version-1 files read the same.
CONTRACT_FORMAT = "2"


@dataclass
class ExportReport:
    """What :func:`export_project` wrote and how well the ONNX model matched PyTorch."""

    path: Path
    classes: list[str]
    parity_max_abs_diff: float
    provider: str
    seconds: float
    model: str = ""
    method: str = ""
    parity_images: int = 0
    bundle: bool = False
    opset: int = OPSET
    project_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "classes": self.classes, "model": self.model, "method": self.method,
                "bundle": self.bundle, "opset": self.opset, "project_version": self.project_version,
                "parity_max_abs_diff": self.parity_max_abs_diff, "parity_images": self.parity_images,
                "provider": self.provider, "seconds": round(self.seconds, 3)}


def check_target(path: Path, force: bool) -> None:
    """Refuse a target that cannot be written, or that exists (unless ``force``)."""
    if path.is_dir():
        raise ExportError(f"--out {path} is a folder; give a file name such as {path / 'model.onnx'}")
    if (path.exists() or path.is_symlink()) and not force:
        raise ExportError(f"{path} already exists; choose another name, or pass --force to replace it")
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise ExportError(f"cannot write {path}: its folder {parent} {what}; create the folder or choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {path}: the folder {parent} is not writable by this user; "
                          "choose another place")


def export_project(project_path: str | Path, out: str | Path, *, model_spec: str | None = None,
                   method: str | None = None,
                   bundle: bool = False, force: bool = False) -> ExportReport:
    """Open the project at ``project_path`` and export its adapted model to ``out``
    (see :func:`export_from_project`). Raises ProjectError when there is no such project."""
    from engine.labeling.store import Project

    target = export_target(out, bundle)
    check_target(target, force)  # before anything slow
    with Project.open(project_path) as project:
        return export_from_project(project, target, model_spec=model_spec, method=method, bundle=bundle,
                                   force=force)


class ExportCancelledError(ExportError):
    """The person cancelled the export; nothing was written."""


def export_from_project(project: "Project", out: str | Path, *, model_spec: str | None = None,
                        method: str | None = None,
                        bundle: bool = False, force: bool = False, cancel: Any = None) -> ExportReport:
    """Adapt the model (the project's current one, or ``model_spec``) on the project's
    examples, with ``method`` (default: the head the project was labeled with, for its
    current model; else the model's own method), and export it as ONNX (``bundle``: a zip with the contract as files).
    For callers that hold the project open already (the GUI's worker). ``cancel``: a
    CancelToken checked between the steps (ExportCancelledError; nothing is written)."""
    def check_cancel() -> None:
        if cancel is not None and cancel.cancelled:
            raise ExportCancelledError("the export was cancelled; nothing was written")
    from engine.labeling.labeler import Labeler
    from engine.method_choice import with_method
    from engine.model_store import load_model

    t0 = time.perf_counter()
    target = export_target(out, bundle)
    check_target(target, force)
    check_examples(project)
    spec = model_spec
    if spec is None:
        current = project.current_model()
        if current is None:
            raise ExportError("the project has no model yet: label it first (fewshot label, or Label in the app), "
                              "or pass --model (omniglot, photos or a folder made by 'fewshot train')")
        spec = current[1]
    model = load_model(spec, "cpu")
    if method is None and spec == current_spec(project):
        # The head the project was labeled with (engine.method_choice), not only its model.
        method = (project.current_model() or (None, None, {}))[2].get("method")
    model = with_method(model, method)
    check_cancel()
    task = Labeler(project, model).adapt()
    check_cancel()
    names_by_id = {c.id: c.name for c in project.classes()}
    if task.skipped_classes:
        raise ExportError("cannot export: no example of " + ", ".join(repr(n) for n in task.skipped_classes)
                          + " could be read; add a readable example image to each class")
    class_names = [names_by_id[cid] for cid in task.class_ids]
    keep = set(task.class_ids)
    parity_paths = [project.image(image_id).path for image_id, cid in project.examples() if cid in keep]

    proto, metadata = build_onnx(model, task, class_names)
    model_bytes = proto.SerializeToString()
    check_cancel()
    diff, provider, used = check_parity(model_bytes, model, task, parity_paths)
    check_cancel()
    if diff > PARITY_TOLERANCE:
        raise ExportError(f"the exported model does not match PyTorch: probabilities differ by up to {diff:.3g} "
                          f"(over {PARITY_TOLERANCE:g}) on {used} example images with onnxruntime {provider}; "
                          "nothing was written. Please report this with the model you used")
    write_output(target, force, model_bytes, class_names, model.preprocessing.to_dict(), metadata, bundle)
    seconds = time.perf_counter() - t0
    log.info("exported %s (%d classes) in %.1f s; parity %.3g on %d images (%s)", target, len(class_names),
             seconds, diff, used, provider)
    return ExportReport(target, class_names, diff, provider, seconds, model=spec, method=metadata["method"],
                        parity_images=used, bundle=bundle, project_version=task.fingerprint, metadata=metadata)


def current_spec(project: "Project") -> str | None:
    current = project.current_model()
    return current[1] if current is not None else None


def check_examples(project: "Project") -> None:
    """Refuse a project with no classes, no examples, or a class without an example."""
    classes = project.classes()
    if not classes:
        raise ExportError("the project has no classes: add classes and a few example images of each, then export")
    pairs = project.examples()
    if not pairs:
        raise ExportError("the project has no example images: add at least one example to each class, then export")
    with_examples = {cid for _, cid in pairs}
    empty = [c.name for c in classes if c.id not in with_examples]
    if empty:
        raise ExportError("cannot export: class " + ", ".join(repr(n) for n in empty)
                          + (" has" if len(empty) == 1 else " have")
                          + " no example images; add at least one example to each class (or delete the class)")


def build_onnx(model: "LoadedModel", task: "AdaptedTask", class_names: list[str]) -> tuple["onnx.ModelProto", dict]:
    """The adapted model as a checked ``ModelProto`` with the contract in its metadata."""
    import onnx

    from engine.models.onnx_features import OnnxFeatures
    if isinstance(model.learner.backbone, OnnxFeatures):
        proto, outputs = _feature_graph_with_head(model.learner.backbone, task)
    elif not model.learner.adapts_backbone and _has_head(task.predictor):
        proto, outputs = _cached_backbone_with_head(model, task)
    else:
        proto, outputs = _traced(model, task)
    prep = model.preprocessing
    metadata = {
        "class_names": json.dumps(class_names, ensure_ascii=False),
        "preprocessing": json.dumps(prep.to_dict()),
        "method": str(model.meta.get("method", getattr(model.learner, "name", ""))),
        "method_config": json.dumps(model.meta.get("method_config", {})),
        "source_model": model.name,
        "backbone": str(model.meta.get("backbone", "")),
        "project_version": task.fingerprint,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "outputs": json.dumps(list(outputs)),
        "fewshot_contract": CONTRACT_FORMAT,
        "fewshot_version": _engine_version(),
    }
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"fewshot-labeler export: {len(class_names)} classes; input 'pixels' float32 NCHW "
                        f"{prep.channels}x{prep.size[0]}x{prep.size[1]}; outputs {', '.join(outputs)}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX model failed onnx.checker ({e}); please report it") from None
    return proto, metadata


def _traced(model: "LoadedModel", task: "AdaptedTask") -> tuple["onnx.ModelProto", tuple[str, ...]]:
    """The adapted predictor as one PyTorch module, exported by the dynamo exporter."""
    try:
        module = task.predictor.as_module(model.learner.backbone)
    except NotImplementedError as e:
        raise ExportError(f"this model cannot be exported to ONNX yet: {e}") from None
    prep = model.preprocessing
    example = torch.zeros((2, prep.channels, *prep.size), dtype=torch.float32)
    return export_module(module.eval(), example, INPUT_NAME), tuple(module.output_names)


def _has_head(predictor: Any) -> bool:
    try:
        predictor.head_module()
        return True
    except NotImplementedError:
        return False


def _cached_backbone_with_head(model: "LoadedModel", task: "AdaptedTask") -> tuple["onnx.ModelProto", tuple[str, ...]]:
    """The backbone labeling exported and checked already (the user cache; exported now if
    missing) with the adapted head, traced on its own, joined after it: seconds faster
    than tracing the backbone again, with the same parity check after."""
    import onnx

    from engine.export.onnx_graph import attach_head
    from engine.labeling.runners import onnx_backbone_path
    try:
        path = onnx_backbone_path(model)
    except Exception as e:  # noqa: BLE001 - an export that fails here is traced whole instead
        log.info("no cached backbone export for %s (%s); tracing the whole model", model.name, e)
        return _traced(model, task)
    head = task.predictor.head_module().eval()
    prep = model.preprocessing
    dim = int(model.learner.embed(torch.zeros((1, prep.channels, *prep.size))).shape[1])
    head_proto = export_module(head, torch.zeros((2, dim), dtype=torch.float32), "features", small=True)
    outputs = tuple(head.output_names)
    return attach_head(onnx.load(str(path)), "embedding", head_proto, "features", outputs), outputs


def export_module(module: torch.nn.Module, example: torch.Tensor, input_name: str,
                  small: bool = False) -> "onnx.ModelProto":
    """``module`` (one tensor input, dynamic batch; outputs ``module.output_names``) as ONNX.

    ``small``: a head of a few ops, exported by PyTorch's TorchScript exporter (0.04 s
    against 0.8-2.8 s for the dynamo exporter); it falls back to dynamo where that
    exporter is gone. The parity check that follows every export holds either way."""
    if small:
        try:
            return _export_torchscript(module, example, input_name)
        except Exception as e:  # noqa: BLE001 - not available or failed: the dynamo exporter below
            log.debug("TorchScript export of %s failed (%s); using dynamo", type(module).__name__, e)
    batch = torch.export.Dim("batch", min=1)
    arg = next(iter(inspect.signature(module.forward).parameters))
    chatter = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(chatter):
        warnings.simplefilter("always")
        try:
            program = torch.onnx.export(module, (example,), None, input_names=[input_name],
                                        output_names=list(module.output_names),
                                        dynamic_shapes={arg: {0: batch}}, opset_version=OPSET,
                                        dynamo=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; all mean "cannot export"
            raise ExportError(f"PyTorch could not export this model to ONNX ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); please report it") from e
    for w in caught:
        log.debug("onnx export: %s", w.message)
    if chatter.getvalue().strip():
        log.debug("onnx export said: %s", chatter.getvalue().strip())
    return program.model_proto


def _export_torchscript(module: torch.nn.Module, example: torch.Tensor, input_name: str) -> "onnx.ModelProto":
    import onnx
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(module, (example,), buf, input_names=[input_name], output_names=list(module.output_names),
                          dynamic_axes={input_name: {0: "batch"}, **{n: {0: "batch"} for n in module.output_names}},
                          opset_version=OPSET, dynamo=False)
    return onnx.load_model_from_string(buf.getvalue())


def _feature_graph_with_head(backbone: Any, task: "AdaptedTask") -> tuple["onnx.ModelProto", tuple[str, ...]]:
    """An ONNX feature extractor's graph with the adapted head (traced on its own) joined after it."""
    import onnx

    from engine.export.onnx_graph import attach_head, rename_tensor
    from engine.models.onnx_features import FEATURES
    try:
        head = task.predictor.head_module()
    except NotImplementedError as e:
        raise ExportError(f"{type(task.predictor).__name__} heads on ONNX feature extractors cannot be exported: "
                          f"{e}") from None
    dim = backbone.features.dim
    head_proto = export_module(head.eval(), torch.zeros((2, dim), dtype=torch.float32), "features", small=True)
    features = onnx.load(str(backbone.features.path))
    rename_tensor(features, backbone.features.input_name, INPUT_NAME)
    outputs = tuple(head.output_names)
    return attach_head(features, FEATURES, head_proto, "features", outputs), outputs


def check_parity(model_bytes: bytes, model: "LoadedModel", task: "AdaptedTask",
                 paths: list[str]) -> tuple[float, str, int]:
    """(max |p_onnx - p_torch|, onnxruntime provider, images compared) over ``paths``,
    decoded and normalized by the engine's own preprocessing. The first image runs
    alone (batch 1), the rest in batches: the dynamic batch is exercised as well.
    Every other output must match the predictor's score of the same name too (within
    the tolerance, relative to the score's size); else the export fails."""
    from engine.data.transforms import load_uint8, normalize
    from engine.onnx_session import make_session

    pixels = []
    for path in paths:
        try:
            pixels.append(load_uint8(path, model.preprocessing))
        except ImageDecodeError as e:
            log.warning("parity check skips %s: %s", path, e.reason)
    if not pixels:
        raise ExportError("cannot check the export: none of the example images can be read any more "
                          "(moved or deleted?); rescan the project's folders and export again")
    x = normalize(torch.stack(pixels), model.preprocessing)
    session, provider = make_session(model_bytes)
    diff = 0.0
    worst: tuple[float, str] = (0.0, "")  # the largest relative difference of a score output, and its name
    bounds = [(0, 1)] + [(s, min(s + PARITY_BATCH, len(x))) for s in range(1, len(x), PARITY_BATCH)]
    names = [o.name for o in session.get_outputs()]
    for start, stop in bounds:
        chunk = x[start:stop]
        with torch.inference_mode():
            pred = task.predictor.predict(chunk)
        outputs = dict(zip(names, session.run(names, {INPUT_NAME: chunk.numpy()})))
        ref = pred.probs.float().cpu().numpy()
        got = outputs[PROBS]
        if got.shape != ref.shape:
            raise ExportError(f"the exported model gives probabilities shaped {got.shape} for a batch of "
                              f"{len(chunk)}, PyTorch {ref.shape}; please report it")
        diff = max(diff, float(np.abs(got - ref).max()))
        for name in names[1:]:
            want = pred.score(name)
            score_diff = (float("inf") if want is None or outputs[name].shape != tuple(want.shape) else
                          float((np.abs(outputs[name] - want.float().cpu().numpy())
                                 / np.maximum(1.0, np.abs(want.float().cpu().numpy()))).max()))
            worst = max(worst, (score_diff, name))
    if diff <= PARITY_TOLERANCE < worst[0]:
        raise ExportError(f"the exported model's {worst[1]} differs from PyTorch's by {worst[0]:.3g} "
                          f"(relative; over {PARITY_TOLERANCE:g}); nothing was written. Please report this")
    return diff, provider, len(x)


def write_output(target: Path, force: bool, model_bytes: bytes, class_names: list[str],
                 preprocessing: dict[str, Any], metadata: dict[str, str], bundle: bool) -> None:
    """Write beside ``target`` and rename into place at the end (never a half file)."""
    tmp = temp_beside(target)
    try:
        if bundle:
            write_bundle(tmp, model_bytes, class_names, preprocessing, metadata)
        else:
            with open(tmp, "xb") as fh:
                fh.write(model_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        if force:
            os.replace(tmp, target)
        elif not publish(tmp, target):
            raise ExportError(f"{target} was created by something else during the export; choose another name, "
                              "or pass --force to replace it")
    except OSError as e:
        raise ExportError(f"cannot write {target} ({e.strerror or e}); check the folder's permissions "
                          "and free space") from None
    finally:
        tmp.unlink(missing_ok=True)


def _engine_version() -> str:
    from engine.version import __version__
    return str(__version__)
