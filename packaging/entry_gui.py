"""Frozen entry point of `fewshot-gui` (PyInstaller runs this file as the program's main).
The training panel's child runs the `fewshot` program bundled beside it
(fewshot_gui/training_process.py, fewshot_command)."""
import sys

if __name__ == "__main__":
    from fewshot_gui.app import main
    sys.exit(main())
