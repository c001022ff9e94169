"""Prediction confidence: where a catalog entry says it lives in the model's JSON answer, and how many of
an answer's predictions fall below `confidence_threshold`.

The deployment guard and the standing LowConfidenceAlarm read the counts (metrics `Predictions` and
`LowConfidencePredictions`), so a model that still answers 200 but has grown unsure is caught too.

A path is a small dotted path, not JSONPath: keys separated by dots, `[*]` after a key (or at the start)
for every item of a list, an optional leading `$`. Each value the path reaches is one prediction. It is
compiled once, when the catalog loads; reading it per answer walks plain dicts and lists (no library, so
neither the import nor the walk shows in the sync path's budget).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice.settings import get_settings

if TYPE_CHECKING:  # the catalog imports this module: no import back at run time
    from sluice.catalog.models import ConfidenceSpec

# A compiled path: a key to look up, or EACH for every item of a list.
EACH = None
Steps = tuple[str | None, ...]

_SEGMENT = re.compile(r"(?P<key>[^.\[\]*\s]+)?(?P<each>(?:\[\*\])*)")


def compile_path(path: str) -> Steps:
    """`predictions[*].probabilities` -> ("predictions", EACH, "probabilities"); ValueError saying why not."""
    body = path.removeprefix("$")
    if body.startswith("."):
        body = body[1:]
    if not body:
        raise ValueError("the path is empty")
    steps: list[str | None] = []
    for position, segment in enumerate(body.split(".")):
        match = _SEGMENT.fullmatch(segment)
        # Only the first segment may be a bare [*] (an answer that is itself a list).
        if not segment or match is None or (match["key"] is None and position > 0):
            raise ValueError(
                f"segment {segment!r} is not a key optionally followed by [*] (e.g. 'predictions[*].probabilities')"
            )
        if match["key"]:
            steps.append(match["key"])
        steps.extend([EACH] * (len(match["each"]) // 3))
    return tuple(steps)


def values_at(document: Any, steps: Steps) -> list[Any]:
    """Every value the path reaches; a missing key or a non-list under [*] simply reaches nothing."""
    current = [document]
    for step in steps:
        if step is EACH:
            current = [item for value in current if isinstance(value, list) for item in value]
        else:
            current = [value[step] for value in current if isinstance(value, dict) and step in value]
    return current


def _number(value: Any) -> float | None:
    # bool is an int subclass, but true/false is not a probability; NaN and infinities are not readings.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def max_probability(value: Any) -> float | None:
    """The highest number of a probabilities map ({"setosa": 0.98, ...}) or list ([0.98, ...])."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    numbers = [number for number in map(_number, items) if number is not None]
    return max(numbers) if numbers else None


READERS: dict[str, Callable[[Any], float | None]] = {"max_probability": max_probability, "score": _number}


@dataclass(frozen=True, slots=True)
class ConfidenceCount:
    predictions: int  # predictions whose confidence could be read
    low: int  # of those, below the threshold


def count(steps: Steps, kind: str, output: Any, threshold: float) -> ConfidenceCount | None:
    """None when no prediction's confidence could be read: such an answer adds nothing to the metrics."""
    read = READERS[kind]
    confidences = [c for c in map(read, values_at(output, steps)) if c is not None]
    if not confidences:
        return None
    return ConfidenceCount(len(confidences), sum(1 for c in confidences if c < threshold))


def count_answer(spec: ConfidenceSpec | None, output: Any) -> ConfidenceCount | None:
    """The counts of one parsed JSON answer of a model whose catalog entry declares its confidence."""
    if spec is None:
        return None
    return count(spec.steps, spec.kind, output, get_settings().confidence_threshold)
