"""The training panel's settings: dataset, method and its own options, episodes, device,
output folder, turned into ``fewshot train`` arguments. The method list and each
method's options come from the engine (engine/training/layout.py, via the worker),
so a method added to the registry appears here with its options."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget)

DATASETS = (("omniglot", "Omniglot (official zips or extracted folders)"),
            ("miniimagenet", "mini-ImageNet (csv + images, or the pickle caches)"),
            ("folder", "A folder of class sub-folders"),
            ("unlabeled", "Unlabeled images (CACTUs: classes found by clustering)"))
SPLITS = {"omniglot": ("background", "small1", "small2", "evaluation", "vinyals-train", "vinyals-trainval"),
          "miniimagenet": ("train", "val", "test")}
VAL_SPLITS = {"omniglot": ("", "small2", "evaluation", "vinyals-val"), "miniimagenet": ("", "val", "test")}
# Where a first run's settings start: a run that ends in minutes on a laptop's CPU.
START = {"way": 20, "shot": 1, "query": 5, "episodes": 2000, "val_way": 5, "val_shot": 1, "val_query": 15,
         "val_every": 200, "val_episodes": 200, "seed": 0, "lr": 1e-3}
NONE_TEXT = "default"
VALIDATE_TEXT = "Validate and save every"
SAVE_TEXT = "Save a checkpoint every"  # unlabeled data: nothing to validate on, but resumable


def spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


class CompactSpinBox(QDoubleSpinBox):
    """Shows 3 or 0.5 rather than 3.00000 and 0.50000 (five decimals are kept for typing)."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:.5f}".rstrip("0").rstrip(".") or "0"


class OptionEditor:
    """One method option's widget; ``value()`` is None while it holds the method's default."""

    def __init__(self, spec: dict):
        self.spec = spec
        kind, default = spec["type"], spec["default"]
        if kind == "bool" and default is None:  # the method decides unless the person does
            self.widget = QComboBox()
            self.widget.addItems([NONE_TEXT, "on", "off"])
        elif kind == "float" and default is None:
            self.widget = QLineEdit()
            self.widget.setPlaceholderText(NONE_TEXT)
        elif kind == "bool":
            self.widget = QCheckBox()
            self.widget.setChecked(bool(default))
        elif spec["choices"]:
            self.widget = QComboBox()
            self.widget.addItems([str(c) for c in spec["choices"]])
            self.widget.setCurrentText(str(default))
        elif kind == "int":
            self.widget = spin(-1 if default is None else 0, 1_000_000, -1 if default is None else int(default))
            if default is None:
                self.widget.setSpecialValueText(NONE_TEXT)  # -1 shows "default": the method picks
        elif kind == "float":
            self.widget = CompactSpinBox()
            self.widget.setDecimals(5)
            self.widget.setRange(-1e6, 1e6)
            self.widget.setValue(float(default or 0.0))
        else:
            self.widget = QLineEdit(str(default or ""))
        self.widget.setToolTip(spec["help"])

    def value(self):
        w, spec = self.widget, self.spec
        if isinstance(w, QCheckBox):
            v = w.isChecked()
        elif isinstance(w, QComboBox) and spec["type"] == "bool":
            v = {"on": True, "off": False}.get(w.currentText())
        elif isinstance(w, QComboBox):
            v = w.currentText()
        elif isinstance(w, QSpinBox):
            v = None if (spec["default"] is None and w.value() == -1) else w.value()
        elif isinstance(w, QDoubleSpinBox):
            v = w.value()
            return None if spec["default"] is not None and abs(v - float(spec["default"])) < 1e-12 else v
        else:
            text = w.text().strip()
            try:
                v = (float(text) if spec["type"] == "float" else int(text) if spec["type"] == "int" else text) \
                    if text else None
            except ValueError:
                v = None  # not a number: the method's default holds (the field shows its placeholder)
        return None if v == spec["default"] else v

    def args(self) -> list[str]:
        v = self.value()
        if v is None:
            return []
        if self.spec["type"] == "bool":
            return [self.spec["flag"] if v else "--no-" + self.spec["flag"][2:]]
        return [self.spec["flag"], str(v)]


