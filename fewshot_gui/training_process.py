"""The meta-training child process: ``python -m engine.cli train ... --events -``.

QProcess delivers its output through the event loop, so the main thread only
parses short JSON lines. Stop is the line ``stop`` on the child's stdin (every
OS); a child that has not ended STOP_GRACE_MS later gets SIGTERM (its handler
checkpoints too), and KILL_GRACE_MS after that it is killed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from engine.cli import NICE_ENV  # argparse and json only: no torch on the main thread
from engine.training.events import SCHEMA_VERSION
from fewshot_gui.worker import WORKER_NICE

STOP_GRACE_MS = 60_000  # a validation pass may be under way; it ends before the stop is seen
KILL_GRACE_MS = 15_000


def fewshot_command(args: list[str]) -> tuple[str, list[str]]:
    """The program and arguments that run ``fewshot ARGS``: this interpreter's ``-m
    engine.cli`` from source; in a frozen build the ``fewshot`` program bundled beside the
    app (packaging/fewshot.spec), since there ``sys.executable`` is the app, which has no ``-m``."""
    if getattr(sys, "frozen", False):
        cli = Path(sys.executable).with_name("fewshot.exe" if sys.platform == "win32" else "fewshot")
        return str(cli), list(args)
    return sys.executable, ["-m", "engine.cli", *args]


class TrainingProcess(QObject):
    event = Signal(dict)  # one parsed event of the current schema
    log = Signal(str)  # a line of the child's stderr (warnings, a traceback) or a note of ours
    ended = Signal(int, str)  # exit code, and the error to show ("" when it ended normally or was stopped)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.proc: QProcess | None = None
        self._out = b""
        self._err_tail: list[str] = []
        self._error_event = ""
        self._stopping = False
        self._escalate = QTimer(self, singleShot=True)
        self._escalate.timeout.connect(self._escalate_stop)

    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def start(self, args: list[str], cwd: str | None = None) -> None:
        if self.running():
            raise RuntimeError("a training run is already going")
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        # A child on every core at normal priority stalled the window past 100 ms on 2 cores;
        # at the engine worker's nice value the scheduler serves the window's thread first.
        env.insert(NICE_ENV, str(WORKER_NICE))
        proc.setProcessEnvironment(env)
        if cwd:
            proc.setWorkingDirectory(cwd)
        proc.readyReadStandardOutput.connect(self._read_out)
        proc.readyReadStandardError.connect(self._read_err)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self.proc, self._out, self._err_tail, self._error_event, self._stopping = proc, b"", [], "", False
        self.log.emit("$ fewshot " + " ".join(args))
        proc.start(*fewshot_command(args))

    def stop(self) -> None:
        """Ask for a clean stop (checkpoint, then exit); escalates if the child does not end."""
        if not self.running() or self._stopping:
            return
        self._stopping = True
        self.proc.write(b"stop\n")
        self._escalate.start(STOP_GRACE_MS)

    def wait(self, ms: int) -> bool:
        """Block until the child ends (quitting the app only)."""
        return self.proc is None or self.proc.waitForFinished(ms)

    def _escalate_stop(self) -> None:
        if not self.running():
            return
        if self._stopping is True:
            self.log.emit("the run did not stop in time; sending it SIGTERM")
            self._stopping = "terminated"
            self.proc.terminate()
            self._escalate.start(KILL_GRACE_MS)
        else:
            self.log.emit("the run still did not end; killing it (the last checkpoint is kept)")
            self.proc.kill()

    def _read_out(self) -> None:
        self._out += bytes(self.proc.readAllStandardOutput())
        *lines, self._out = self._out.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.log.emit(line)
                continue
            if not isinstance(event, dict) or event.get("schema") != SCHEMA_VERSION:
                self.log.emit(f"ignored an event of another schema: {line[:200]}")
                continue
            if event.get("event") == "error":
                self._error_event = str(event.get("message", ""))
            self.event.emit(event)

    def _read_err(self) -> None:
        text = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._err_tail = (self._err_tail + [line])[-20:]
                self.log.emit(line)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.ended.emit(-1, f"the training process could not start ({self.proc.errorString()})")

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._escalate.stop()
        self._read_out()
        stopped = bool(self._stopping)
        if code == 0 or (stopped and code in (130, 143, -15)):
            message = ""
        elif self._error_event:
            message = self._error_event
        elif status == QProcess.ExitStatus.CrashExit and not stopped:
            message = "the training process crashed" + (f": {self._err_tail[-1]}" if self._err_tail else "")
        else:
            last = next((line for line in reversed(self._err_tail) if line.strip()), "")
            message = last.removeprefix("error: ") or f"the training process ended with code {code}"
        self.ended.emit(code, message)
