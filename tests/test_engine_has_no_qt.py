"""The engine must stay headless: importing all of it loads no Qt module."""
import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import engine
for m in pkgutil.walk_packages(engine.__path__, 'engine.'):
    importlib.import_module(m.name)
qt = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6', 'qtpy', 'pytestqt'))
print(len([n for n in sys.modules if n.startswith('engine')]), qt)
assert not qt, qt
"""


def test_importing_every_engine_module_loads_no_qt():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    modules = int(out.stdout.split()[0])
    assert modules > 10, "the walk should have imported the whole engine"


TORCH_FREE = """
import sys
import engine.data.pixels, engine.data.decode, engine.data.preprocessing, engine.labeling.store, engine.labeling.scan
from engine.data import load_array, IMAGE_EXTENSIONS
heavy = sorted(n for n in ('torch', 'torchvision') if n in sys.modules)
assert not heavy, heavy
print('ok')
"""


def test_pixels_and_the_store_load_without_torch():
    # `fewshot predict` (onnxruntime only) and the app's first window rely on this.
    out = subprocess.run([sys.executable, "-c", TORCH_FREE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