class TrainingForm(QWidget):
    def __init__(self, runs_root: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs_root = runs_root
        self.methods: dict[str, dict] = {}
        self.editors: list[OptionEditor] = []
        form = QFormLayout(self)
        self.dataset = QComboBox()
        for key, text in DATASETS:
            self.dataset.addItem(text, key)
        self.root = QLineEdit()
        self.root.setPlaceholderText("the folder that holds the data")
        browse = QPushButton("Browse\u2026")
        browse.clicked.connect(self._browse_root)
        form.addRow("Dataset", self.dataset)
        form.addRow("Data folder", _row(self.root, browse))
        self.split = QComboBox(editable=True)
        self.val_split = QComboBox(editable=True)
        self.val_split.lineEdit().setPlaceholderText("none: no validation")
        form.addRow("Training split", self.split)
        form.addRow("Validation split", self.val_split)
        self.val_split.currentTextChanged.connect(lambda _t: self._validation_changed())
        self.embedder = QComboBox(editable=True)
        self.embedder.addItems(["photos", "omniglot"])
        self.embedder.setToolTip("the model whose image embeddings are clustered into classes (a bundled name or a "
                                 "trained model's folder); it should not have seen these images' labels")
        self.partitions, self.clusters = spin(1, 1000, 50), spin(2, 100_000, 500)
        form.addRow("Embedder", self.embedder)
        form.addRow("Partitions \u00d7 clusters", _row(self.partitions, self.clusters))
        self.method = QComboBox()
        self.method.currentIndexChanged.connect(self._show_options)
        form.addRow("Method", self.method)
        self.options_box = QGroupBox("Method options")
        self.options_form = QFormLayout(self.options_box)
        form.addRow(self.options_box)
        self.backbone = QComboBox()
        self.backbone.addItems(["conv4", "resnet12", "lite0"])
        form.addRow("Backbone", self.backbone)
        self.way, self.shot, self.query = spin(2, 1000, START["way"]), spin(1, 100, START["shot"]), spin(1, 100, 5)
        form.addRow("Training way / shot / query", _row(self.way, self.shot, self.query))
        self.val_way, self.val_shot = spin(2, 1000, START["val_way"]), spin(1, 100, START["val_shot"])
        self.val_query = spin(1, 100, START["val_query"])
        form.addRow("Validation way / shot / query", _row(self.val_way, self.val_shot, self.val_query))
        self.episodes = spin(1, 10_000_000, START["episodes"])
        self.val_every, self.val_episodes = spin(1, 1_000_000, START["val_every"]), spin(1, 100_000, 200)
        self.val_every.setSuffix(" steps")
        self.val_episodes.setPrefix("on ")
        self.val_episodes.setSuffix(" episodes")
        form.addRow("Outer steps", self.episodes)
        self.meta_batch = spin(1, 1024, 1)
        self.meta_batch.setToolTip("episodes (tasks) averaged in each outer step; MAML papers use 4 to 32")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(START["lr"])
        self.schedule = QComboBox()
        self.schedule.addItem("halve every 2,000 steps", "step")
        self.schedule.addItem("cosine to zero", "cosine")
        self.lr.setToolTip("the outer (meta) learning rate of Adam")
        form.addRow("Tasks per outer step", self.meta_batch)
        form.addRow("Learning rate / schedule", _row(self.lr, self.schedule))
        # Images as the backbone sees them: the dataset's own by default (Omniglot grayscale 28 px,
        # photos RGB 84 px, Lite0 224 px); unlabeled folders of drawings need 1 channel and 28 px.
        self.channels = QComboBox()
        for key, text in (("", "dataset's own"), ("1", "grayscale"), ("3", "colour")):
            self.channels.addItem(text, key)
        self.image_size = spin(0, 1024, 0)
        self.image_size.setSpecialValueText("dataset's own")
        self.image_size.setSuffix(" px")
        self.image_size.setToolTip("side of the square the images are resized to (0: the dataset's or backbone's own)")
        form.addRow("Images: channels / size", _row(self.channels, self.image_size))
        form.addRow(VALIDATE_TEXT, _row(self.val_every, self.val_episodes))
        self.seed = spin(0, 2**31 - 1, START["seed"])
        form.addRow("Seed", self.seed)
        self.device = QComboBox()
        for key, text in (("auto", "Best available"), ("cuda", "CUDA GPU"), ("mps", "Apple GPU (MPS)"),
                          ("cpu", "CPU")):
            self.device.addItem(text, key)
        form.addRow("Device", self.device)
        self.out = QLineEdit()
        out_browse = QPushButton("Browse\u2026")
        out_browse.clicked.connect(self._browse_out)
        form.addRow("Output folder", _row(self.out, out_browse))
        self.dataset.currentIndexChanged.connect(self._dataset_changed)
        self.method.currentIndexChanged.connect(lambda _i: self.suggest_out())
        self._dataset_changed()

    # ------------------------------------------------------------ filling

    def set_methods(self, specs: list[dict]) -> None:
        self.methods = {s["name"]: s for s in specs}
        self.method.blockSignals(True)
        self.method.clear()
        for s in specs:
            self.method.addItem(s["name"], s["name"])
            self.method.setItemData(self.method.count() - 1, s["description"], 3)  # ToolTipRole
        self.method.setCurrentIndex(max(0, self.method.findData("protonet")))
        self.method.blockSignals(False)
        self._show_options()
        self.suggest_out()

    def _show_options(self) -> None:
        while self.options_form.rowCount():
            self.options_form.removeRow(0)
        spec = self.methods.get(self.method.currentData() or "")
        self.editors = [OptionEditor(o) for o in (spec or {}).get("options", [])]
        for e in self.editors:
            self.options_form.addRow(e.spec["name"].replace("_", " "), e.widget)
        self.options_box.setVisible(bool(self.editors))
        if spec:
            self.method.setToolTip(spec["description"])

    def _dataset_changed(self) -> None:
        kind = self.dataset.currentData()
        for box, choices in ((self.split, SPLITS.get(kind, ())), (self.val_split, VAL_SPLITS.get(kind, ("",)))):
            box.clear()
            box.addItems(list(choices))
        unlabeled = kind == "unlabeled"
        form: QFormLayout = self.layout()
        # Unlabeled images have no classes to validate on: those rows would do nothing.
        for w, show in ((self.split, not unlabeled), (self.val_split, not unlabeled), (self.embedder, unlabeled),
                        (self.partitions.parentWidget(), unlabeled), (self.val_way.parentWidget(), not unlabeled)):
            form.setRowVisible(w, show)
        self.split.lineEdit().setPlaceholderText("" if kind in SPLITS else "optional: a sub-folder")
        self._validation_changed()
        self.suggest_out()

    def _validation_changed(self) -> None:
        """Without a validation split the validation rows would do nothing: they grey out, and
        the checkpoint row says it only saves."""
        validates = self.dataset.currentData() != "unlabeled" and bool(self.val_split.currentText().strip())
        self.val_way.parentWidget().setEnabled(validates)
        self.val_episodes.setVisible(validates)
        form: QFormLayout = self.layout()
        form.labelForField(self.val_every.parentWidget()).setText(VALIDATE_TEXT if validates else SAVE_TEXT)

    def suggest_out(self) -> None:
        """A new folder for the next run (a fresh name: the last run holds its own), unless the
        person typed one."""
        if not self.out.isModified():  # a folder the person typed is theirs
            name = f"{self.method.currentData() or 'protonet'}-{self.dataset.currentData()}-{time.strftime('%Y%m%d-%H%M%S')}"
            folder, n = self.runs_root / name, 1
            while folder.exists():  # a run ended within the second its name was given
                n += 1
                folder = self.runs_root / f"{name}-{n}"
            self.out.setText(str(folder))

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder that holds the data", self.root.text())
        if folder:
            self.root.setText(folder)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the trained model", str(self.runs_root))
        if folder:
            self.out.setText(folder)
            self.out.setModified(True)

    # ------------------------------------------------------------ reading

    def kind(self) -> str:
        return self.dataset.currentData()

    def args(self) -> list[str]:
        """The ``fewshot train`` arguments for these settings."""
        kind = self.kind()
        a = ["train", "--dataset", kind, "--data-root", self.root.text().strip(), "--method",
             self.method.currentData() or "protonet", "--backbone", self.backbone.currentText(),
             "--way", str(self.way.value()), "--shot", str(self.shot.value()), "--query", str(self.query.value()),
             "--episodes", str(self.episodes.value()), "--val-every", str(self.val_every.value()),
             "--seed", str(self.seed.value()), "--device", self.device.currentData(), "--out", self.out.text().strip(),
             "--log-every", str(max(1, min(10, self.episodes.value() // 200 or 1))),
             "--meta-batch", str(self.meta_batch.value()), "--lr", f"{self.lr.value():g}",
             "--lr-schedule", self.schedule.currentData()]
        if self.channels.currentData():
            a += ["--channels", self.channels.currentData()]
        if self.image_size.value():
            a += ["--image-size", str(self.image_size.value())]
        if kind == "unlabeled":
            a += ["--embedder", self.embedder.currentText().strip() or "photos", "--partitions",
                  str(self.partitions.value()), "--clusters", str(self.clusters.value())]
        else:
            if self.split.currentText().strip():
                a += ["--split", self.split.currentText().strip()]
            if self.val_split.currentText().strip():
                a += ["--val-split", self.val_split.currentText().strip(), "--val-way", str(self.val_way.value()),
                      "--val-shot", str(self.val_shot.value()), "--val-query", str(self.val_query.value()),
                      "--val-episodes", str(self.val_episodes.value())]
        if kind == "omniglot" and self.split.currentText() in ("background", "small1", "small2", "evaluation"):
            a.append("--rotations")  # the usual augmentation on Omniglot's character classes
        for e in self.editors:
            a += e.args()
        return a


def _row(*widgets: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return row
