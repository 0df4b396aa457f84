"""Exports: labels (CSV, JSON, class folders) in ``labels.py``."""
from engine.export.labels import ExportReport, export_csv, export_folders, export_json

__all__ = ["ExportReport", "export_csv", "export_folders", "export_json"]
