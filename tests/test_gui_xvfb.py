"""The one test of the real window: the app as `make run` starts it, on Qt's xcb plugin,
under a virtual X server (Xvfb). The other GUI tests use the offscreen plugin, which
loads none of the system libraries a desktop needs; this one would catch a missing one.

It opens a small project of Omniglot drawings given on the command line, waits until
the window is mapped and the project is on screen, takes a screenshot of the X screen
(kept beside the test's temporary files), checks it shows a window, then sends SIGTERM
and expects a clean exit. `.ci/run` installs Xvfb, xdotool and the xcb libraries.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from labeling_data import extract_omniglot
from PIL import Image, ImageGrab, features

from engine.labeling import PredictionRow, Project
from fewshot_gui import platform_check

ROOT = Path(__file__).resolve().parents[1]
SCREEN = (1400, 900)
TITLE = "Few-shot labeler"
PROJECT = "xvfb-check"


def _require_tools() -> None:
    """Fail, never skip: without these the real-window check silently never runs."""
    lacking = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    libs = platform_check.missing_libraries()
    if lacking or libs:
        packages = [{"Xvfb": "xvfb"}.get(t, t) for t in lacking] + libs
        pytest.fail(f"the real-window test needs {', '.join(lacking + libs)}: run .ci/run (it installs them) "
                    f"or `{platform_check.install_line(packages)}`")
    if not features.check("xcb"):
        pytest.fail("this Pillow was built without XCB support, so it cannot screenshot the X server; "
                    "install the Pillow wheel from PyPI (pip install --force-reinstall pillow)")


def _start_xvfb(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on the first free display: -displayfd makes the server pick it and tell us."""
    read_fd, write_fd = os.pipe()
    log = (tmp_path / "xvfb.log").open("w")
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                               "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stdout=log, stderr=log,
                              start_new_session=True)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + 30
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.5)
        if ready:
            chunk = os.read(read_fd, 16)
            if not chunk:
                break
            number += chunk
    os.close(read_fd)
    if not number.strip().isdigit():
        server.kill()
        pytest.fail(f"Xvfb did not start: {(tmp_path / 'xvfb.log').read_text()[-2000:]}")
    return server, f":{int(number)}"


def _project(tmp_path: Path) -> Path:
    """Three Omniglot characters, one example each, and the model's guesses for 21 drawings."""
    files = extract_omniglot(tmp_path / "drawings", 3, per_character=8)
    chars = list(files)
    path = tmp_path / f"{PROJECT}.fewshot"
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        ids = [p.add_class(f"letter {k + 1}") for k in range(3)]
        model = p.set_model("omniglot", {})  # the app's default model: nothing else to load
        rows = []
        for k, char in enumerate(chars):
            p.add_examples(ids[k], files[char][:1])
            for image_id in p.add_images(files[char][1:]).added:
                probs = rng.dirichlet(np.ones(3) * 0.5)
                probs[k] += 1.0
                probs /= probs.sum()
                rows.append(PredictionRow(image_id, probs, ids, float(-(probs * np.log(probs)).sum()),
                                          float(np.sort(probs)[-1] - np.sort(probs)[-2])))
        p.write_predictions(model, rows)
    return path


def _wait_for_window(display: str, pattern: str, app: subprocess.Popen, timeout: float) -> None:
    """Until a visible window whose title matches ``pattern`` is mapped (xdotool --sync)."""
    try:
        subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", pattern],
                       env={**os.environ, "DISPLAY": display}, capture_output=True, timeout=timeout, check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        status = "still running" if app.poll() is None else f"exited with {app.returncode}"
        pytest.fail(f"no window titled {pattern!r} within {timeout:.0f} s (the app {status})")


def _keys(display: str, keys: list[str]) -> None:
    """Key presses to the focused window, as the X server delivers a user's."""
    subprocess.run(["xdotool", "key", "--delay", "60", *keys], env={**os.environ, "DISPLAY": display},
                   check=True, timeout=30)


def _settled_screenshot(display: str, timeout: float = 30) -> Image.Image:
    """The screen once two grabs half a second apart agree (thumbnails have loaded)."""
    deadline = time.monotonic() + timeout
    last = ImageGrab.grab(xdisplay=display)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        shot = ImageGrab.grab(xdisplay=display)
        if shot.tobytes() == last.tobytes():
            return shot
        last = shot
    return last


