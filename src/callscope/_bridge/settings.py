"""Settings read once at instrument time: argument > environment variable > default."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from callscope import environment_variables as env
from callscope._exceptions import ConfigError

_log = logging.getLogger("callscope")


class ContentCapture(enum.Enum):
    """Whether message content goes onto spans."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"

    @property
    def on_spans(self) -> bool:
        return self is ContentCapture.SPAN_ONLY


_CONTENT_VALUES = {
    "true": ContentCapture.SPAN_ONLY,
    "span_only": ContentCapture.SPAN_ONLY,
    "span_and_event": ContentCapture.SPAN_ONLY,
    "false": ContentCapture.NO_CONTENT,
    "no_content": ContentCapture.NO_CONTENT,
    # callscope emits no GenAI log events, so "events only" means nothing on spans.
    "event_only": ContentCapture.NO_CONTENT,
}


#: LangGraph's thread, RunnableWithMessageHistory's session, and the generic name.
_CONVERSATION_KEYS = ("thread_id", "session_id", "conversation_id")


@dataclass(frozen=True, slots=True)
class Settings:
    capture_content: ContentCapture = ContentCapture.NO_CONTENT
    max_in_flight_runs: int = 10_000
    run_ttl_seconds: float = 3600.0
    max_attribute_length: int = 8192
    include_internal_handlers: bool = False
    metrics: bool = True
    conversation_keys: tuple[str, ...] = _CONVERSATION_KEYS

    @classmethod
    def resolve(
        cls,
        *,
        capture_content: bool | None = None,
        max_in_flight_runs: int | None = None,
        run_ttl_seconds: float | None = None,
        max_attribute_length: int | None = None,
        include_internal_handlers: bool | None = None,
        metrics: bool | None = None,
        conversation_keys: Sequence[str] | None = None,
    ) -> Settings:
        return cls(
            capture_content=_content_from(capture_content),
            max_in_flight_runs=_positive_int(
                "max_in_flight_runs", max_in_flight_runs, env.CALLSCOPE_MAX_IN_FLIGHT_RUNS, 10_000
            ),
            run_ttl_seconds=_ttl_from(run_ttl_seconds),
            max_attribute_length=_positive_int(
                "max_attribute_length",
                max_attribute_length,
                env.CALLSCOPE_MAX_ATTRIBUTE_LENGTH,
                8192,
                minimum=64,
            ),
            include_internal_handlers=_flag("include_internal_handlers", include_internal_handlers),
            metrics=_metrics_from(metrics),
            conversation_keys=_conversation_keys_from(conversation_keys),
        )


def _content_from(argument: bool | None) -> ContentCapture:
    if argument is not None:
        if not isinstance(argument, bool):
            raise ConfigError(f"capture_content must be True or False, got {argument!r}")
        return ContentCapture.SPAN_ONLY if argument else ContentCapture.NO_CONTENT
    raw = os.environ.get(env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip()
    if not raw:
        return ContentCapture.NO_CONTENT
    mode = _CONTENT_VALUES.get(raw.lower())
    if mode is None:
        _log.warning(
            "%s=%r is not one of %s; message content stays off.",
            env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
            raw,
            ", ".join(sorted(_CONTENT_VALUES)),
        )
        return ContentCapture.NO_CONTENT
    return mode


def _positive_int(name: str, argument: int | None, variable: str, default: int, minimum: int = 1) -> int:
    if argument is not None:
        if isinstance(argument, bool) or not isinstance(argument, int) or argument < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {argument!r}")
        return argument
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        _log.warning("%s=%r is not an integer >= %d; using %d.", variable, raw, minimum, default)
        return default
    return value


def _ttl_from(argument: float | None) -> float:
    if argument is not None:
        if isinstance(argument, bool) or not isinstance(argument, (int, float)) or argument < 0:
            raise ConfigError(
                f"run_ttl_seconds must be a number >= 0 (0 turns the age limit off), got {argument!r}"
            )
        return float(argument)
    raw = os.environ.get(env.CALLSCOPE_RUN_TTL_SECONDS)
    if raw is None or not raw.strip():
        return 3600.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:
        _log.warning("%s=%r is not a number >= 0; using 3600.", env.CALLSCOPE_RUN_TTL_SECONDS, raw)
        return 3600.0
    return value


def _metrics_from(argument: bool | None) -> bool:
    if argument is not None:
        return _flag("metrics", argument)
    raw = os.environ.get(env.CALLSCOPE_METRICS, "").strip().lower()
    if not raw or raw == "true":
        return True
    if raw == "false":
        return False
    _log.warning("%s=%r is not true or false; metrics stay on.", env.CALLSCOPE_METRICS, raw)
    return True


def _conversation_keys_from(argument: Sequence[str] | None) -> tuple[str, ...]:
    if argument is not None:
        if isinstance(argument, str) or not all(isinstance(key, str) and key for key in argument):
            raise ConfigError(f"conversation_keys must be a list of key names, e.g. ['thread_id', 'session_id'], got {argument!r}")
        return tuple(argument)
    raw = os.environ.get(env.CALLSCOPE_CONVERSATION_KEYS, "").strip()
    if not raw:
        return _CONVERSATION_KEYS
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    if not keys:
        _log.warning("%s=%r names no key; using %s.", env.CALLSCOPE_CONVERSATION_KEYS, raw, ",".join(_CONVERSATION_KEYS))
        return _CONVERSATION_KEYS
    return keys


def _flag(name: str, argument: bool | None) -> bool:
    if argument is None:
        return False
    if not isinstance(argument, bool):
        raise ConfigError(f"{name} must be True or False, got {argument!r}")
    return argument
