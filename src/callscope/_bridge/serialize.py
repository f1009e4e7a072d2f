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

import functools
import json
import math
import re
from itertools import islice
from collections.abc import Callable, Mapping
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

REDACTED = "[REDACTED]"
_MAX_DEPTH = 8
MAX_ITEMS = 64

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
# The shortest text _SECRET_TEXT can match is "token=" and six characters.
_SHORTEST_SECRET_TEXT = 12
# Payloads repeat the same few keys run after run: their verdicts are kept. Only exact, short
# strings, so the cache stays small and no user __hash__ runs; once full, it stops growing.
_KEY_VERDICTS: dict[str, bool] = {}
_MAX_KEY_VERDICTS = 4096
_MAX_CACHED_KEY = 64
# No cycle check: only plain data built here is encoded, a fresh tree.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False)
# json.dumps and JSONEncoder.encode make a new C encoder on each call, which costs as much as
# encoding a small payload: this one is made once, with _ENCODER's options. Without the C
# accelerator (or if its private signature changes) _ENCODER does the work.
try:
    _C_ENCODE = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False) if c_make_encoder else None
except TypeError:
    _C_ENCODE = None
_TRUNCATED = "…[truncated]"


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
    verdict = _KEY_VERDICTS.get(key) if type(key) is str else None
    if verdict is None:
        verdict = bool(_SECRET_KEY.search(key))
        if type(key) is str and len(key) <= _MAX_CACHED_KEY and len(_KEY_VERDICTS) < _MAX_KEY_VERDICTS:
            _KEY_VERDICTS[key] = verdict
    return verdict


def scrub_text(text: str) -> str:
    """Replace credential-shaped substrings of free text with ``[REDACTED]``."""
    # Every shape _SECRET_TEXT matches holds one of these pieces, and most text holds none: the
    # scans cost a fraction of the pattern, which tries each alternative at every position.
    if "k-" in text or "_" in text or ":" in text or "=" in text or "AIza" in text or "AKIA" in text or "earer" in text:
        return _SECRET_TEXT.sub(REDACTED, text)
    return text


