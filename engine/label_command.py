"""``fewshot label``: label a folder of images from a folder of examples, headless.

    fewshot label --project P.fewshot --examples DIR --images DIR [--model MODEL] [--method NAME]
        [--export-csv FILE] [--export-folder DIR --link {copy,hardlink,symlink}] [--json]

``--examples`` holds one sub-folder per class (its name is the class name) with
a few example images; ``--images`` is the folder to label. The project is
created, or added to when it exists. Bad files are listed with their reasons and
do not fail the run: the exit status is 0 when labeling finished, 130 when it
was interrupted (Ctrl+C or SIGTERM; what was done is kept and the next run
resumes), 2 for bad input (the ``error:`` line says what to fix).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import FewShotError
from engine.paths import check_new_output

if TYPE_CHECKING:
    # Importing anything under engine.labeling loads torch (through the store's scanner);
    # the parser must not, so that `fewshot --help` answers at once.
    from engine.labeling.progress import Progress

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERRUPTED = 130
LINK_CHOICES = ("copy", "hardlink", "symlink")
ERROR_PAGE = 1000


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="project file (.fewshot); created when it does not exist")
    p.add_argument("--examples", required=True,
                   help="folder with one sub-folder of example images per class (the sub-folder name is the class)")
    p.add_argument("--images", required=True, help="folder of images to label (searched recursively)")
    p.add_argument("--model", default="photos",
                   help="checkpoint folder, or a bundled name: photos (default; any photos), omniglot (characters)")
    p.add_argument("--method", default=None,
                   help="how to learn from the examples: the model's own method (default), or a head that works on "
                        "any model: protonet, bayes-proto (Bayesian: tells ambiguous images from ones unlike the "
                        "examples)")
    p.add_argument("--export-csv", metavar="FILE", help="write every image's label to this CSV file (must not exist)")
    p.add_argument("--export-folder", metavar="DIR",
                   help="write a folder per class holding its images (existing files are never overwritten)")
    p.add_argument("--link", choices=LINK_CHOICES, default=None,
                   help="how --export-folder places images: copy (default), hardlink or symlink")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="--export-folder: export predicted images at least this confident (confirmed ones always)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: chosen for the model and device, halved on out-of-memory)")
    p.add_argument("--onnx-preprocessing", metavar="JSON", default=None,
                   help="for --model FILE.onnx: its input size and normalisation, given once and remembered, e.g. "
                        "'{\"size\": [224, 224], \"channels\": 3, \"mean\": [0.485, 0.456, 0.406], "
                        "\"std\": [0.229, 0.224, 0.225], \"resize\": \"shorter_side_center_crop\"}'")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="what runs the backbone on the CPU: auto picks the faster of PyTorch and onnxruntime "
                        "for this model and machine (measured once per run)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@dataclass
class Inputs:
    project: Path
    examples: Path
    class_dirs: list[Path]
    images: Path
    export_csv: Path | None
    export_folder: Path | None
    link: str


def check_inputs(args: argparse.Namespace) -> Inputs:
    """Refuse bad input before anything slow happens (or anything is written)."""
    examples = Path(args.examples)
    if not examples.is_dir():
        what = "is not a folder" if examples.exists() else "does not exist"
        raise FewShotError(f"--examples {examples} {what}; give a folder with one sub-folder of example images "
                           "per class")
    class_dirs = sorted((d for d in examples.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name.lower())
    if not class_dirs:
        raise FewShotError(f"--examples {examples} has no class sub-folders; put each class's examples in a "
                           f"sub-folder named after the class (e.g. {examples / 'cats' / 'cat1.jpg'})")
    images = Path(args.images)
    if not images.is_dir():
        what = "is not a folder" if images.exists() else "does not exist"
        raise FewShotError(f"--images {images} {what}; give the folder of images to label")
    export_csv = Path(args.export_csv) if args.export_csv else None
    if export_csv is not None:
        check_new_output(export_csv, "--export-csv")
    export_folder = Path(args.export_folder) if args.export_folder else None
    if args.link is not None and export_folder is None:
        raise FewShotError("--link only applies to --export-folder; give --export-folder DIR too")
    if export_folder is not None and export_folder.exists() and not export_folder.is_dir():
        raise FewShotError(f"--export-folder {export_folder} is a file; give a folder")
    if args.batch_size is not None and args.batch_size < 1:
        raise FewShotError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise FewShotError(f"--min-confidence must be between 0 and 1 (got {args.min_confidence})")
    return Inputs(Path(args.project), examples, class_dirs, images, export_csv, export_folder, args.link or "copy")


def onnx_preprocessing(args: argparse.Namespace) -> Any:
    """--onnx-preprocessing parsed into a Preprocessing (None when not given)."""
    if args.onnx_preprocessing is None:
        return None
    from engine.data.preprocessing import Preprocessing
    if not args.model.lower().endswith(".onnx"):
        raise FewShotError("--onnx-preprocessing only applies to --model FILE.onnx")
    try:
        return Preprocessing.from_dict(json.loads(args.onnx_preprocessing))
    except (ValueError, KeyError, TypeError) as e:
        raise FewShotError(f"--onnx-preprocessing must be a JSON object with size [H, W], channels, mean and std "
                           f"({type(e).__name__}: {e})") from None


class ProgressBars:
    """One tqdm bar per stage on stderr (scanning, embedding examples, labeling ...)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage: str | None = None

    def _switch(self, stage: str, total: int, unit: str):
        from tqdm import tqdm
        if self._stage != stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, disable=not self.enabled,
                             dynamic_ncols=True)
        return self._bar

    def scan(self, done: int, total: int) -> None:
        bar = self._switch("scanning", total, "file")
        bar.total = total
        bar.update(done - bar.n)

    def label(self, p: "Progress") -> None:
        if p.busy:  # a step with nothing to count (preparing onnxruntime): say what it is
            if self.enabled and p.stage != self._stage:
                self.close()
                self._stage = p.stage
                print(f"{p.stage}\u2026", file=sys.stderr, flush=True)
            return
        if p.total == 0:  # a stage with no work this time
            return
        bar = self._switch(p.stage, p.total, "img")
        bar.update(p.done - bar.n)
        if p.eta_s is not None:
            bar.set_postfix_str(f"{p.images_per_s:.0f} img/s", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def error_images(project) -> list[tuple[str, str]]:
    """(path, reason) of every unusable image in the project, by name."""
    out: list[tuple[str, str]] = []
    while True:
        page = project.query(status="error", sort="name", offset=len(out), limit=ERROR_PAGE)
        out += [(r.path, r.error or "unusable") for r in page]
        if len(page) < ERROR_PAGE:
            return out


def class_counts(project) -> dict[str, dict[str, int]]:
    counts = {}
    for c in project.classes():
        confirmed = project.count(class_id=c.id, status="confirmed")
        predicted = project.count(class_id=c.id, status="predicted")
        counts[c.name] = {"confirmed": confirmed, "predicted": predicted, "total": confirmed + predicted}
    return counts


def run_label(args: argparse.Namespace) -> int:
    """The whole command; returns the exit status (bad input raises FewShotError)."""
    inputs = check_inputs(args)
    from engine.export.labels import ExportIncompleteError, export_csv, export_folders
    from engine.labeling.folder_import import import_example_folders
    from engine.labeling.labeler import Labeler
    from engine.labeling.progress import CancelToken
    from engine.labeling.store import Project
    from engine.method_choice import with_method
    from engine.model_store import load_model
    from engine.runtime import describe_device, pick_device

    device = pick_device(args.device)
    prep = onnx_preprocessing(args)
    # An existing project is opened (and its lock taken) before the model loads, which
    # takes seconds: a project open elsewhere is refused at once. A new one is created
    # only once the model has loaded, so a bad --model leaves no empty project behind.
    if Project.exists(inputs.project):
        project = Project.open(inputs.project)
        try:
            model = with_method(load_model(args.model, device, prep), args.method)
        except BaseException:
            project.close()
            raise
    else:
        model = with_method(load_model(args.model, device, prep), args.method)
        project = Project.open(inputs.project, create=True)
    bars = ProgressBars(enabled=not args.json or sys.stderr.isatty())
    cancel = CancelToken()
    previous = {sig: signal.signal(sig, lambda *_: cancel.cancel()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with project:
            intake = import_example_folders(project, inputs.examples)
            scan = project.add_images([inputs.images], recursive=True, progress=bars.scan)
            bars.close()
            labeler = Labeler(project, model, batch_size=args.batch_size, backend=args.backend)
            summary = labeler.label(progress=bars.label, cancel=cancel)
            bars.close()
            exports: dict[str, Any] = {}
            incomplete: ExportIncompleteError | None = None
            if not summary.cancelled:
                if inputs.export_csv is not None:
                    rep = export_csv(project, inputs.export_csv)
                    exports["csv"] = {"path": str(rep.path), "rows": rep.written}
                if inputs.export_folder is not None:
                    try:
                        rep = export_folders(project, inputs.export_folder, link=inputs.link,
                                             include_predictions=True, min_confidence=args.min_confidence)
                    except ExportIncompleteError as e:
                        rep, incomplete = e.report, e
                    exports["folder"] = {"path": str(rep.path), "files": rep.written, "link": inputs.link,
                                         "skipped": [{"path": p, "reason": r} for p, r in rep.skipped],
                                         "failed": [{"path": p, "reason": r} for p, r in rep.failed],
                                         "written": rep.files if incomplete is not None else None}
            result = {
                "project": str(project.path),
                "model": args.model,
                "method": model.meta["method"],
                "device": describe_device(device),
                "backend": summary.backend,
                "finished": not summary.cancelled,
                "images": project.count(),
                "labeled": project.count(status="predicted") + project.count(status="confirmed"),
                "classes": class_counts(project),
                "classes_without_examples": summary.skipped_classes,
                "examples_added": intake.added,
                "images_added": len(scan.added),
                "duplicates": len(scan.duplicates),
                "embedded": summary.embedded,
                "from_cache": summary.from_cache,
                "predicted": summary.predicted,
                "seconds": round(summary.seconds, 3),
                "images_per_s": round(summary.images_per_s, 1),
                "errors": [{"path": p, "reason": r} for p, r in error_images(project)],
                "skipped": [{"path": p, "reason": r} for p, r in intake.skipped + scan.skipped],
                "exports": exports,
            }
    finally:
        bars.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(result, ensure_ascii=False) if args.json else format_summary(result))
    if incomplete is not None:
        raise incomplete  # after the summary, which lists what was written: exit status 2
    return EXIT_OK if result["finished"] else EXIT_INTERRUPTED


def format_summary(r: dict[str, Any]) -> str:
    lines = [f"{'labeled' if r['finished'] else 'interrupted (run again to resume)'}: {r['project']} "
             f"with model {r['model']} on {r['device']}"]
    width = max((len(name) for name in r["classes"]), default=5)
    for name, c in r["classes"].items():
        lines.append(f"  {name:<{width}}  {c['total']:>7} images "
                     f"({c['confirmed']} confirmed, {c['predicted']} predicted)")
    if r["classes_without_examples"]:
        lines.append(f"classes left out (no usable example): {', '.join(r['classes_without_examples'])}")
    lines.append(f"{r['labeled']} of {r['images']} images labeled; {r['embedded']} decoded at "
                 f"{r['images_per_s']:.0f} images/s, {r['from_cache']} from the cache, in {r['seconds']:.1f} s")
    if r["errors"]:
        lines.append(f"{len(r['errors'])} unreadable file{'s' if len(r['errors']) != 1 else ''} (not labeled):")
        lines += [f"  {e['path']}: {e['reason']}" for e in r["errors"]]
    if r["skipped"]:
        lines.append(f"{len(r['skipped'])} entr{'ies' if len(r['skipped']) != 1 else 'y'} skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in r["skipped"]]
    for kind, e in r["exports"].items():
        lines.append(f"exported {kind}: {e['path']}")
        if e.get("skipped"):
            lines.append(f"  {len(e['skipped'])} files left alone (already there, or their source is gone):")
            lines += [f"    {s['path']}: {s['reason']}" for s in e["skipped"]]
        if e.get("failed"):
            lines.append(f"  {len(e['failed'])} files could not be written; {e['files']} were:")
            lines += [f"    {p}" for p in e.get("written") or []]
    return "\n".join(lines)
