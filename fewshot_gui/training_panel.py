"""View > Meta-training...: meta-train any registered method from the app.

The run is a child process (training_process.py) whose JSON events feed the curves
(training_curves.py), the status line and the log; the form (training_form.py) turns
the settings into its ``fewshot train`` arguments after the engine checked the data
folder's layout in the worker. Nothing here blocks the main thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit, QPushButton, QScrollArea,
                               QSplitter, QTabWidget, QVBoxLayout, QWidget)

from engine.training.events import read_events
from fewshot_gui import training_jobs
from fewshot_gui.past_runs import PastRuns
from fewshot_gui.training_curves import TrainingCurves
from fewshot_gui.training_form import TrainingForm
from fewshot_gui.training_process import TrainingProcess

RUNS_KEY = "training_runs"
QUIT_WAIT_MS = 90_000


def runs_root() -> Path:
    from platformdirs import user_data_dir
    return Path(user_data_dir("fewshot-labeler")) / "runs"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class TrainingPanel(QWidget):
    def __init__(self, window: Any, root: Path | None = None):
        # A window of its own, owned by the main window: it lives as long as the window that asks it on quit.
        super().__init__(window if isinstance(window, QWidget) else None, Qt.WindowType.Window)
        self.window = window
        self.setWindowTitle("Meta-training")
        self.root = root or runs_root()
        self.run_folder: str | None = None  # the run shown: the one going, or one reopened
        self.process = TrainingProcess(self)
        self.process.event.connect(self._event)
        self.process.log.connect(self._log)
        self.process.ended.connect(self._ended)
        self.form = TrainingForm(self.root)
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(self.form.sizeHint().width() + 30)
        self.btn_start = QPushButton("Start")
        self.btn_stop = QPushButton("Stop")
        self.btn_resume = QPushButton("Resume")
        self.btn_use = QPushButton("Use this model")
        self.btn_project = QPushButton("Meta-train on this project's unlabeled images")
        self.btn_start.clicked.connect(self.start)
        self.btn_stop.clicked.connect(self.stop)
        self.btn_resume.clicked.connect(self.resume)
        self.btn_use.clicked.connect(self.use_model)
        self.btn_project.clicked.connect(self.use_project_images)
        for b, tip in ((self.btn_start, "Check the data folder, then start a new run"),
                       (self.btn_stop, "Stop after the current step; the run is saved and can be resumed"),
                       (self.btn_resume, "Go on with the run shown, from its last checkpoint"),
                       (self.btn_use, "Put the run's best model in the model picker and label with it"),
                       (self.btn_project, "CACTUs: classes found by clustering this project's images, no labels")):
            b.setToolTip(tip)
        buttons = QHBoxLayout()
        for b in (self.btn_start, self.btn_stop, self.btn_resume, self.btn_use):
            buttons.addWidget(b)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(scroll)
        left_layout.addWidget(self.btn_project)
        left_layout.addLayout(buttons)
        self.status = QLabel("Set up a run and press Start.")
        self.status.setWordWrap(True)
        self.device = QLabel("")
        self.curves = TrainingCurves()
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(5000)
        self.past = PastRuns()
        self.past.opened.connect(self.open_run)
        tabs = QTabWidget()
        tabs.addTab(self.curves, "Curves")
        tabs.addTab(self.log_view, "Log")
        tabs.addTab(self.past, "Past runs")
        self.tabs = tabs
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.device)
        right_layout.addWidget(self.status)
        right_layout.addWidget(tabs, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        QVBoxLayout(self).addWidget(split)
        self.resize(1280, 860)
        self._last_episode: dict | None = None
        self._best: dict | None = None
        self._done = False  # the run shown finished: Resume has nothing to go on with
        self._update_buttons()
        self.refresh_runs()
        window.submit("Reading the methods", training_jobs.panel_setup, quick=True, done=self._setup,
                      failed=self._failed)

    # ------------------------------------------------------------ setup

    def _setup(self, result: tuple[list[dict], str]) -> None:
        specs, device = result
        self.form.set_methods(specs)
        self.device.setText(f"Best available device here: {device}")

    def refresh_runs(self) -> None:
        self.past.fill(self.root, self._remembered())

    def _remembered(self) -> list[str]:
        value = self.window.settings.value(RUNS_KEY, [])
        return [str(v) for v in ([value] if isinstance(value, str) else (value or []))]

    def _remember(self, folder: str) -> None:
        runs = [folder] + [f for f in self._remembered() if f != folder]
        self.window.settings.setValue(RUNS_KEY, runs[:50])

    # ------------------------------------------------------------ actions

    def start(self) -> None:
        if self.process.running():
            return
        args = self.form.args()
        out = self.form.out.text().strip()
        if not out:
            self._failed("choose an output folder for the trained model")
            return
        if Path(out).exists() and any(Path(out).iterdir()):
            self._failed(f"{out} already holds files; choose an empty or new output folder (or Resume that run)")
            return
        self.status.setText("Checking the data folder\u2026")
        self.btn_start.setEnabled(False)

        def checked(found: str) -> None:
            self._log(f"data: {found}")
            self._launch(args, out, fresh=True)

        self.window.submit("Checking the data folder",
                           lambda ctx, h: training_jobs.check_layout(ctx, h, self.form.kind(),
                                                                     self.form.root.text().strip(),
                                                                     self.form.split.currentText().strip()),
                           quick=True, done=checked, failed=self._failed)

    def resume(self) -> None:
        if self.process.running() or not self.run_folder:
            return
        self._launch(["train", "--resume", self.run_folder], self.run_folder, fresh=False)

    def _launch(self, args: list[str], folder: str, fresh: bool) -> None:
        self.run_folder = folder
        self._remember(folder)
        self._best = None
        self._done = False
        if fresh:
            self.curves.clear()
        else:
            self._replay(folder)
        self.tabs.setCurrentWidget(self.curves)
        self.process.start(args + ["--events", "-"])
        self.status.setText("Starting\u2026")
        self._update_buttons()

    def stop(self) -> None:
        if self.process.running():
            self.process.stop()
            self.status.setText("Stopping after the current step (the run is saved)\u2026")
            self._update_buttons()

    def use_model(self) -> None:
        if self.run_folder and (Path(self.run_folder) / "model.safetensors").is_file():
            self.window.set_model(self.run_folder)
            self.status.setText(f"Labeling now uses {Path(self.run_folder).name}.")

    def use_project_images(self) -> None:
        out = self.form.out.text().strip()

        def listed(result: tuple[str, int]) -> None:
            path, count = result
            self.form.dataset.setCurrentIndex(self.form.dataset.findData("unlabeled"))
            self.form.root.setText(path)
            self.status.setText(f"{count} unlabeled images of this project listed in {path}; press Start.")

        self.window.submit("Listing the project's images",
                           lambda ctx, h: training_jobs.project_image_list(ctx, h, out), quick=True, done=listed,
                           failed=self._failed)

    def open_run(self, folder: str) -> None:
        """Show a past run's curves; Resume and Use this model then apply to it."""
        if self.process.running():
            self._failed("a run is going; stop it before opening another")
            return
        self.run_folder = folder
        self.curves.clear()
        self._replay(folder)
        self.tabs.setCurrentWidget(self.curves)
        self._update_buttons()

    def _replay(self, folder: str) -> None:
        self._last_episode = None
        self._done = False
        for e in read_events(folder):
            self.curves.add(e)
            self._note(e)
        self._show_status(finished=True)

    # ------------------------------------------------------------ events

    def _event(self, e: dict) -> None:
        self.curves.add(e)
        self._note(e)
        kind = e.get("event")
        if kind == "preparing":
            self.status.setText(f"Preparing the tasks: {e['stage']} {e['done']} / {e['total']}")
        elif kind == "start":
            self.device.setText(f"Training on {e.get('device')}" + (f", {e['world_size']} processes"
                                                                    if e.get("world_size", 1) > 1 else ""))
            self._log(f"started at step {e.get('episode')} of {e.get('episodes')} on {e.get('device')}, "
                      f"{e.get('classes')} training classes")
        elif kind == "validation":
            self._log(f"step {e['episode']}: validation {100 * e['accuracy']:.2f}% \u00b1 {100 * e['ci95']:.2f}"
                      + (" (best, saved)" if e.get("best") else ""))
        if kind in ("episode", "validation"):
            self._show_status(finished=False)

    def _note(self, e: dict) -> None:
        if e.get("event") in ("done", "stopped"):
            self._done = e["event"] == "done"  # a finished run has nothing to resume
        if e.get("event") == "episode":
            self._last_episode = e
        elif e.get("event") == "validation" and e.get("best"):
            self._best = e

    def _show_status(self, finished: bool) -> None:
        e = self._last_episode
        if e is None:
            return
        parts = [f"Step {e['episode']:,} of {e['episodes']:,}"]
        if not finished:
            parts.append(f"{e['episodes_per_s']:.1f} steps/s")
            parts.append(f"about {duration(e['eta_s'])} left")
            parts.append(f"{100 * e['wait_fraction']:.0f}% of the time waiting for images")
        if self._best:
            b = self._best
            parts.append(f"best validation {100 * b['accuracy']:.1f}% \u00b1 {100 * b['ci95']:.1f} at step "
                         f"{b['episode']:,} ({b['way']}-way {b['shot']}-shot)")
        self.status.setText(" \u00b7 ".join(parts))

    def _ended(self, code: int, message: str) -> None:
        if message:
            self.status.setText(f"The run failed: {message}")
            self._log(f"failed: {message}")
            box = QMessageBox(QMessageBox.Icon.Warning, "Meta-training", message, QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()  # window-modal, without a nested event loop: the run's window stays live
        else:
            self._show_status(finished=True)
            self._log("stopped; Resume goes on from here" if code else "finished")
            self.status.setText(self.status.text() + (" \u00b7 stopped" if code else " \u00b7 finished"))
            self._done = not code
            self.form.suggest_out()  # Start again makes a new run beside this one
        self.refresh_runs()
        self._update_buttons()

    def _log(self, line: str) -> None:
        self.log_view.appendPlainText(line)

    def _failed(self, message: str) -> None:
        self.status.setText(message)
        self._log(f"error: {message}")
        self._update_buttons()

    def _update_buttons(self) -> None:
        going = self.process.running()
        folder = Path(self.run_folder) if self.run_folder else None
        self.btn_start.setEnabled(not going)
        self.btn_stop.setEnabled(going)
        self.btn_resume.setEnabled(not going and folder is not None and not self._done
                                   and (folder / "resume.pt").is_file())
        self.btn_use.setEnabled(not going and folder is not None and (folder / "model.safetensors").is_file())
        self.btn_project.setEnabled(not going and getattr(self.window, "project", None) is not None)

    # ------------------------------------------------------------ quitting

    def confirm_quit(self) -> bool:
        """Asked when the app quits: a run going is stopped cleanly (saved), or the quit is called off."""
        if not self.process.running():
            self.close()
            return True
        answer = QMessageBox.question(self, "Meta-training", "A meta-training run is going. Stop it (it is saved "
                                      "and can be resumed) and quit?")
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.process.stop()
        if not self.process.wait(QUIT_WAIT_MS):
            self.process.proc.kill()
        self.close()
        return True


def show_training(window: Any) -> TrainingPanel:
    """Open (or raise) the window's training panel."""
    panel = getattr(window, "training_panel", None)
    if panel is None:
        panel = TrainingPanel(window)
        window.training_panel = panel
    panel.show()
    panel.raise_()
    panel.activateWindow()
    return panel
