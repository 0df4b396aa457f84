"""What a prediction means, in a few words a person reads at a glance.

The numbers (entropy, margin, unusualness ...) stay one click away in the detail pane;
this is the line shown first. Thresholds are the registry's flags
(engine.methods.uncertainty), the same the grid's "Only close calls" filter uses.
"""
from __future__ import annotations

from typing import Any

from engine.methods import uncertainty

CONFIDENT = 0.9
PROBABLY = 0.6


def flagged(rec: Any, name: str) -> bool:
    value = rec.scores.get(name) if rec.scores else None
    score = uncertainty.BY_NAME.get(name)
    if value is None or score is None or score.flag is None:
        return False
    return value > score.flag if score.descending else value < score.flag


def top_two(rec: Any, classes: dict[int, Any]) -> list[str]:
    probs = sorted((rec.probs or {}).items(), key=lambda kv: -kv[1])
    return [classes[cid].name for cid, _p in probs[:2] if cid in classes]


def plain_summary(rec: Any, classes: dict[int, Any]) -> str:
    """One line: how sure the model is about this image, and why not, if it is not."""
    if rec is None or rec.status == "error" or rec.confidence is None or not rec.probs:
        return ""
    best = top_two(rec, classes)
    if not best:
        return ""
    if flagged(rec, "ood_score"):
        return f"Looks like none of these classes (closest: {best[0]})"
    if len(rec.probs) == 1:  # one class with examples: its 100% is no choice at all
        return f"Only {best[0]} has examples so far: add examples of another class to tell them apart"
    if flagged(rec, "mutual_info"):
        return f"Few examples like this one: probably {best[0]}, but more examples would settle it"
    if len(best) > 1 and flagged(rec, "margin"):
        return f"Unsure between {best[0]} and {best[1]}"
    if flagged(rec, "aleatoric"):
        return f"Ambiguous image: it looks like more than one class (most likely {best[0]})"
    if rec.confidence >= CONFIDENT:
        return f"Confident: {best[0]}"
    if rec.confidence >= PROBABLY:
        return f"Probably {best[0]}"
    return f"Unsure: most likely {best[0]}, but not by much"


PROVISIONAL_TIP = ("Provisional: this model adapts its whole network to your examples, so after a correction the "
                   "predictions shown come from a quick approximation until every image has been run through the "
                   "adapted network again (the progress bar shows it; the next correction restarts it).")


UNLABELED_TIP = ("Not labeled yet: images no label run has reached (one was cancelled, or there were no "
                 "examples yet). Corrections update the others; Labeling > Label Images (Ctrl+L) labels these.")


def counts_text(n: dict[str, int]) -> tuple[str, str]:
    """The status bar's count line for the project's counts by status, and its tooltip."""
    provisional = bool(n.get("provisional"))
    unlabeled = n.get("unlabeled", 0)
    text = (f"{n['total']:,} images \u00b7 {n['confirmed']:,} confirmed \u00b7 {n['predicted']:,} predicted"
            + (" (provisional)" if provisional else "") + (f" \u00b7 {unlabeled:,} not labeled yet" if unlabeled else "")
            + (f" \u00b7 {n['error']:,} unreadable" if n["error"] else ""))
    tips = [PROVISIONAL_TIP] * provisional + [UNLABELED_TIP] * bool(unlabeled)
    return text, "\n\n".join(tips)
