"""Safe, bounded serialization of whatever LangChain hands a callback.

Payloads are user data: they can be cyclic, huge, contain bytes or NaN, have non-string keys,
hold objects whose ``__repr__`` raises, or carry credentials. Everything exported goes through
here, so the rules live in one place:

- never call ``repr``/``str`` on arbitrary objects (a client's repr can print its API key);
  unknown objects become ``<ClassName>``;
- values under secret-looking keys, ``SecretStr`` values and key-shaped strings are redacted;
- depth, item count and final length are bounded;
- every string that leaves here encodes as UTF-8. A Python ``str`` may hold lone surrogates
  (JSON decoders make them from a split emoji in a streamed chunk or a provider response), and
  one such string in a span name or status makes the OTLP encoder fail the *whole batch* the
  span is exported with: they become U+FFFD, the rest of the text is kept.
"""

from __future__ import annotations

import json
import math
import re
from itertools import islice
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
_MAX_DEPTH = 8
_MAX_ITEMS = 64

# Keys whose values are credentials. Anchored so that "max_tokens" or "input_tokens" are not hit.
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:api[_\-]?key|secret|secret[_\-]?key|password|passwd|access[_\-]?token|"
    r"refresh[_\-]?token|auth[_\-]?token|id[_\-]?token|session[_\-]?token|bearer|authorization|"
    r"credentials?|private[_\-]?key|client[_\-]?secret|cookie)$",
    re.IGNORECASE,
)
# Credential shapes inside free text: provider keys, bearer headers, key=value assignments.
_SECRET_TEXT = re.compile(
    r"(?:\b(?:sk|pk|rk)-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_\-]{12,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|\b(?:ghp|gho|ghs|github_pat|xox[abpr])_[A-Za-z0-9_]{12,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\b[Bb]earer\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?i:(?:proxy-)?authorization|x-api-key|api[_\-]?key|secret|password|passwd|token|cookie)"
    r"(?:['\"]?\s*[:=]\s*['\"]?)(?:(?i:basic|bearer|token|digest)\s+)?[^\s'\",}]{6,})"
)


def encodable(text: str) -> str:
    """``text`` if it encodes as UTF-8, else a copy with each lone surrogate replaced by U+FFFD
    (a surrogate *pair* becomes the character it stands for).

    Almost every string is clean, so the check is what costs: ``isascii()`` reads a flag CPython
    keeps on the string, and only non-ASCII text pays an encode attempt.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def scrub_text(text: str) -> str:
    """Replace credential-shaped substrings of free text with ``[REDACTED]``."""
    return _SECRET_TEXT.sub(REDACTED, text)


def bound_text(text: str, limit: int) -> str:
    """Scrub and cut ``text`` to at most ``limit`` characters, marking the cut; UTF-8 safe."""
    # Cut a margin past the limit before scrubbing: scrubbing a megabyte only to drop most of it
    # is wasted work, and the margin keeps a credential that straddles the limit recognisable.
    head = scrub_text(text[: limit + 256])
    if len(text) <= limit + 256 and len(head) <= limit:
        return encodable(head)
    marker = "…[truncated]"
    # Cleaned after the cut: cheaper, and a cut between the halves of a surrogate pair is
    # repaired too. The repair never lengthens the text.
    return encodable(head[: limit - len(marker)]) + marker


def to_jsonable(value: Any, string_limit: int = 65536) -> Any:
    """Turn ``value`` into plain JSON data (dict/list/str/int/float/bool/None), safely.

    Strings are scrubbed of credentials and cut to ``string_limit`` characters each.
    """
    return _convert(value, 0, set(), string_limit)


def to_json(value: Any, limit: int) -> str:
    """Bounded JSON text of ``value``: the form content attributes are exported in.

    Each string inside is cut first, so the result stays valid JSON in all but extreme cases
    (many long strings); only then is the whole text cut, and the cut is marked.
    """
    try:
        text = json.dumps(to_jsonable(value, limit), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # defensive: _convert only yields JSON-safe data
        text = json.dumps(f"<{type(value).__name__}>")
    if len(text) > limit:
        marker = "…[truncated]"
        text = text[: limit - len(marker)] + marker
    # Surrogates can only sit inside JSON string literals, so replacing them keeps valid JSON.
    return encodable(text)


def _convert(value: Any, depth: int, seen: set[int], limit: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return bound_text(value, limit) if len(value) > 16 else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if type(value).__name__ in ("SecretStr", "SecretBytes"):
        return REDACTED
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__name__}: too deep>"
    marker = id(value)
    if marker in seen:
        return "<cycle>"
    seen.add(marker)
    try:
        return _convert_container(value, depth, seen, limit)
    finally:
        seen.discard(marker)


def _convert_container(value: Any, depth: int, seen: set[int], limit: int) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(_safe_items(value)):
            if i >= _MAX_ITEMS:
                out["…"] = f"{len(value) - _MAX_ITEMS} more"
                break
            name = key if isinstance(key, str) else _key_text(key)
            out[name] = REDACTED if is_secret_key(name) else _convert(item, depth + 1, seen, limit)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        # islice: a million-item list must not be copied whole just to keep its first items.
        out_list = [_convert(item, depth + 1, seen, limit) for item in islice(value, _MAX_ITEMS)]
        if len(value) > _MAX_ITEMS:
            out_list.append(f"…{len(value) - _MAX_ITEMS} more")
        return out_list
    message = _message_dict(value)
    if message is not None:
        return _convert(message, depth + 1, seen, limit)
    dumped = _pydantic_dump(value)
    if dumped is not None:
        return _convert(dumped, depth + 1, seen, limit)
    return f"<{type(value).__name__}>"


def _safe_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return list(islice(mapping.items(), _MAX_ITEMS + 1))
    except Exception:  # a user Mapping whose items() raises
        return []


def _key_text(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    if isinstance(key, bytes):
        return f"<{len(key)} bytes>"
    return f"<{type(key).__name__}>"


def _message_dict(value: Any) -> dict[str, Any] | None:
    """LangChain messages and documents: keep what a reader needs, not every pydantic field."""
    kind = getattr(value, "type", None)
    content = getattr(value, "content", None)
    if isinstance(kind, str) and content is not None and hasattr(value, "additional_kwargs"):
        out: dict[str, Any] = {"type": kind, "content": content}
        tool_calls = getattr(value, "tool_calls", None)
        if tool_calls:
            out["tool_calls"] = tool_calls
        return out
    page_content = getattr(value, "page_content", None)
    if isinstance(page_content, str):
        return {"page_content": page_content, "metadata": getattr(value, "metadata", None)}
    return None


def _pydantic_dump(value: Any) -> Any:
    dump = getattr(type(value), "model_dump", None)
    if dump is None:
        return None
    try:
        return dump(value, mode="python")
    except Exception:
        return None
