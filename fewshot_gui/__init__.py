"""The PySide6 desktop app. Importing it first guards against a PySide6 fault that would
otherwise crash the interpreter after a few minutes of use (see qt_compat.py)."""
from fewshot_gui import qt_compat

qt_compat.guard()
