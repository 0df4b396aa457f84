"""The built bundles in dist/ (`make package`, `make package VARIANT=full|predict`), run as
a user runs them: `fewshot --version`, `fewshot label` on Omniglot drawings with the bundled
model, export and predict, a short training run the way the training panel starts it, and
the app's window under Xvfb opened from a .fewshot file through the installed desktop entry.

A bundle takes minutes to build, so nothing here builds one: each test skips when its
variant is not in dist/ (so `.ci/run` skips them) and fails when it is stale (another
version than pyproject.toml's). Run them after a build:
    nice -n 19 .venv/bin/python -m pytest -q tests/test_packaging_bundle.py
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from labeling_data import examples_dir, extract_omniglot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
APP_VARIANTS = ("cpu", "full")
TITLE = "Few-shot labeler"
GRID = (280, 85, 1100, 800)  # the thumbnail grid of the 1360 x 860 window, on Xvfb's screen


def bundle(variant: str) -> Path:
    folder = ROOT / "dist" / f"fewshot-labeler-{variant}"
    if not (folder / "fewshot").is_file():
        pytest.skip(f"no {variant} bundle in dist/: build it with `make package VARIANT={variant}`")
    return folder


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """A user's environment: no virtualenv, no PYTHONPATH; caches and settings in tmp."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "share"), "XDG_CACHE_HOME": str(home / "cache"), "LANG": "C.UTF-8", **extra}


def run(args: list, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args[0]} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> dict:
    """Five Omniglot characters: one example drawing each, five more each to label."""
    base = tmp_path_factory.mktemp("bundle-drawings")
    chars = extract_omniglot(base / "all", 5, per_character=6)
    to_label = base / "to_label"
    truth = {}
    for key, files in chars.items():
        for f in files[1:]:
            target = to_label / f"{key.replace('/', '_')}_{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
            truth[target.name] = key.replace("/", "_")
    return {"examples": examples_dir(base / "examples", chars), "to_label": to_label, "truth": truth}


@pytest.mark.parametrize("variant", [*APP_VARIANTS, "predict"])
def test_version_is_pyprojects(variant, tmp_path):
    folder = bundle(variant)
    out = run([folder / "fewshot", "--version"], clean_env(tmp_path), timeout=120)
    assert out.stdout.strip() == f"fewshot {VERSION}", f"stale bundle: rebuild with `make package VARIANT={variant}`"
    if variant != "predict":  # the training panel's way in: the `fewshot` its app finds beside itself
        import fewshot_gui.training_process as training_process
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "frozen", True, raising=False)
            mp.setattr(sys, "executable", str(folder / "fewshot-gui"))
            program, _args = training_process.fewshot_command(["--version"])
        assert Path(program) == folder / "fewshot" and (folder / "fewshot-gui").is_file()


@pytest.mark.parametrize("variant", APP_VARIANTS)
def test_each_program_runs_its_own_main_and_the_cpu_build_hides_gpus(variant):
    """What the bootloader runs: the cpu build's hook that hides every GPU (its cuDNN
    kernels are left out) comes before each program's own main script."""
    folder = bundle(variant)
    readers = pytest.importorskip("PyInstaller.archive.readers", reason="PyInstaller reads the programs")
    for program, main in (("fewshot-gui", "entry_gui"), ("fewshot", "entry_cli")):
        scripts = [name for name in readers.CArchiveReader(str(folder / program)).toc
                   if name.startswith(("rth_", "pyi_rth_", "entry_"))]
        assert scripts[-1] == main, scripts
        assert ("rth_cpu_only" in scripts) == (variant == "cpu"), scripts


@pytest.mark.parametrize("variant", APP_VARIANTS)
def test_label_export_predict(variant, tmp_path, drawings):
    folder = bundle(variant)
    env = clean_env(tmp_path)
    project, labels = tmp_path / "chars.fewshot", tmp_path / "labels.csv"
    run([folder / "fewshot", "label", "--project", project, "--examples", drawings["examples"],
         "--images", drawings["to_label"], "--model", "omniglot", "--export-csv", labels], env)
    with labels.open(newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    labeled = [r for name, r in rows.items() if name in drawings["truth"]]
    assert len(labeled) == len(drawings["truth"]) == 25
    accuracy = np.mean([r["label"] == drawings["truth"][Path(r["path"]).name] for r in labeled])
    assert accuracy >= 0.8, f"the bundled omniglot model labeled {accuracy:.0%} right"

    # The adapted model as ONNX (checked against PyTorch inside the bundle), then predict.
    model = tmp_path / "chars.onnx"
    out = run([folder / "fewshot", "export", "--project", project, "--out", model], env)
    assert "parity with PyTorch" in out.stdout
    predictions = tmp_path / "predictions.csv"
    run([folder / "fewshot", "predict", "--model", model, drawings["to_label"], "--csv", predictions], env)
    with predictions.open(newline="") as fh:
        predicted = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    agree = np.mean([predicted[name]["label"] == rows[name]["label"] for name in drawings["truth"]])
    assert agree >= 0.95, f"predict agrees with label on {agree:.0%} of the images"


@pytest.mark.parametrize("variant", APP_VARIANTS)
def test_photos_model_and_training_run(variant, tmp_path, drawings, omniglot_root):
    """The photos model's weights come from a package's data (collected into the bundle);
    training runs through the bundled `fewshot` program, as the training panel starts it
    (fewshot_gui/training_process.py, fewshot_command)."""
    folder = bundle(variant)
    env = clean_env(tmp_path)
    run([folder / "fewshot", "label", "--project", tmp_path / "photos.fewshot", "--examples", drawings["examples"],
         "--images", drawings["to_label"], "--model", "photos", "--json"], env)
    out_dir = tmp_path / "run"
    run([folder / "fewshot", "train", "--dataset", "omniglot", "--data-root", omniglot_root,
         "--split", "small1", "--way", "5", "--shot", "1", "--query", "2", "--episodes", "4", "--log-every", "2",
         "--out", out_dir], env)
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "model.json").is_file()


