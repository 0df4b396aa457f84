"""Shared test fixtures. The real data sets live in ../shared (never copied into the project)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Exported backbones and dataset caches of a test run stay out of the user's cache.
os.environ.setdefault("FEWSHOT_CACHE_DIR", tempfile.mkdtemp(prefix="fewshot-test-cache-"))
# Project backups (engine/labeling/store/backup.py) likewise.
os.environ.setdefault("FEWSHOT_DATA_DIR", tempfile.mkdtemp(prefix="fewshot-test-data-"))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()  # the suite trains and embeds in-process: as fast as the app itself

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared"))
OMNIGLOT = SHARED / "data" / "omniglot"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (OMNIGLOT / "images_background.zip").is_file():
        pytest.fail(f"shared data missing: {OMNIGLOT} (CI lays out ../shared; the tests never skip for it)")
    return SHARED


@pytest.fixture(scope="session")
def omniglot_root(shared_dir) -> Path:
    return shared_dir / "data" / "omniglot"
