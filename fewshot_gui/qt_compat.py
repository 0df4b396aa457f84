"""A guard against a PySide6 release that takes references away from None and True.

shiboken6/PySide6 6.12.0 (its abi3 wheels) returns None from void methods
(``QPainter.setPen``, ``QLabel.setText``, ``QWidget.update`` ...) and True from
``Signal.emit`` without adding the reference it hands back. From Python 3.12 on,
None and True are immortal and that is harmless. On 3.11 every such call removes
one reference for good, and after a few tens of thousands of calls the
interpreter aborts ("Fatal Python error: none_dealloc: deallocating None").
Painting one grid tile makes about ten of them: scrolling through a few thousand
images, or a long labeling run's progress signals, was enough to kill the app.

When the fault is present, None, True and False get 2**40 extra references, which
is what Python 3.12 does by marking them immortal; the stray decrements (one per
call) can then never free them. The real fix is a PySide6 without the fault
(6.11.3 is fine); the warning in the log says so.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

EXTRA_REFERENCES = 1 << 40  # a million calls a second would need 12 days to use them up
_PROBE_CALLS = 16

applied = False  # whether this process needed (and got) the guard


def drops_references() -> bool:
    """Whether this PySide6 takes a reference from None on each void call."""
    from PySide6.QtCore import QObject
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(_PROBE_CALLS):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - _PROBE_CALLS // 2


def guard() -> None:
    global applied
    if applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    try:
        if not drops_references():
            return
    except ImportError:  # no PySide6 (platform_check.py runs before the virtualenv exists)
        return
    import PySide6
    if hasattr(sys, "gettotalrefcount"):  # a debug build lays objects out differently: do not poke at it
        log.error("PySide6 %s drops references to None on Python %s and this debug build cannot be guarded; "
                  "the app will crash: install another PySide6 (pip install 'pyside6!=6.12.0')",
                  PySide6.__version__, sys.version.split()[0])
        return
    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += EXTRA_REFERENCES
    applied = True
    log.warning("PySide6 %s drops a reference to None on every void call on Python %s; guarded against it. "
                "Install another PySide6 to be rid of it: pip install 'pyside6!=6.12.0'",
                PySide6.__version__, sys.version.split()[0])
