"""The past meta-training runs the panel lists: every run folder under the runs folder and
any other the person opened, with its method, dataset, best validation and date."""
from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from engine.training.events import EVENTS_FILE, RUN_FILE
COLUMNS = ("Output folder", "Method", "Dataset", "Best validation", "Date")


def describe_run(folder: Path) -> dict | None:
    """What the list shows of a run folder, or None when it is not one."""
    try:
        training = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("training", {})
    except (OSError, ValueError, AttributeError):
        return None
    best = None
    try:
        validation = json.loads((folder / "model.json").read_text(encoding="utf-8")).get("validation")
        if validation:
            best = (validation["accuracy"], validation["ci95"], validation.get("way"), validation.get("shot"))
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    stamp = max((p.stat().st_mtime for p in (folder / RUN_FILE, folder / EVENTS_FILE) if p.exists()), default=0)
    return {"folder": str(folder), "method": training.get("method", "?"), "dataset": training.get("dataset", "?"),
            "best": best, "date": stamp, "has_model": (folder / "model.safetensors").is_file()}


class PastRuns(QTreeWidget):
    opened = Signal(str)  # a run folder to show

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setHeaderLabels(list(COLUMNS))
        self.setRootIsDecorated(False)
        self.setSortingEnabled(True)
        self.itemActivated.connect(lambda item, _col: self.opened.emit(item.data(0, Qt.ItemDataRole.UserRole)))

    def fill(self, root: Path, extra: list[str]) -> None:
        folders = {str(p) for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
        folders |= {f for f in extra if Path(f).is_dir()}
        self.setSortingEnabled(False)
        self.clear()
        for folder in sorted(folders):
            run = describe_run(Path(folder))
            if run is None:
                continue
            if run["best"]:
                acc, ci, way, shot = run["best"]
                best = f"{100 * acc:.1f}% \u00b1 {100 * ci:.1f} ({way}-way {shot}-shot)"
            else:
                best = "not validated"
            item = QTreeWidgetItem([Path(folder).name, run["method"], run["dataset"], best,
                                    time.strftime("%Y-%m-%d %H:%M", time.localtime(run["date"]))])
            item.setData(0, Qt.ItemDataRole.UserRole, folder)
            item.setToolTip(0, folder)
            self.addTopLevelItem(item)
        self.setSortingEnabled(True)
        self.sortItems(4, Qt.SortOrder.DescendingOrder)
        for c in range(len(COLUMNS)):
            self.resizeColumnToContents(c)
