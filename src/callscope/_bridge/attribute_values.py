"""What one payload value becomes as an attribute value: a short label, the first usable string,
a number within OTLP's range, a mapping or nothing. Names, labels and ids come from user config
and provider responses, so each is bounded, scrubbed and encodable (``serialize``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from callscope._bridge.serialize import bound_text, encodable

#: Span and metric attributes as built here, before the SDK checks them.
Attributes = dict[str, Any]

_MAX_LABEL = 256


def short_label(text: str) -> str:
    """Names and labels come from user config (run_name, metadata): short, never a secret, and
    encodable (a span name that is not fails the whole export batch)."""
    if len(text) > 12:
        # Component and node names repeat on every run and are longer than a credential
        # pattern's shortest match, so each would pay a scrub per run: remembered instead.
        return _scrubbed_label(text) if len(text) <= _MAX_LABEL else bound_text(text, _MAX_LABEL)
    return text if text.isascii() else encodable(text)


@functools.lru_cache(maxsize=1024)
def _scrubbed_label(text: str) -> str:
    return bound_text(text, _MAX_LABEL)


def first_str(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return short_label(value)
    return None


def first_present(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


_INT64_MAX = 2**63 - 1


def first_number(kind: type, *values: Any) -> int | float | None:
    """The first value usable as an attribute of ``kind``: finite, and within int64 for ints
    (OTLP has no bigger integer), so a nonsense parameter is dropped rather than exported."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if kind is int:
            if abs(value) <= _INT64_MAX:
                return int(value)
            continue
        return float(value)
    return None


def bounded_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _INT64_MAX:
        return value
    return 0


def as_mapping(value: Any) -> Mapping[str, Any]:
    # A dict (the usual case) without the Mapping ABC's Python-level instance check.
    return value if type(value) is dict or isinstance(value, Mapping) else {}
