"""The selected image's label history in words, for the detail pane.

The engine records actions as codes (``engine.labeling.history.LabelEvent``); a
person reads "Labelled cat by you, 10:42" or "Undone: made an example of dog".
The codes are spelled out here rather than imported, so this module (and the
window) still loads without the engine.
"""
from __future__ import annotations

import html
from datetime import datetime
from typing import Any

SHOWN = 12  # newest events listed; older ones are counted


def _name(event: Any) -> str:
    return f"<b>{html.escape(event.class_name)}</b>" if event.class_name else "a class since deleted"


def _phrase(event: Any) -> str:
    """What was done, as it reads after "Undone:" too."""
    action = event.action
    if action == "label":
        return f"labelled {_name(event)}"
    if action == "accept":
        return f"prediction {_name(event)} accepted"
    if action == "none":
        return "marked <i>none of these classes</i>"
    if action == "clear":
        return f"label {_name(event)} cleared" if event.class_id is not None else "label cleared"
    if action == "example":
        return f"made an example of {_name(event)}"
    if action == "unexample":
        return f"removed as an example of {_name(event)}"
    if action == "class_deleted":
        return f"class {_name(event)} deleted, and its label with it"
    return html.escape(action.replace("_", " "))  # written by a newer app version


def when(timestamp: float, now: datetime | None = None) -> str:
    """Local time: the clock time today, the date before that."""
    t = datetime.fromtimestamp(timestamp)
    now = now or datetime.now()
    if t.date() == now.date():
        return t.strftime("%H:%M")
    if t.year == now.year:
        return f"{t.day} {t.strftime('%b %H:%M')}"
    return f"{t.day} {t.strftime('%b %Y %H:%M')}"


def event_text(event: Any, now: datetime | None = None) -> str:
    phrase = _phrase(event)
    if event.source == "undo":
        text = f"Undone: {phrase}"
    elif event.source == "redo":
        text = f"Redone: {phrase}"
    else:
        text = phrase[0].upper() + phrase[1:]
        if event.action in ("label", "accept", "none", "clear"):
            text += " by you"
    return f"{text}, {when(event.time, now)}"


def history_html(events: list[Any], now: datetime | None = None) -> str:
    """Newest first, one line each; the oldest beyond ``SHOWN`` are counted."""
    if not events:
        return "<i>Nobody has labelled this image or made it an example yet.</i>"
    newest = list(reversed(events))
    lines = [event_text(e, now) for e in newest[:SHOWN]]
    if len(newest) > SHOWN:
        lines.append(f"<i>and {len(newest) - SHOWN} earlier</i>")
    return "<br>".join(lines)
