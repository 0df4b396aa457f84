"""Frozen entry point of the `fewshot` command (PyInstaller runs this file as the program's main)."""
import sys

if __name__ == "__main__":
    from engine.cli import main
    sys.exit(main())
