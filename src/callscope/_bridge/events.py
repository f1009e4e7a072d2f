"""What a run records while it is open: custom events, with the handlers they reached, and retries.

``dispatch_custom_event`` from inside a step reaches the handlers of that step's callback
manager: the event goes on the dispatching run's span with those handlers' labels, classified
as a run's are (``scope``). A retried run (``with_retry``) gets a ``retry`` event per attempt.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from callscope._attributes import EVENT_DATA, RETRY_ATTEMPT
from callscope._bridge import scope as _scope
from callscope._bridge.runs import RunRecord
from callscope._bridge.serialize import bound_text, to_json

_MAX_EVENT_NAME = 256


def record_custom_event(record: RunRecord, run_id: UUID, name: Any, data: Any, content_limit: int | None) -> None:
    """Put a custom event dispatched by run ``run_id`` on its span; its payload only when
    ``content_limit`` (the attribute bound, with content capture on) is given."""
    attributes: dict[str, Any] = {}
    manager = _scope.step_manager()
    if manager is not None and getattr(manager, "parent_run_id", None) == run_id:
        record.scope.handlers_of(manager, "custom_event").add_to(attributes)
    if content_limit is not None:
        attributes[EVENT_DATA] = to_json(data, content_limit)
    record.span.add_event(bound_text(name, _MAX_EVENT_NAME) if isinstance(name, str) else "custom_event", attributes)


def record_retry(record: RunRecord, retry_state: Any) -> None:
    attempt = getattr(retry_state, "attempt_number", None)
    record.span.add_event("retry", {RETRY_ATTEMPT: attempt} if isinstance(attempt, int) else None)
