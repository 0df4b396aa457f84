"""Asks once for an ONNX feature extractor's input size and normalisation.

An ONNX file declares its input shape but not how its pixels were scaled, and the
wrong mean/std gives features that look plausible but separate classes poorly; so
the person is asked, with the file's declared size and ImageNet normalisation filled
in. The dialog deals in plain dicts shaped like ``Preprocessing.to_dict()``: the
main thread never imports the engine (or torch behind it).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QSpinBox, QVBoxLayout, QWidget)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GRAY = ((0.5,), (0.5,))
RESIZE_RULES = (("shorter_side_center_crop", "Scale the shorter side, crop the centre (photos)"),
                ("stretch", "Stretch to the size (characters, small crops)"))
EXPLANATION = ("ONNX files do not say how their pixels were normalised; check the model's documentation. "
               "The size is the one the file declares (224 when it leaves it open); mean and std are "
               "ImageNet's, the usual choice for photo models. The app remembers these values for this file.")


def _numbers(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


class OnnxPreprocessingDialog(QDialog):
    """Input size (H x W), channels, mean and std (on pixels scaled to 0..1), resize rule
    and inversion; :meth:`preprocessing` gives them once accepted."""

    def __init__(self, path: str, suggested: dict, declared: list | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("ONNX model input")
        self.path = path
        title = QLabel(f"<b>{Path(path).name}</b>")
        title.setToolTip(path)
        explanation = QLabel(EXPLANATION)
        explanation.setWordWrap(True)

        self.height_box, self.width_box = QSpinBox(), QSpinBox()
        for box, value in ((self.height_box, suggested["size"][0]), (self.width_box, suggested["size"][1])):
            box.setRange(8, 4096)
            box.setValue(int(value))
            box.setSuffix(" px")
        self.channels = QComboBox()
        self.channels.addItem("3 (RGB)", 3)
        self.channels.addItem("1 (grayscale)", 1)
        self.channels.setCurrentIndex(self.channels.findData(int(suggested["channels"])))
        self.mean = QLineEdit(_numbers(suggested["mean"]))
        self.std = QLineEdit(_numbers(suggested["std"]))
        for field in (self.mean, self.std):
            field.setPlaceholderText("one value, or one per channel, separated by commas")
        self.resize_rule = QComboBox()
        for rule, text in RESIZE_RULES:
            self.resize_rule.addItem(text, rule)
        self.resize_rule.setCurrentIndex(max(0, self.resize_rule.findData(suggested.get("resize"))))
        self.invert = QCheckBox("Invert intensities (dark on light becomes light on dark)")
        self.invert.setChecked(bool(suggested.get("invert", False)))
        self.channels.currentIndexChanged.connect(self._channels_changed)
        # Dimensions the file fixes cannot be chosen: onnxruntime refuses any other size.
        shape = list(declared or [])
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[1:4]] if len(shape) == 4 else []
        for box, dim in zip((self.channels, self.height_box, self.width_box), fixed):
            if dim is not None:
                box.setEnabled(False)
                box.setToolTip("Fixed by the model file")
        size = QHBoxLayout()
        size.addWidget(self.height_box)
        size.addWidget(QLabel("\u00d7"))
        size.addWidget(self.width_box)
        size.addWidget(QLabel("(height \u00d7 width, fixed by the file)" if any(d is not None for d in fixed[1:])
                              else "(height \u00d7 width)"))
        size.addStretch(1)

        form = QFormLayout()
        form.addRow("Input size", size)
        form.addRow("Channels", self.channels)
        form.addRow("Mean", self.mean)
        form.addRow("Std", self.std)
        hint = QLabel("Per channel (R, G, B), for pixel values scaled to 0..1; one value applies to all.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: palette(placeholder-text);")
        form.addRow("", hint)
        form.addRow("Resize", self.resize_rule)
        form.addRow("", self.invert)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e;")
        self.error.setVisible(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use This Model")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(explanation)
        layout.addSpacing(6)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(500)
        self._result: dict | None = None

    def _channels_changed(self) -> None:
        # Three ImageNet values cannot describe one gray channel: offer the usual values
        # for the new count rather than an error, unless the person typed fitting ones.
        c = self.channels.currentData()
        mean, std = GRAY if c == 1 else IMAGENET
        for field, values in ((self.mean, mean), (self.std, std)):
            n = len([v for v in field.text().split(",") if v.strip()])
            if n not in (1, c):
                field.setText(_numbers(values))

    def _parse(self, field: QLineEdit, label: str, channels: int) -> list[float]:
        try:
            values = [float(v) for v in field.text().replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{label}: write numbers separated by commas, e.g. 0.485, 0.456, 0.406") from None
        if len(values) not in (1, channels):
            raise ValueError(f"{label}: give one value, or {channels} (one per channel); got {len(values)}")
        return values

    def _collect(self) -> dict:
        c = int(self.channels.currentData())
        mean = self._parse(self.mean, "Mean", c)
        std = self._parse(self.std, "Std", c)
        if any(not 0.0 <= m <= 1.0 for m in mean):
            raise ValueError("Mean: the values apply to pixels scaled to 0..1; divide values given for "
                             "0..255 pixels by 255 (123.7 becomes 0.485)")
        if any(s <= 0 for s in std):
            raise ValueError("Std: every value must be above 0")
        return {"size": [self.height_box.value(), self.width_box.value()], "channels": c, "mean": mean,
                "std": std, "resize": self.resize_rule.currentData(), "alpha": "white",
                "invert": self.invert.isChecked()}

    def accept(self) -> None:
        try:
            self._result = self._collect()
        except ValueError as e:
            self.error.setText(str(e))
            self.error.setVisible(True)
            return
        super().accept()

    def preprocessing(self) -> dict | None:
        """What the person accepted (``Preprocessing.to_dict()`` shape), or None."""
        return self._result
