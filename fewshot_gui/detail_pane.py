"""The selected image in detail: a larger preview, each class's probability as a bar,
the uncertainty scores the model gives (the registry's, engine.methods.uncertainty;
a score the model does not give is not shown), and what people did to it (its label
history, newest first)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (QFormLayout, QFrame, QLabel, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

from engine.methods import uncertainty
from fewshot_gui.label_history import history_html
from fewshot_gui.plain_words import plain_summary
from fewshot_gui.thumbnails import ThumbnailLoader

PREVIEW = 256


class ProbabilityBars(QWidget):
    """One row per class, in class order: colour, name, bar, percentage. The
    predicted class is bold; a confirmed label is marked with a check."""

    ROW = 22

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[str, str, float, bool, bool]] = []  # name, colour, p, predicted, confirmed
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_rows(self, rows: list[tuple[str, str, float, bool, bool]]) -> None:
        self.rows = rows
        self.setFixedHeight(max(1, len(rows)) * self.ROW + 4)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(240, max(1, len(self.rows)) * self.ROW + 4)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        if not self.rows:
            p.setPen(pal.placeholderText().color())
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "No prediction yet")
            return
        name_w = min(110, self.width() // 3)
        pct_w = 44
        for i, (name, color, prob, predicted, confirmed) in enumerate(self.rows):
            y = 2 + i * self.ROW
            font = p.font()
            font.setBold(predicted)
            p.setFont(font)
            p.setPen(pal.text().color())
            label = ("\u2713 " if confirmed else "") + name
            p.drawText(QRect(0, y, name_w - 4, self.ROW), Qt.AlignmentFlag.AlignVCenter,
                       p.fontMetrics().elidedText(label, Qt.TextElideMode.ElideMiddle, name_w - 4))
            track = QRect(name_w, y + 5, self.width() - name_w - pct_w, self.ROW - 10)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(pal.alternateBase().color())
            p.drawRoundedRect(track, 3, 3)
            bar = QRect(track)
            bar.setWidth(max(0, round(track.width() * prob)))
            p.setBrush(QColor(color))
            if bar.width():
                p.drawRoundedRect(bar, 3, 3)
            p.setPen(pal.text().color())
            p.drawText(QRect(self.width() - pct_w, y, pct_w, self.ROW),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{prob:.0%}")


def probability_rows(rec: Any, classes: list[Any]) -> list[tuple[str, str, float, bool, bool]]:
    if rec is None or not rec.probs:
        return []
    return [(c.name, c.color, float(rec.probs.get(c.id, 0.0)), c.id == rec.predicted_class_id,
             rec.status == "confirmed" and rec.label_class_id == c.id) for c in classes]




class DetailPane(QWidget):
    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.record: Any = None
        self.classes: list[Any] = []
        self._history: list[Any] | None = None
        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(PREVIEW // 2, PREVIEW // 2)
        self.preview.setMaximumHeight(PREVIEW + 8)
        self.preview.setStyleSheet("background: palette(alternate-base); border-radius: 6px;")
        self.name = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.name.font()
        font.setBold(True)
        self.name.setFont(font)
        self.label = QLabel(wordWrap=True)
        self.summary = QLabel(wordWrap=True)  # what the prediction means, in words; numbers under Details
        self.bars = ProbabilityBars()
        self.bars_title = QLabel("<b>Class probabilities</b>")
        self.size = QLabel()
        numbers = QFormLayout()
        self.numbers = numbers
        self.numbers_box = QWidget()
        self.numbers_box.setLayout(numbers)
        self.numbers_box.setVisible(False)
        self.details = QToolButton(text="\u25b8 The numbers", autoRaise=True, checkable=True)
        self.details.setToolTip("Each uncertainty score the model gives, with what it means")
        self.details.toggled.connect(self._toggle_numbers)
        # One row per registered score, shown only when the image has a value for it.
        self.score_labels: dict[str, QLabel] = {}
        for score in uncertainty.SCORES:
            value = QLabel(wordWrap=True)  # its meaning wraps under it instead of widening the window
            name = QLabel(score.label)
            for w in (name, value):
                w.setToolTip(score.description)
            numbers.addRow(name, value)
            self.score_labels[score.name] = value
        numbers.addRow("Size", self.size)
        self.history = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText,
                              alignment=Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.history.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # A long history scrolls inside the pane instead of pushing the pane taller than the window.
        history_scroll = QScrollArea()
        history_scroll.setWidgetResizable(True)
        history_scroll.setFrameShape(QFrame.Shape.NoFrame)
        history_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        history_scroll.setWidget(self.history)
        self.history_title = QLabel("<b>History</b>")
        layout = QVBoxLayout(self)
        layout.addWidget(self.preview)
        layout.addWidget(self.name)
        layout.addWidget(self.label)
        layout.addWidget(self.summary)
        layout.addWidget(self.bars_title)
        layout.addWidget(self.bars)
        layout.addWidget(self.details)
        layout.addWidget(self.numbers_box)
        layout.addSpacing(6)
        layout.addWidget(self.history_title)
        layout.addWidget(history_scroll, 1)
        loader.ready.connect(self._thumbnail_ready)
        self.in_review = False
        self.show_record(None, [])

    def set_review_mode(self, on: bool) -> None:
        """Beside the review view, which shows the probabilities itself, the pane leaves them out."""
        self.in_review = on
        self.bars_title.setVisible(not on)
        self.bars.setVisible(not on)

    def _toggle_numbers(self, on: bool) -> None:
        self.numbers_box.setVisible(on)
        self.details.setText(("\u25be" if on else "\u25b8") + " The numbers")

    def show_record(self, rec: Any, classes: list[Any], history: list[Any] | None = None) -> None:
        """``history``: the image's label events, oldest first (None: not read)."""
        self.record, self.classes, self._history = rec, classes, history
        self.history.setText(history_html(history) if rec is not None and history is not None else "")
        self.history_title.setVisible(rec is not None and history is not None)
        if rec is None:
            self.preview.clear()
            self.preview.setText("Select an image")
            for w in (self.name, self.label, self.summary, self.size, *self.score_labels.values()):
                w.clear()
            self.details.setVisible(False)
            self._show_scores({})
            self.bars.set_rows([])
            return
        self.name.setText(Path(rec.path).name)
        self.name.setToolTip(rec.path)
        by_id = {c.id: c for c in classes}
        self.label.setText(describe_label(rec, by_id))
        summary = plain_summary(rec, by_id)
        self.summary.setText(summary)
        self.summary.setVisible(bool(summary))
        self.details.setVisible(rec.error is None and any(v is not None for v in rec.scores.values()))
        self.bars.set_rows(probability_rows(rec, classes))
        self._show_scores(rec.scores if rec.error is None else {})
        self.size.setText(f"{rec.width} \u00d7 {rec.height} px" if rec.width else "")
        self.numbers.setRowVisible(len(self.score_labels), bool(rec.width))
        self._show_preview()

    def update_record(self, rec: Any) -> None:
        """The same image with new predictions: shown again, its history kept."""
        self.show_record(rec, self.classes, self._history)

    def _show_scores(self, scores: dict[str, float | None]) -> None:
        for row, (name, label) in enumerate(self.score_labels.items()):
            value = scores.get(name)
            label.setText("" if value is None else score_text(name, value))
            self.numbers.setRowVisible(row, value is not None)

    def _show_preview(self) -> None:
        rec = self.record
        if rec is None:
            return
        pm = self.loader.pixmap(rec.path, PREVIEW)
        if pm is not None:
            self.preview.setPixmap(pm.scaled(self.preview.width() - 8, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
        elif rec.error is not None or self.loader.failed(rec.path):
            self.preview.setText("This file cannot be shown")
        else:
            self.preview.setText("Loading\u2026")

    def _thumbnail_ready(self, path: str) -> None:
        if self.record is not None and path == self.record.path:
            self._show_preview()


def describe_label(rec: Any, classes: dict[int, Any]) -> str:
    """One line for the label: what it is, who said so, and how sure the model is."""
    if rec.status == "error":
        return f"<span style='color:#d62728'>Unreadable:</span> {rec.error}"
    if rec.status == "unlabeled":
        return "Not labeled yet"
    cls = classes.get(rec.label_class_id)
    name = cls.name if cls is not None else "none of these classes"
    if rec.status == "confirmed":
        return f"Confirmed: <b>{name}</b>"
    conf = "" if rec.confidence is None else f" ({rec.confidence:.0%})"
    return f"Predicted: <b>{name}</b>{conf}"


def score_text(name: str, value: float) -> str:
    """A score with what its size means, "1.030, high (above 0.5)", "0.022, low (high above
    0.1)", "0.05, a close call (below 0.2)": the threshold is the flag that the grid's filter
    and the plain line use."""
    score = uncertainty.BY_NAME[name]
    if score.flag is None:
        return f"{value:.3f}"
    flag = f"{score.flag:.3g}"
    if score.descending:  # higher is more uncertain
        return f"{value:.3f}, high (above {flag})" if value > score.flag else f"{value:.3f}, low (high above {flag})"
    return f"{value:.3f}, a close call (below {flag})" if value < score.flag else f"{value:.3f}, clear (close below {flag})"
