"""The one list of uncertainty scores a prediction can carry, and what each means.

Every place that stores, sorts, filters, shows, exports or serves a score reads it
from :data:`SCORES`: the store's columns (``images`` and ``predictions``), the sort
keys of ``Project.query``, the CSV and JSON label exports, the ONNX outputs of
``fewshot export`` and ``fewshot predict``, and the app's sort box, filters and
detail pane. A new score appears everywhere by adding one entry here (and a method
that computes it).

This module is plain data, with no torch import: the store and ``fewshot predict``
(onnxruntime only) read it too.
"""
from __future__ import annotations

from dataclasses import dataclass

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Score:
    """One uncertainty score.

    ``name``: its key everywhere (``Prediction.scores``, store column, CSV/JSON field,
    ONNX output). ``label``: a short name for people. ``description``: what it means,
    in a sentence a person without the maths can use. ``uncertain_when``: ``higher`` or
    ``lower`` values are the more uncertain. ``required``: every method provides it.
    ``onnx_output``: exported models give it as an output when the method provides it
    (margin is not: anyone can compute it from ``probs``). ``sort_label``: the sort
    box's entry that puts the most uncertain first. ``flag``: the value past which an
    image counts as uncertain in this score's sense (the grid's filter "flagged:
    ``flag_label``" shows those), or None.
    """

    name: str
    label: str
    description: str
    uncertain_when: str
    required: bool
    onnx_output: bool
    sort_label: str
    flag: float | None = None
    flag_label: str = ""

    @property
    def flag_rule(self) -> str:
        """The flag's threshold in words, e.g. "Margin below 0.2"."""
        return f"{self.label} {'above' if self.descending else 'below'} {self.flag:g}" if self.flag is not None else ""

    @property
    def descending(self) -> bool:
        """Sorting most-uncertain-first is descending for this score."""
        return self.uncertain_when == HIGHER


SCORES: tuple[Score, ...] = (
    Score("entropy", "Uncertainty",
          "How spread the probabilities are over the classes (predictive entropy, in nats): 0 when one class "
          "has them all, log(number of classes) when every class is equally likely.",
          HIGHER, required=True, onnx_output=True, sort_label="Most uncertain first",
          flag=0.6931, flag_label="unsure images"),
    Score("margin", "Margin",
          "The lead of the most likely class over the second: near 0 is a close call between two classes, "
          "1 is no contest.",
          LOWER, required=True, onnx_output=False, sort_label="Closest call first",
          flag=0.2, flag_label="close calls"),
    Score("ood_score", "Unusualness",
          "How far the image is from the nearest class, measured against how far that class's own examples "
          "are from it: about 1 is typical, several times that looks like none of the classes.",
          HIGHER, required=False, onnx_output=True, sort_label="Most unusual first",
          flag=2.0, flag_label="unusual images"),
    Score("mutual_info", "Few examples like it",
          "The part of the uncertainty that more examples would remove (epistemic; mutual information "
          "between the label and the model's weights): high for images unlike the examples so far.",
          HIGHER, required=False, onnx_output=True, sort_label="Most informative first",
          flag=0.1, flag_label="images unlike the examples"),
    Score("aleatoric", "Ambiguous image",
          "The part of the uncertainty that comes from the image itself (aleatoric; the expected entropy "
          "under the model's posterior): high for images that look like two classes at once.",
          HIGHER, required=False, onnx_output=True, sort_label="Most ambiguous first",
          flag=0.5, flag_label="ambiguous images"),
)

BY_NAME: dict[str, Score] = {}
NAMES: tuple[str, ...] = ()
REQUIRED: tuple[str, ...] = ()
ONNX_OUTPUTS: tuple[str, ...] = ()
#: What an older name of a sort key means (``ood`` was the store's first name for ``ood_score``).
SORT_ALIASES = {"ood": "ood_score"}


def _derive() -> None:
    global BY_NAME, NAMES, REQUIRED, ONNX_OUTPUTS
    BY_NAME = {s.name: s for s in SCORES}
    NAMES = tuple(s.name for s in SCORES)
    REQUIRED = tuple(s.name for s in SCORES if s.required)
    ONNX_OUTPUTS = tuple(s.name for s in SCORES if s.onnx_output)


def add_score(new: Score) -> None:
    """Register a score at run time (a plug-in; tests). Modules that copy the registry
    when they are imported (the store's columns, the exports) see it only if they are
    imported after this call: adding an entry to :data:`SCORES` in this file is the way."""
    global SCORES
    if new.name in BY_NAME or not new.name.isidentifier():
        raise ValueError(f"score name {new.name!r} is taken or not an identifier")
    SCORES = (*SCORES, new)
    _derive()


_derive()


def flag_condition(name: str, column: str | None = None) -> str:
    """SQL condition for an image flagged by score ``name`` (on ``column``, default the name)."""
    s = score(name)
    if s.flag is None:
        raise KeyError(f"score {name!r} has no flag threshold")
    return f"{column or s.name} {'>' if s.uncertain_when == HIGHER else '<'} {s.flag!r}"


def score(name: str) -> Score:
    try:
        return BY_NAME[SORT_ALIASES.get(name, name)]
    except KeyError:
        raise KeyError(f"unknown score {name!r}; known: {', '.join(NAMES)}") from None


def check_provided(provided: tuple[str, ...] | list[str], who: str) -> tuple[str, ...]:
    """A method's list of scores, checked against the registry: known names, every
    required one present. Returns it in registry order."""
    unknown = [n for n in provided if n not in BY_NAME]
    if unknown:
        raise ValueError(f"{who} provides unknown scores {unknown}; add them to engine/methods/uncertainty.py")
    missing = [n for n in REQUIRED if n not in provided]
    if missing:
        raise ValueError(f"{who} must provide {missing}: every method gives {', '.join(REQUIRED)}")
    return tuple(n for n in NAMES if n in provided)