def test_real_window_under_xvfb(tmp_path):
    _require_tools()
    project = _project(tmp_path)
    with Project.open(project) as p:
        first_examples = {image_id for image_id, _ in p.examples()}
    server, display = _start_xvfb(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_CONFIG_HOME": str(home),
           "XDG_DATA_HOME": str(home), "XDG_RUNTIME_DIR": str(home), "DISPLAY": display, "QT_QPA_PLATFORM": "xcb",
           "FEWSHOT_SHARED": os.environ.get("FEWSHOT_SHARED", "")}
    log_path = tmp_path / "app.log"
    app = None
    try:
        with log_path.open("w") as log:
            app = subprocess.Popen([sys.executable, "-m", "fewshot_gui.app", str(project)], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_window(display, TITLE, app, timeout=60)
        # The title names the project once the engine has loaded (a worker job) and opened it.
        _wait_for_window(display, f"^{PROJECT} .*{TITLE}$", app, timeout=180)
        shot = _settled_screenshot(display)
        out = tmp_path / "xvfb-window.png"
        shot.save(out)
        print(f"screenshot of the real window: {out}")

        assert shot.size == SCREEN
        colors = shot.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 50, f"the screen looks blank ({len(colors or [])} colours): {out}"
        # Xvfb's empty screen is black; the window (1360 x 860 at the top left) is not.
        window = np.asarray(shot.convert("L").crop((0, 0, 1300, 820)))
        assert (window > 40).mean() > 0.8, f"the window area is mostly black: {out}"

        # Keyboard only, as a user would: review mode, the class chooser, a name, Enter.
        # A popup that does not take focus on a real X server would drop the typed name.
        # No window manager runs here to give the window focus, so the test gives it.
        subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{PROJECT} .*{TITLE}$", "windowfocus",
                        "--sync"], env={**os.environ, "DISPLAY": display}, check=True, timeout=30)
        _keys(display, ["ctrl+r"])
        time.sleep(1.5)
        _keys(display, ["slash"])
        time.sleep(0.5)
        subprocess.run(["xdotool", "type", "--delay", "40", "letter 3"], env={**os.environ, "DISPLAY": display},
                       check=True, timeout=30)
        time.sleep(0.3)
        _keys(display, ["Return"])
        time.sleep(1.0)

        os.kill(app.pid, signal.SIGTERM)
        try:
            code = app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the app did not exit within 60 s of SIGTERM")
        assert code == 0, f"the app exited with {code} after SIGTERM:\n{log_path.read_text()[-3000:]}"
        # A clean exit closed the project: its lock is released and the window saved its settings.
        assert list(home.rglob("*.conf")), "no settings written: the window was not closed cleanly"
        with Project.open(project) as p:
            letter3 = p.class_by_name("letter 3").id
            human = [r for r in p.iter_images() if r.label_source == "human" and r.id not in first_examples]
        assert [r.label_class_id for r in human] == [letter3], \
            f"the chooser did not label the image under review as 'letter 3' (a correction, so an example): {human}"
    finally:
        if app is not None and app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_platform_check_names_the_packages_to_install(monkeypatch, capsys):
    """`make run`'s check before starting: missing xcb libraries give one apt-get line."""
    found = "\n".join(f"\t{so} (libc6,x86-64) => /usr/lib/{so}" for so in platform_check.XCB_LIBS
                      if so not in ("libxcb-icccm.so.4", "libEGL.so.1"))

    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=found, stderr="")

    monkeypatch.setattr(platform_check.subprocess, "run", fake_run)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(platform_check.sys, "platform", "linux")
    assert platform_check.main([]) == 1
    err = capsys.readouterr().err
    assert "apt-get install -y libxcb-icccm4 libegl1\n" in err, err
    assert platform_check.main(["--packages"]) == 0
    assert "libxcb-cursor0" in capsys.readouterr().out.split()
    monkeypatch.setattr(platform_check.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout="\n".join(platform_check.XCB_LIBS), stderr=""))
    monkeypatch.setenv("DISPLAY", ":5")
    assert platform_check.main([]) == 0
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert platform_check.main([]) == 1
    assert "No display found" in capsys.readouterr().err


def test_platform_check_runs_without_the_virtualenv():
    """.ci/run asks it for the package list with the system Python, before PySide6 is
    installed anywhere: -S leaves site-packages (and so PySide6) out."""
    out = subprocess.run([sys.executable, "-S", "-m", "fewshot_gui.platform_check", "--packages"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "libxcb-cursor0" in out.stdout.split()
