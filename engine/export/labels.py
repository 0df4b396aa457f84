"""Label exports: CSV, JSON, and an ImageNet-style folder tree.

CSV and JSON list every image of the project with its current label: the
confirmed (human) one where there is one, else the model's prediction, and
``source`` saying which. An empty label with source ``human`` means the user
said "none of these classes". The uncertainty columns are always the model's,
also on confirmed rows. Bad files are listed with their reason and no label.

Nothing existing is ever overwritten silently: a CSV or JSON target that exists
raises :class:`ExportError` unless ``overwrite=True``, and the folder export
skips files that exist and reports them. Files appear whole or not at all (they
are written beside the target and then linked into place).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import glob
import json
import logging
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TextIO

from engine.errors import ExportError, os_error_text
from engine.methods import uncertainty

if TYPE_CHECKING:
    from engine.labeling.records import ClassInfo, ImageRecord
    from engine.labeling.store import Project

log = logging.getLogger(__name__)

#: The prediction summary every row carries: the top probability and each registered score.
METRICS = ("confidence", *uncertainty.NAMES)
CSV_COLUMNS = ("path", "label", "source", *METRICS, "error")
#: Cell starts that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LINK_MODES = ("copy", "hardlink", "symlink")
JSON_FORMAT = 1
# Characters no folder name may hold on Windows, macOS or Linux.
_UNSAFE_NAME = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class ExportReport:
    """``written``: rows (CSV/JSON) or files (folders) written; ``skipped``: (path, reason)
    of files left alone (already there, source gone); ``failed``: (path, reason) of files
    that could not be written; ``files``: the files a folder export wrote."""

    written: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: Path | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class ExportIncompleteError(ExportError):
    """A folder export could not write some of the files it was asked to; ``report`` says
    which were written and which failed."""

    def __init__(self, message: str, report: ExportReport):
        super().__init__(message)
        self.report = report


def csv_cell(text: str | None) -> str:
    """A text cell as written to CSV: one that a spreadsheet would run as a formula (it
    starts with = + - @, a tab or a carriage return) gets a leading apostrophe, which
    spreadsheets show as text (OWASP's advice; docs/EXPORT.md)."""
    if not text:
        return ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_csv(project: "Project", path: str | Path, overwrite: bool = False) -> ExportReport:
    """One row per image: ``path,label,source,confidence,<scores>,error`` (the scores of
    engine.methods.uncertainty) then ``p_<class>`` per class, in class order (UTF-8).
    Text cells that a spreadsheet would run as formulas are neutralized (:func:`csv_cell`)."""
    classes = project.classes()
    count = 0

    def write(fh: TextIO) -> None:
        nonlocal count
        out = csv.writer(fh)
        out.writerow([*CSV_COLUMNS, *(csv_cell(f"p_{c.name}") for c in classes)])
        for row in _rows(project, classes):
            probs = row["probs"] or {}
            out.writerow([csv_cell(row["path"]), csv_cell(row["label"]), row["source"] or "",
                          *(_num(row[m]) for m in METRICS), csv_cell(row["error"]),
                          *(_num(probs.get(c.name)) for c in classes)])
            count += 1

    target = write_file(Path(path), overwrite, write)
    log.info("exported %d images to %s", count, target)
    return ExportReport(count, [], target)


def export_json(project: "Project", path: str | Path, overwrite: bool = False) -> ExportReport:
    """``{"format", "project", "classes": [{id, name, color}], "images": [{path, label,
    source, confidence, <scores>, error, probs}]}``, with null for what an image lacks
    and ``probs`` keyed by class name."""
    classes = project.classes()
    images = list(_rows(project, classes))

    def write(fh: TextIO) -> None:
        json.dump({"format": JSON_FORMAT, "project": str(project.path),
                   "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in classes],
                   "images": images}, fh, ensure_ascii=False, indent=1)
        fh.write("\n")

    target = write_file(Path(path), overwrite, write)
    log.info("exported %d images to %s", len(images), target)
    return ExportReport(len(images), [], target)


def export_folders(project: "Project", out_dir: str | Path, link: str = "copy", include_predictions: bool = False,
                   min_confidence: float = 0.9, progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Write ``out_dir/<class>/<file>`` for every confirmed image and, with
    ``include_predictions``, every predicted one with confidence >= ``min_confidence``.

    ``link``: ``copy``, ``hardlink`` (same disk only) or ``symlink``. Two images with
    one file name in a class get the second one's name suffixed with its content hash.
    Files that already exist are not touched: they are reported in ``skipped``, as are
    sources that are gone and links the disk refuses.
    """
    if link not in LINK_MODES:
        raise ExportError(f"unknown link mode {link!r}; use one of {', '.join(LINK_MODES)}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ExportError(f"min_confidence must be between 0 and 1 (got {min_confidence})")
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; give a folder to export into")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out_dir} ({e.strerror or e}); choose a folder you can write to") from None
    folders = class_folder_names(project.classes())
    report = ExportReport(0, [], out_dir)
    taken: set[tuple[int, str]] = set()
    total = project.count()
    for done, rec in enumerate(project.iter_images(), start=1):
        if progress is not None and (done % 256 == 0 or done == total):
            progress(done, total)
        if not _selected(rec, include_predictions, min_confidence):
            continue
        folder = out_dir / folders[rec.label_class_id]
        name = Path(rec.path).name
        if (rec.label_class_id, name.lower()) in taken:  # lower(): case-insensitive disks
            stem, suffix = os.path.splitext(name)
            name = f"{stem}-{(rec.hash or str(rec.id))[:10]}{suffix}"
        taken.add((rec.label_class_id, name.lower()))
        target = folder / name
        reason, kind = _place(Path(rec.path), target, link)
        if reason is None:
            report.written += 1
            report.files.append(str(target))
        elif kind == "failed":
            report.failed.append((str(target), reason))
        else:
            report.skipped.append((str(target), reason))
    log.info("exported %d files to %s (%d skipped, %d failed)", report.written, out_dir, len(report.skipped),
             len(report.failed))
    if report.failed:
        asked = report.written + len(report.failed)
        if not report.written:
            raise ExportIncompleteError(f"could not write any of the {asked:,} files to {out_dir}: "
                                        f"{report.failed[0][1]}", report)
        raise ExportIncompleteError(
            f"could not write {len(report.failed):,} of {asked:,} files to {out_dir} ({report.failed[0][1]}); "
            f"{report.written:,} were written and are kept (an export again skips them): fix the cause and "
            "export again", report)
    return report


def class_folder_names(classes: list["ClassInfo"]) -> dict[int, str]:
    """A folder name per class id: unsafe characters replaced, unique ignoring case."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for c in classes:
        name = _UNSAFE_NAME.sub("_", c.name).strip().rstrip(". ")
        if name in ("", ".", "..") or name.lower() in _WINDOWS_RESERVED:
            name = f"{name}_"
        if name.lower() in used:
            name = f"{name}_{c.id}"
        used.add(name.lower())
        names[c.id] = name
    return names


def _rows(project: "Project", classes: list["ClassInfo"]) -> Iterator[dict]:
    names = {c.id: c.name for c in classes}
    for rec in project.iter_images():
        row: dict = {"path": rec.path, "label": None, "source": None}
        if rec.error is None:
            row["source"] = rec.label_source
            row["label"] = names.get(rec.label_class_id) if rec.label_class_id is not None else None
        row["confidence"] = rec.confidence if rec.error is None else None
        row.update({m: rec.scores.get(m) if rec.error is None else None for m in uncertainty.NAMES})
        row["error"] = rec.error
        row["probs"] = ({names[k]: v for k, v in rec.probs.items() if k in names}
                        if rec.probs is not None and rec.error is None else None)
        yield row


def _selected(rec: "ImageRecord", include_predictions: bool, min_confidence: float) -> bool:
    if rec.error is not None or rec.label_class_id is None:
        return False
    if rec.label_source == "human":
        return True
    return (include_predictions and rec.label_source == "model" and rec.confidence is not None
            and rec.confidence >= min_confidence)


def _num(value: float | None) -> str:
    return "" if value is None else format(value, ".6g")


def write_file(path: Path, overwrite: bool, write: Callable[[TextIO], None]) -> Path:
    path = path.absolute()
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name to export to")
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; choose another file name, or allow overwriting it")
    if not path.parent.is_dir():
        raise ExportError(f"folder {path.parent} does not exist; create it first or choose another place")
    tmp = temp_beside(path)
    try:
        with open(tmp, "x", newline="", encoding="utf-8") as fh:
            write(fh)
        if overwrite:
            os.replace(tmp, path)
        elif not publish(tmp, path):
            raise ExportError(f"{path} was created by something else during the export; choose another file name")
    except OSError as e:
        raise ExportError(f"cannot write {path}: {os_error_text(e)}") from None
    finally:
        with contextlib.suppress(OSError):  # on a read-only disk this fails too, and must not replace the reason
            tmp.unlink(missing_ok=True)
    return path


def _place(src: Path, dst: Path, link: str) -> tuple[str | None, str]:
    """Put ``src`` at ``dst`` as asked: (None, "written"), or (reason, kind) with kind
    ``exists`` or ``missing`` (left alone, as asked) or ``failed`` (could not be written)."""
    exists = "a file with this name already exists there; it was not overwritten"
    if os.path.lexists(dst):
        return exists, "exists"
    if not src.exists():
        return f"the source image {src} is missing (moved or deleted?); rescan its folder", "missing"
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if link == "hardlink":
            os.link(src, dst)
        elif link == "symlink":
            os.symlink(src.absolute(), dst)
        else:
            tmp = temp_beside(dst)
            try:
                shutil.copy2(src, tmp)
                if not publish(tmp, dst):
                    return exists, "exists"
            finally:
                tmp.unlink(missing_ok=True)
    except FileExistsError:
        return exists, "exists"
    except OSError as e:
        if link == "hardlink" and e.errno == errno.EXDEV:
            return "hard links cannot cross disks; export with copy, or into a folder on the images' disk", "failed"
        if link in ("hardlink", "symlink") and e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            return f"this disk does not allow {link}s ({e.strerror}); export with copy", "failed"
        if e.errno == errno.ENOSPC:
            return "the disk is full", "failed"
        return os_error_text(e), "failed"
    return None, "written"


def temp_beside(path: Path) -> Path:
    """A temporary name beside ``path`` (so the final link or rename stays on one disk),
    hidden, holding this process's id: a part file that a killed process left behind is
    removed by the next export to the same name (:func:`remove_abandoned_parts`)."""
    remove_abandoned_parts(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")


def remove_abandoned_parts(path: Path) -> None:
    try:
        parts = list(path.parent.glob(f".{glob.escape(path.name)}.*.part"))
    except OSError:
        return
    for part in parts:
        pid = part.name[len(path.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill would end the process there: keep its part file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def publish(tmp: Path, dst: Path) -> bool:
    """Move a finished temp file to ``dst`` unless ``dst`` exists (then False).
    A hard link is the atomic "create if absent"; disks without hard links fall back
    to check-then-rename."""
    try:
        os.link(tmp, dst)
        return True
    except FileExistsError:
        return False
    except OSError:
        if os.path.lexists(dst):
            return False
        os.replace(tmp, dst)
        return True
