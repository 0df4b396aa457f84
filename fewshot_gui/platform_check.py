"""Before `make run` starts the app on Linux: are the system libraries Qt's xcb plugin needs there?

A fresh Debian or Ubuntu lacks some of them, and Qt then fails with the
unhelpful "Could not load the Qt platform plugin xcb". We look first and
print the one apt-get line that fixes it.
"""
from __future__ import annotations

import os
import subprocess
import sys

# soname -> Debian/Ubuntu package
XCB_LIBS = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def missing_libraries() -> list[str]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # cannot tell; let Qt speak for itself
    return [pkg for so, pkg in XCB_LIBS.items() if so not in out]


def main() -> int:
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") not in ("xcb", ""):
        return 0
    missing = missing_libraries()
    if missing:
        print("Qt needs system libraries that this machine lacks. Install them with:\n", file=sys.stderr)
        print(f"    sudo apt-get install -y {' '.join(missing)}\n", file=sys.stderr)
        print("then run `make run` again.", file=sys.stderr)
        return 1
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        print("No display found (DISPLAY is unset): run from a desktop session, or under Xvfb.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
