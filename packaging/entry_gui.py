"""Frozen entry point of `fewshot-gui` (PyInstaller runs this file as the program's main).

The app starts child commands as ``sys.executable -m engine.cli ...`` (the training
panel's `fewshot train`). In a bundle ``sys.executable`` is this program, which has no
``-m``: so those arguments are answered here by the command line instead of the window.
"""
import sys

if __name__ == "__main__":
    if sys.argv[1:3] == ["-m", "engine.cli"]:
        from engine.cli import main as cli_main
        sys.exit(cli_main(sys.argv[3:]))
    from fewshot_gui.app import main
    sys.exit(main())
