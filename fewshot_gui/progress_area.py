"""The status bar's progress for a long job: its stage, a bar with counts, rate and ETA, and Cancel."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget


def _fmt_eta(seconds: float | None) -> str:
    """' · ETA m:ss left', or nothing while the job cannot tell yet."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f" \u00b7 ETA {s // 60}:{s % 60:02d} left"


class ProgressArea(QWidget):
    """Progress bar, rate and ETA, and Cancel, in the status bar while a long job runs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setFixedWidth(220)
        self.bar.setTextVisible(True)
        self.text = QLabel()
        self.cancel = QPushButton("Cancel")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        self.setVisible(False)

    def show_progress(self, stage: str, done: int, total: int, rate: float, eta: float | None) -> None:
        if total == 0:  # a step with nothing to count (preparing onnxruntime): busy, with its name
            self.busy(f"{stage[:1].upper()}{stage[1:]}\u2026")
            return
        self.setVisible(True)
        self.bar.setMaximum(max(total, 1))
        self.bar.setValue(min(done, max(total, 1)))
        self.bar.setFormat(f"{done:,} / {total:,}")
        rate_text = f" \u00b7 {rate:,.0f} images/s{_fmt_eta(eta)}" if rate > 0 else ""
        self.text.setText(f"{stage.capitalize()}{rate_text}")

    def busy(self, name: str) -> None:
        self.setVisible(True)
        self.bar.setMaximum(0)  # an indeterminate bar until the job reports numbers
        self.bar.setFormat("")
        self.text.setText(name)