def safe_str(error: BaseException) -> str:
    """``str(error)``, or a placeholder naming its type when its ``__str__`` raises."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def bound_text(text: str, limit: int) -> str:
    """Scrub and cut ``text`` to at most ``limit`` characters, marking the cut; UTF-8 safe."""
    # Cut a margin past the limit before scrubbing: scrubbing a megabyte only to drop most of it
    # is wasted work, and the margin keeps a credential that straddles the limit recognisable.
    head = scrub_text(text[: limit + 256])
    if len(text) <= limit + 256 and len(head) <= limit:
        return encodable(head)
    # Cleaned after the cut: cheaper, and a cut between the halves of a surrogate pair is
    # repaired too. The repair never lengthens the text.
    return encodable(head[: limit - len(_TRUNCATED)]) + _TRUNCATED


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
    return json_text(_convert(value, 0, set(), limit), limit)


def json_text(data: Any, limit: int) -> str:
    """Bounded JSON text of ``data`` that is plain JSON data already: results of ``to_jsonable``
    and ``bound_text``, in dicts with string keys and lists."""
    try:
        text = "".join(_C_ENCODE(data, 0)) if _C_ENCODE is not None else _ENCODER.encode(data)
    except (TypeError, ValueError):  # defensive: data is plain by contract
        text = _ENCODER.encode(f"<{type(data).__name__}>")
    if len(text) > limit:
        text = text[: limit - len(_TRUNCATED)] + _TRUNCATED
    # Surrogates can only sit inside JSON string literals, so replacing them keeps valid JSON.
    return encodable(text)


def _convert(value: Any, depth: int, seen: set[int], limit: int) -> Any:
    cls = type(value)
    # What payloads are mostly made of, by identity; anything else by its class's kind.
    if cls is str:
        return value if len(value) < _SHORTEST_SECRET_TEXT else bound_text(value, limit)
    if value is None or cls is int or cls is bool:
        return value
    if cls is dict:
        convert, nested = _mapping, True
    elif cls is list:
        convert, nested = _sequence, True
    else:
        try:
            convert, nested = _kind(cls)
        except Exception:  # a class its metaclass made unhashable: no ABC check works on it either
            convert, nested = _object, True
    if not nested:
        return convert(value, depth, seen, limit)
    if depth >= _MAX_DEPTH:
        return f"<{cls.__name__}: too deep>"
    marker = id(value)
    if marker in seen:
        return "<cycle>"
    seen.add(marker)
    try:
        return convert(value, depth + 1, seen, limit)
    except Exception:  # a user container that raises, a field that is missing or raises
        return f"<{cls.__name__}>"
    finally:
        seen.discard(marker)


@functools.lru_cache(maxsize=256)
def _kind(cls: type) -> tuple[Callable[[Any, int, set[int], int], Any], bool]:
    """How values of ``cls`` convert, and whether they nest (bounded in depth, checked for
    cycles). Decided once per class: a chain of isinstance checks per value cost more than
    converting most values."""
    if issubclass(cls, (bool, int)):
        return _same, False
    if issubclass(cls, str):
        return _text, False
    if issubclass(cls, float):
        return _float, False
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return _bytes, False
    if cls.__name__ in ("SecretStr", "SecretBytes"):
        return _redacted, False
    if issubclass(cls, Mapping):
        return _mapping, True
    if issubclass(cls, (list, tuple, set, frozenset)):
        return _sequence, True
    return _langchain_form(cls) or _object, True


def _same(value: Any, depth: int, seen: set[int], limit: int) -> Any:
    return value


def _text(value: str, depth: int, seen: set[int], limit: int) -> str:
    return value if len(value) < _SHORTEST_SECRET_TEXT else bound_text(value, limit)


def _float(value: float, depth: int, seen: set[int], limit: int) -> float | str:
    return value if math.isfinite(value) else str(value)


def _bytes(value: Any, depth: int, seen: set[int], limit: int) -> str:
    return f"<{len(value)} bytes>"


def _redacted(value: Any, depth: int, seen: set[int], limit: int) -> str:
    return REDACTED


def _mapping(value: Mapping[Any, Any], depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in islice(value.items(), MAX_ITEMS):
        name = key if isinstance(key, str) else _key_text(key)
        out[name] = REDACTED if is_secret_key(name) else _convert(item, depth, seen, limit)
    if len(value) > MAX_ITEMS:
        out["…"] = f"{len(value) - MAX_ITEMS} more"
    return out


def _sequence(value: Any, depth: int, seen: set[int], limit: int) -> list[Any]:
    # islice: a million-item list must not be copied whole just to keep its first items.
    out = [_convert(item, depth, seen, limit) for item in islice(value, MAX_ITEMS)]
    if len(value) > MAX_ITEMS:
        out.append(f"…{len(value) - MAX_ITEMS} more")
    return out


def _object(value: Any, depth: int, seen: set[int], limit: int) -> Any:
    plain = _message_dict(value)
    if plain is None:
        plain = _pydantic_dump(value)
    return f"<{type(value).__name__}>" if plain is None else _convert(plain, depth, seen, limit)


def _key_text(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    if isinstance(key, bytes):
        return f"<{len(key)} bytes>"
    return f"<{type(key).__name__}>"


def _langchain_form(cls: type) -> Callable[[Any, int, set[int], int], Any] | None:
    """How to convert LangChain's own messages, prompt values and documents straight from their
    fields, or ``None`` for any other class.

    By class names in ``langchain_core`` rather than by import, so serializing imports nothing;
    and not through ``model_dump``, which costs more than the rest of a payload and keeps
    fields nobody reads (``additional_kwargs``, ``response_metadata``).
    """
    names = {base.__name__ for base in cls.__mro__ if base.__module__.startswith("langchain_core.")}
    if "AIMessage" in names:
        return _ai_message
    if "BaseMessage" in names:
        return _message
    if "ChatPromptValue" in names:
        return _chat_prompt_value
    if "StringPromptValue" in names:
        return _string_prompt_value
    if "Document" in names:
        return _document
    return None


def _message(value: Any, depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    return {"type": _convert(value.type, depth, seen, limit), "content": _convert(value.content, depth, seen, limit)}


def _ai_message(value: Any, depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    out = _message(value, depth, seen, limit)
    if value.tool_calls:
        out["tool_calls"] = _convert(value.tool_calls, depth, seen, limit)
    return out


def _chat_prompt_value(value: Any, depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    return {"messages": _convert(value.messages, depth, seen, limit)}


def _string_prompt_value(value: Any, depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    return {"text": _convert(value.text, depth, seen, limit), "type": "StringPromptValue"}


def _document(value: Any, depth: int, seen: set[int], limit: int) -> dict[str, Any]:
    return {"page_content": _convert(value.page_content, depth, seen, limit), "metadata": _convert(value.metadata, depth, seen, limit)}


def _message_dict(value: Any) -> dict[str, Any] | None:
    """Message- and document-like objects from elsewhere: keep what a reader needs, not every
    field."""
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
    return None if dump is None else dump(value, mode="python")
