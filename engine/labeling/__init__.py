"""Labeling projects: the project store and folder scanning.

- ``store/``: :class:`Project`, the SQLite project file and every action on it (a package by concern);
- ``schema.py``: its tables and migrations; ``records.py``: the records it returns;
- ``scan.py``: finding and fingerprinting image files; ``history.py``: undo/redo;
- ``lock.py``: one process per project.
"""
from engine.labeling.records import AddReport, ClassInfo, ImageRecord, PredictionRow
from engine.labeling.store import PALETTE, SUFFIX, Project

__all__ = ["AddReport", "ClassInfo", "ImageRecord", "PALETTE", "PredictionRow", "Project", "SUFFIX"]
