"""The packaging files (packaging/, assets/icons/) without building anything: the desktop
entry and AppStream metadata pass freedesktop's validators, the .fewshot type really opens
in the app through GIO (what file managers use), the icons match their SVG, the version has
one source, and the rules that shrink the bundle keep what the loader needs.
tests/test_packaging_bundle.py checks the built bundles themselves."""
from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"


def load_packaging_script(name: str):
    """packaging/<name>.py as a module. packaging/ is no package (its name would shadow the
    PyPI one PyInstaller needs), so each file is loaded by path; build.py then finds
    variants.py under the name it imports it by."""
    spec = importlib.util.spec_from_file_location(name if name == "variants" else f"fewshot_packaging_{name}",
                                                  PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


variants = load_packaging_script("variants")
build = load_packaging_script("build")
render_icons = load_packaging_script("render_icons")

ID = variants.APP_ID
LINUX = PACKAGING / "linux"
DESKTOP = LINUX / f"{ID}.desktop"
METAINFO = LINUX / f"{ID}.metainfo.xml"
MIME = LINUX / f"{ID}.mime.xml"
MIME_TYPE = "application/x-fewshot-project"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP)
    return parser["Desktop Entry"]


def test_desktop_file_validate_passes():
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian: apt-get install desktop-file-utils)")
    out = subprocess.run([tool, str(DESKTOP)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "error" not in out.stdout, out.stdout + out.stderr


def test_appstreamcli_validate_passes():
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli is not installed (Debian: apt-get install appstream)")
    out = subprocess.run([tool, "validate", "--no-net", str(METAINFO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "W:" not in out.stdout and "E:" not in out.stdout, out.stdout


def test_entry_metadata_and_mime_type_agree():
    from fewshot_gui.app import DESKTOP_ID
    entry = desktop_entry()
    scripts = pyproject()["project"]["scripts"]
    assert DESKTOP_ID == ID
    assert entry["Exec"] == "fewshot-gui %f" and "fewshot-gui" in scripts  # one file, opened by main()
    assert entry["Icon"] == ID and entry["MimeType"] == f"{MIME_TYPE};"
    component = ET.parse(METAINFO).getroot()
    assert component.findtext("id") == ID
    assert component.findtext("launchable") == DESKTOP.name
    assert {b.text for b in component.iter("binary")} == set(scripts)
    assert component.findtext("provides/mediatype") == MIME_TYPE
    assert component.find("releases/release").get("version") == pyproject()["project"]["version"]
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    mime = ET.parse(MIME).getroot().find("m:mime-type", ns)
    assert mime.get("type") == MIME_TYPE
    assert [g.get("pattern") for g in mime.findall("m:glob", ns)] == ["*.fewshot"]


def _fake_bundle(folder: Path, opened: Path) -> Path:
    """A bundle folder as build.py lays it out, whose fewshot-gui writes down its arguments."""
    folder.mkdir(parents=True)
    for program in ("fewshot-gui", "fewshot"):
        (folder / program).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{opened}"\n')
        (folder / program).chmod(0o755)
    build.add_desktop_files(folder)
    return folder


def test_a_fewshot_file_opens_in_the_app_through_gio(tmp_path):
    """What a double-click in a file manager does: GIO finds the file's type from the
    installed MIME database, the default application for it, and runs its Exec line."""
    tools = ("gio", "update-mime-database", "update-desktop-database")
    if any(shutil.which(t) is None for t in tools):
        pytest.skip(f"needs {', '.join(tools)} (Debian: libglib2.0-bin, shared-mime-info, desktop-file-utils)")
    from engine.labeling import Project
    opened = tmp_path / "opened.txt"
    bundle = _fake_bundle(tmp_path / "unpacked here" / "fewshot-labeler-cpu", opened)
    home = tmp_path / "home"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_DATA_HOME": str(home / "share"),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_DIRS": "/usr/local/share:/usr/share"}
    out = subprocess.run([str(bundle / "install-linux.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (home / ".local" / "bin" / "fewshot").resolve() == bundle / "fewshot"
    project = tmp_path / "my labels.fewshot"
    with Project.create(project) as p:
        p.add_class("a")
    info = subprocess.run(["gio", "info", "-a", "standard::content-type", str(project)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert f"standard::content-type: {MIME_TYPE}" in info.stdout, info.stdout + info.stderr
    subprocess.run(["gio", "open", str(project)], env=env, check=True, timeout=60)
    for _ in range(100):
        if opened.exists() and opened.read_text():
            break
        time.sleep(0.1)
    assert opened.read_text().splitlines() == [str(project)]

    out = subprocess.run([str(bundle / "install-linux.sh"), "--uninstall"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (home / "share" / "applications" / DESKTOP.name).exists()
    assert not (home / ".local" / "bin" / "fewshot").exists()
    info = subprocess.run(["gio", "info", "-a", "standard::content-type", str(project)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert MIME_TYPE not in info.stdout


def test_install_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    script = tmp_path / "install-linux.sh"
    shutil.copy(LINUX / "install-linux.sh", script)
    out = subprocess.run(["sh", str(script)], env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "unpacked" in out.stderr


@pytest.mark.parametrize("name", ["a&b", "a|b", "100%"])
def test_install_refuses_a_path_its_desktop_entry_cannot_carry(tmp_path, name):
    """sed would read & and | in the path as its own syntax, and % is a field code in Exec."""
    bundle = _fake_bundle(tmp_path / name / "fewshot-labeler-cpu", tmp_path / "opened.txt")
    home = tmp_path / "home"
    out = subprocess.run([str(bundle / "install-linux.sh")], env={"PATH": os.environ["PATH"], "HOME": str(home)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "move the folder" in out.stderr
    assert not (home / ".local").exists()


def test_icons_are_the_svg_rendered_at_every_size(qapp, tmp_path):
    fresh = render_icons.render(tmp_path)
    assert [p.name for p in fresh] == [render_icons.png_path(s).name for s in render_icons.SIZES]
    for size, new in zip(render_icons.SIZES, fresh):
        committed = Image.open(render_icons.png_path(size))
        assert committed.size == (size, size) and committed.mode == "RGBA"
        diff = np.abs(np.asarray(committed, dtype=int) - np.asarray(Image.open(new).convert("RGBA"), dtype=int))
        assert diff.max() <= 8, f"{render_icons.png_path(size).name} is stale: run packaging/render_icons.py"


def test_version_has_one_source(tmp_path):
    """pyproject.toml's version, through the installed metadata, is what --version and
    Help > About (engine.version, tests/test_gui_review_and_grid.py) say."""
    version = pyproject()["project"]["version"]
    from engine.version import __version__
    assert __version__ == version
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"fewshot {version}", out.stdout + out.stderr


def test_frozen_entry_points_dispatch(tmp_path, monkeypatch):
    """The bundle's programs, run from source: the training panel's child is the `fewshot`
    program beside the app in a frozen build (the app itself has no `-m`), and the predict
    build refuses commands that need PyTorch."""
    from fewshot_gui.training_process import fewshot_command
    assert fewshot_command(["train", "--help"]) == (sys.executable, ["-m", "engine.cli", "train", "--help"])
    app = tmp_path / "fewshot-labeler-cpu" / "fewshot-gui"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app))
    program, args = fewshot_command(["train", "--help"])
    assert Path(program).parent == app.parent and Path(program).stem == "fewshot" and args == ["train", "--help"]
    monkeypatch.undo()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(PACKAGING / "entry_predict.py"), "label", "--project", "p.fewshot"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "'fewshot label' needs PyTorch" in out.stderr


def test_pruning_keeps_what_the_loader_needs():
    """Of the CUDA libraries only the link-time closure stays (a CPU variant), all stay in
    the full one; Qt Quick goes unless something kept links to it."""
    links = {"/s/_C.so": ["libtorch.so"], "/s/libtorch.so": ["libtorch_cuda.so", "libtorch_cpu.so"],
             "/s/libtorch_cuda.so": ["libcublas.so.13", "libcudnn.so.9"], "/s/libcudnn.so.9": [],
             "/s/libcublas.so.13": ["libcublasLt.so.13"], "/s/QtWidgets.so": ["libQt6Widgets.so.6"]}
    binaries = [("torch/_C.so", "/s/_C.so", "EXTENSION"), ("torch/lib/libtorch.so", "/s/libtorch.so", "BINARY"),
                ("torch/lib/libtorch_cuda.so", "/s/libtorch_cuda.so", "BINARY"),
                ("torch/lib/libtorch_cuda_linalg.so", "/s/linalg.so", "BINARY"),
                ("nvidia/cu13/lib/libcublas.so.13", "/s/libcublas.so.13", "BINARY"),
                ("nvidia/cu13/lib/libcublasLt.so.13", "/s/libcublasLt.so.13", "BINARY"),
                ("nvidia/cudnn/lib/libcudnn.so.9", "/s/libcudnn.so.9", "BINARY"),
                ("nvidia/cudnn/lib/libcudnn_cnn.so.9", "/s/libcudnn_cnn.so.9", "BINARY"),
                ("PySide6/QtWidgets.so", "/s/QtWidgets.so", "EXTENSION"),
                ("PySide6/Qt/lib/libQt6Quick.so.6", "/s/quick.so", "BINARY"),
                ("PySide6/Qt/plugins/imageformats/libqpdf.so", "/s/qpdf.so", "BINARY")]

    def needed(path):
        return links.get(path, [])

    kept, dropped = variants.prune_binaries(variants.VARIANTS["cpu"], binaries, needed)
    assert {Path(d).name for d, _, _ in dropped} == {"libtorch_cuda_linalg.so", "libcudnn_cnn.so.9",
                                                    "libQt6Quick.so.6"}
    assert {Path(d).name for d, _, _ in kept} >= {"libtorch_cuda.so", "libcublasLt.so.13", "libcudnn.so.9"}
    assert all("qpdf" not in d for d, _, _ in kept)
    kept, dropped = variants.prune_binaries(variants.VARIANTS["full"], binaries, needed)
    assert {Path(d).name for d, _, _ in dropped} == {"libQt6Quick.so.6"}
    links["/s/QtWidgets.so"].append("libQt6Quick.so.6")
    kept, _ = variants.prune_binaries(variants.VARIANTS["full"], binaries, needed)
    assert "PySide6/Qt/lib/libQt6Quick.so.6" in {d for d, _, _ in kept}


def test_size_report_sorts_files_into_parts(tmp_path, monkeypatch):
    folder = tmp_path / "fewshot-labeler-cpu"
    files = {"fewshot": 10, "_internal/nvidia/cu13/lib/libcublasLt.so.13": 500, "_internal/torch/lib/libtorch_cpu.so": 300,
             "_internal/torch/lib/libtorch_cuda.so": 200, "_internal/PySide6/Qt/lib/libQt6Core.so.6": 40,
             "_internal/assets/models/omniglot/model.safetensors": 5, "_internal/base_library.zip": 7}
    for rel, size in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x" * size)
    (folder / "_internal" / "link.so").symlink_to(folder / "_internal" / "torch" / "lib" / "libtorch_cpu.so")
    sizes = build.measure(folder)
    assert sizes["total"] == sum(files.values())
    assert sizes["parts"] == {build.CUDA_PART: 700, "PyTorch (CPU code)": 300, "Qt (PySide6, shiboken6)": 40,
                              build.REST_PART: 17, "models (omniglot, omniglot-maml, photos weights)": 5}
    assert list(sizes["parts"])[0] == build.CUDA_PART  # largest first
    lines = build.report("cpu", sizes).splitlines()
    assert [line.split("MiB  ", 1)[1] for line in lines[1:6]] == list(sizes["parts"])  # a line per part, in order
    # The CUDA part per library, the small ones summed (the README's table of what cpu keeps).
    assert sizes["cuda_libraries"] == {"libcublasLt": 500, "libtorch_cuda": 200}
    monkeypatch.setattr(build, "CUDA_LIBRARY_LINE", 300)
    lines = build.report("cpu", sizes).splitlines()
    assert lines[6].strip() == "the CUDA libraries, each:"
    assert [line.split("MiB", 1)[1].strip() for line in lines[7:]] == ["libcublasLt", "the rest (libtorch_cuda)"]


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit, match="unknown build variant 'tiny'"):
        variants.variant("tiny")