def test_predict_build_runs_exported_models_without_torch(tmp_path, drawings):
    folder = bundle("predict")
    assert not (folder / "_internal" / "torch").exists() and not (folder / "fewshot-gui").exists()
    # The model comes from this checkout's engine; the bundle must predict what it predicts.
    env = {**os.environ, "FEWSHOT_CACHE_DIR": str(tmp_path / "cache")}
    project, model = tmp_path / "p.fewshot", tmp_path / "m.onnx"
    for args in (["label", "--project", project, "--examples", drawings["examples"], "--images",
                  drawings["to_label"], "--model", "omniglot"], ["export", "--project", project, "--out", model],
                 ["predict", "--model", model, drawings["to_label"], "--csv", tmp_path / "venv.csv"]):
        run([sys.executable, "-m", "engine.cli", *args], env)
    run([folder / "fewshot", "predict", "--model", model, drawings["to_label"], "--csv", tmp_path / "bundle.csv"],
        clean_env(tmp_path))
    read = [list(csv.DictReader((tmp_path / f).open(newline=""))) for f in ("venv.csv", "bundle.csv")]
    assert [(r["path"], r["label"]) for r in read[0]] == [(r["path"], r["label"]) for r in read[1]]
    refused = subprocess.run([folder / "fewshot", "label", "--project", project, "--examples", "x", "--images", "y"],
                             env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.startswith("error:"), refused.stderr


def running(pid: int) -> bool:
    """Whether the process is alive; gio's children are not ours to wait for, so an exited
    one may linger as a zombie until whoever adopted it reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("variant", APP_VARIANTS)
def test_window_opens_a_project_from_the_desktop_entry(variant, tmp_path):
    """Installed with install-linux.sh, a .fewshot file opened through GIO (a file
    manager's double-click) starts the bundled app under Xvfb on that project."""
    from test_gui_xvfb import PROJECT, _project, _require_tools, _settled_screenshot, _start_xvfb, _wait_for_window
    folder = bundle(variant)
    _require_tools()
    if shutil.which("gio") is None:
        pytest.skip("gio is not installed (Debian: libglib2.0-bin)")
    project = _project(tmp_path)
    server, display = _start_xvfb(tmp_path)
    env = clean_env(tmp_path, DISPLAY=display, QT_QPA_PLATFORM="xcb", XDG_RUNTIME_DIR=str(tmp_path / "home"),
                    XDG_DATA_DIRS="/usr/local/share:/usr/share")
    pid = None
    try:
        run([folder / "install-linux.sh"], env, timeout=120)
        with (tmp_path / "app.log").open("w") as log:  # the app inherits these: no pipe that outlives gio
            subprocess.run(["gio", "open", str(project)], env=env, stdout=log, stderr=log, timeout=60, check=True)
        app = subprocess.Popen(["sleep", "infinity"])  # _wait_for_window reports on a process; the app is gio's
        try:
            _wait_for_window(display, f"^{PROJECT} .*{TITLE}$", app, timeout=240)
        finally:
            app.kill()
        found = run(["xdotool", "search", "--onlyvisible", "--name", f"^{PROJECT} .*{TITLE}$", "getwindowpid"],
                    env, timeout=30)
        pid = int(found.stdout.split()[0])
        assert Path(f"/proc/{pid}/exe").resolve() == (folder / "fewshot-gui").resolve()
        wm_class = run(["xdotool", "search", "--onlyvisible", "--classname", "^fewshot-gui$"], env, timeout=30)
        assert wm_class.stdout.split(), "the window's WM_CLASS does not match the entry's StartupWMClass"
        # The drawings' thumbnails (black ink on the tiles) show the project's images were read.
        deadline, ink = time.monotonic() + 120, 0.0
        while ink < 0.02 and time.monotonic() < deadline:
            shot = _settled_screenshot(display)
            ink = (np.asarray(shot.convert("L").crop(GRID)) < 60).mean()
        shot.save(tmp_path / "bundle-window.png")
        window = np.asarray(shot.convert("L").crop((0, 0, 1300, 820)))
        assert (window > 40).mean() > 0.8, f"the window area is mostly black: {tmp_path / 'bundle-window.png'}"
        assert ink >= 0.02, f"no thumbnails drawn within 120 s: {tmp_path / 'bundle-window.png'}"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(pid), "the bundled app did not exit within 60 s of SIGTERM"
        pid = None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        server.terminate()
        server.wait(timeout=10)
