"""The events a meta-training run reports: one JSON object per line (docs/TRAINING.md).

Every event carries ``schema`` (the version below) and ``event`` (its kind). A
reader must ignore fields it does not know; a change that removes or renames a
field, or changes a field's meaning, bumps the version.

Kinds and their fields (all numbers are plain JSON numbers):

- ``preparing``: stage ("embedding" or "clustering", CACTUs only), done, total.
- ``start``: episode (the outer step the run starts from, > 0 on resume), episodes
  (the run's total), device, classes (training classes), world_size, config, out.
- ``episode``: episode, episodes, loss and acc (means over the steps since the last
  such event), lr, seconds_per_episode, episodes_per_s, eta_s (seconds to the end at
  that pace), wait_fraction (share of those seconds spent waiting for episode data).
- ``validation``: episode, accuracy, ci95, ece, nll, brier (and their ci95s), way, shot,
  episodes, split, seconds, best (whether it is the best so far), best_accuracy.
- ``done`` / ``stopped``: episode, best (the best validation, or null), out.
- ``error``: message (what went wrong and what to do), kind (the error's type name).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

SCHEMA_VERSION = 1
#: Written into every run folder, so a past run's curves can be drawn again.
EVENTS_FILE = "events.jsonl"
#: The configuration a run started with (``fewshot train --resume DIR`` alone goes on from it).
RUN_FILE = "run.json"

Events = Callable[[dict], None]


def stamped(event: dict) -> dict:
    """The event with the schema version first (readers check it before anything else)."""
    return {"schema": SCHEMA_VERSION, **{k: v for k, v in event.items() if k != "schema"}}


class EventLog:
    """Appends every event to ``folder/events.jsonl`` and passes it on."""

    def __init__(self, folder: Path, forward: Events | None = None):
        self.path = Path(folder) / EVENTS_FILE
        self.forward = forward

    def __call__(self, event: dict) -> None:
        event = stamped(event)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if self.forward is not None:
            self.forward(event)


def read_events(folder: str | Path) -> list[dict]:
    """The events a run folder recorded, oldest first; lines that do not parse (a run
    killed mid-write) or come from a newer schema are left out."""
    path = Path(folder) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("schema") == SCHEMA_VERSION and "event" in event:
                events.append(event)
    return events
