"""Before `make run` starts the app on Linux: are the system libraries Qt's xcb plugin needs there?

A fresh Debian or Ubuntu lacks some of them, and Qt then fails with the
unhelpful "Could not load the Qt platform plugin xcb". We look first and
print the one apt-get line that fixes it. ``--packages`` prints every package
of the list (``.ci/run`` installs them, with Xvfb, for the test that runs the
real window). Plain Python on purpose: it runs before the virtualenv exists.
"""
from __future__ import annotations

import os
import shutil
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
    # /sbin is not on a normal user's PATH on Debian, and ldconfig lives there.
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # cannot tell; let Qt speak for itself
    return [pkg for so, pkg in XCB_LIBS.items() if so not in out]


def install_line(packages: list[str]) -> str:
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y {' '.join(packages)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--packages"]:
        print(" ".join(dict.fromkeys(XCB_LIBS.values())))
        return 0
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") not in ("xcb", ""):
        return 0
    missing = missing_libraries()
    if missing:
        print("Qt needs system libraries that this machine lacks. Install them with:\n", file=sys.stderr)
        print(f"    {install_line(missing)}\n", file=sys.stderr)
        print("then run `make run` again.", file=sys.stderr)
        return 1
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        print("No display found (DISPLAY is unset): run from a desktop session, or under Xvfb.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
