"""File > Export Model…: the project's adapted model as one ONNX file (or a bundle zip).

The engine does the work in the worker (``export_from_project``: it adapts the
window's current model on the project's examples, checks the file against PyTorch
and writes it atomically); this side asks where, and reports what came out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.paths import export_target
from fewshot_gui import jobs
from fewshot_gui.folders import last_folder, remember_folder

ONNX_FILTER = "ONNX model (*.onnx)"
BUNDLE_FILTER = "Bundle with labels and README (*.zip)"


def can_export(window: Any) -> bool:
    """A project with classes and examples, and no long job running: the export adapts on
    the examples as they stand, and would otherwise wait behind a whole label run."""
    if window.project is None or not window.classes or window.labeling_jobs.kind is not None:
        return False
    return window.state.has_examples


def ask_target(window: Any) -> tuple[str, bool, bool] | None:
    """(path, bundle, replace) from a save dialog, or None when cancelled."""
    stem = Path(window.project.path).stem
    path, chosen = QFileDialog.getSaveFileName(window, "Export model",
                                               str(Path(last_folder(window.settings, "exports")) / f"{stem}.onnx"),
                                               f"{ONNX_FILTER};;{BUNDLE_FILTER}")
    if not path:
        return None
    remember_folder(window.settings, "exports", path)
    chosen_path = Path(path)
    bundle = chosen == BUNDLE_FILTER or chosen_path.suffix.lower() == ".zip"
    target = _with_suffix(chosen_path, bundle)
    if target == chosen_path:
        return str(target), bundle, target.exists()  # the dialog asked before returning an existing file
    if target.exists():  # the name the dialog checked is not the one that will be written
        answer = QMessageBox.question(window, "Export model", f"{target} already exists. Replace it?")
        if answer != QMessageBox.StandardButton.Yes:
            return None
        return str(target), bundle, True
    return str(target), bundle, False


def _with_suffix(path: Path, bundle: bool) -> Path:
    # The engine's rule for bundles (a .onnx name becomes .zip), so the dialog checks the
    # file that is really written; a model without a suffix gets .onnx.
    if bundle:
        return export_target(path, bundle=True)
    return path if path.suffix.lower() == ".onnx" else path.with_name(path.name + ".onnx")


def parity_text(diff: float) -> str:
    """The export's check, in words: the exported file answers as the app does."""
    if diff < 1e-3:
        return "checked: it gives the same answers as the app"
    return f"checked: its probabilities differ from the app's by at most {diff:.1%}"


def export_model(window: Any, path: str | None = None, bundle: bool = False, force: bool = False) -> None:
    """Export with the window's current model; ``path`` given skips the dialog (tests,
    scripts), and then ``force`` says whether an existing file may be replaced."""
    if window.project is None:
        return
    if path is None:
        target = ask_target(window)
        if target is None:
            return
        path, bundle, force = target
    spec = window.model_spec

    def done(report: Any) -> None:
        n = len(report.classes)
        what = "Bundle" if report.bundle else "Model"
        text = (f"{what} exported to {report.path}: {n} class{'es' if n != 1 else ''}, "
                f"{parity_text(report.parity_max_abs_diff)}")
        details = (f"Classes: {', '.join(report.classes)}\n"
                   f"Model: {report.model} ({report.method})\n"
                   f"Checked with onnxruntime ({report.provider}) on {report.parity_images} example images: the "
                   f"largest difference between its probabilities and the app's was {report.parity_max_abs_diff:.2g}\n"
                   f"Took {report.seconds:.1f} s")
        window.last_model_export = report
        window.notify(text, details)

    def failed(message: str) -> None:
        if "cancelled" in message:
            window.statusBar().showMessage("Export cancelled; nothing was written", 5000)
        else:
            window.show_error(message)

    window.submit(f"Exporting model to {Path(path).name}",
                  lambda ctx, h: jobs.export_model(ctx, h, path, spec, bundle, force),
                  done=done, failed=failed, kind="export")
