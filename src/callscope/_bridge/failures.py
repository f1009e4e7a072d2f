"""Other handlers' failures: which handler raised from which callback of which run.

LangChain catches an exception a callback handler raises, in ``handle_event`` (sync) and
``_ahandle_event_for_handler`` (async), logs ``Error in Handler.on_llm_end callback: …`` on the
``langchain_core.callbacks.manager`` logger and goes on (or re-raises, for a handler with
``raise_error=True``). That log call is the one place LangChain says a handler failed, and it
happens only when one does, so it is where callscope listens: ``FailureWatch`` puts a thin
stand-in for that module's ``logger`` global whose ``warning`` first reads the failing handler,
the callback name and the run's ``run_id`` from LangChain's dispatching frame and the exception
from ``sys.exc_info()``, then logs exactly as LangChain would have.

Why not a ``logging.Filter``: a filter runs only when the logger is enabled for WARNING, and
silencing "Error in … callback" lines is a common thing to do; a failure must be recorded either
way. Why not a wrapper around ``handle_event``: it would cost every event of every run, and
nothing at all is needed until a handler fails. The real logger is untouched, and the record it
emits is the one LangChain emits (``stacklevel`` points its caller at LangChain's frame).

Not seen: an async handler's coroutine driven from a *sync* dispatch (``_run_coros``): LangChain
logs "Error in callback coroutine" there without the handler or the run, so there is nothing to
attribute it to.

What a failure means (``HandlerFailures``): an event on the failing run's span and a line in its
root's summary. Where the run's span has already ended (LangChain dispatched the callback to
callscope's handler first), the event goes on its parent's span, naming the run; where the run
has not started yet for callscope (a start dispatched to the failing handler first), it waits
for callscope's start. A ``raise_error=True`` handler that raises in an end aborts LangChain's
dispatch before callscope's handler gets the end: that end is delivered here, so the span ends.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any
from uuid import UUID

from callscope._attributes import (
    FAILED_ABORTED,
    FAILED_CALLBACK,
    FAILED_HANDLER,
    FAILED_RUN,
    HANDLER_FAILED_EVENT,
    HANDLER_FAILED_MARK,
    HANDLERS_FAILED,
)
from callscope._bridge.dispatch import MANAGER_MODULE, START_CALLBACKS, is_callscope
from callscope._bridge.fence import Fence
from callscope._bridge.labels import MAX_LABELS_PER_TRACE
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.serialize import bound_text, encodable, safe_str

_log = logging.getLogger("callscope")

#: The functions that dispatch one event to a handler and log its failure, and the frames
#: between the log call and them (the stand-in's own ``warning``).
_DISPATCHERS = ("handle_event", "_ahandle_event_for_handler")
_MAX_FRAMES_UP = 4

_MAX_PENDING_FAILURES = 256
_MAX_FAILURE_EVENTS = 16
_MAX_FAILURE_MESSAGE = 1024
_STARTS = frozenset(START_CALLBACKS)
_ENDS = frozenset(
    {f"on_{kind}_{outcome}" for kind in ("chain", "llm", "tool", "retriever") for outcome in ("end", "error")}
)

OnFailure = Callable[[Any, str, tuple[Any, ...], dict[str, Any], "BaseException | None"], None]


class _WatchedLogger:
    """Stands in for LangChain's callback-manager logger: everything goes to the real logger;
    ``warning`` first tells callscope about the handler failure it reports."""

    __slots__ = ("_callscope_logger", "_callscope_codes", "_callscope_on_failure")

    def __init__(self, logger: logging.Logger, codes: frozenset[CodeType], on_failure: OnFailure) -> None:
        self._callscope_logger = logger
        self._callscope_codes = codes
        self._callscope_on_failure = on_failure

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        try:
            self._notice(sys._getframe(1))
        except Exception:  # never in LangChain's way: its log line below must still be written
            _log.debug("callscope: could not attribute a handler failure", exc_info=True)
        # One frame more than LangChain's own call: the record names LangChain's function and
        # line as its origin, exactly as without callscope.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self._callscope_logger.warning(msg, *args, **kwargs)

    def _notice(self, frame: FrameType | None) -> None:
        for _ in range(_MAX_FRAMES_UP):
            if frame is None:
                return
            if frame.f_code in self._callscope_codes:
                break
            frame = frame.f_back
        else:
            return
        if frame is None:
            return
        variables = frame.f_locals
        handler = variables.get("handler")
        event_name = variables.get("event_name")
        args = variables.get("args")
        kwargs = variables.get("kwargs")
        if handler is None or not isinstance(event_name, str) or not isinstance(kwargs, dict):
            return
        self._callscope_on_failure(handler, event_name, args if isinstance(args, tuple) else (), kwargs, sys.exc_info()[1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._callscope_logger, name)


class FailureWatch:
    """Installs and removes the stand-in logger of LangChain's callback manager module."""

    def __init__(self, on_failure: OnFailure) -> None:
        self._on_failure = on_failure
        self._installed: tuple[Any, Any, _WatchedLogger] | None = None

    def install(self) -> None:
        module = importlib.import_module(MANAGER_MODULE)
        logger = getattr(module, "logger", None)
        codes = frozenset(
            code
            for name in _DISPATCHERS
            if (code := getattr(getattr(module, name, None), "__code__", None)) is not None
        )
        if not isinstance(logger, logging.Logger) or len(codes) != len(_DISPATCHERS):
            _log.warning(
                "callscope: %s has no logger or dispatch functions callscope knows; other handlers' "
                "failures will not be recorded on spans. This LangChain version is newer than callscope knows.",
                MANAGER_MODULE,
            )
            return
        watched = _WatchedLogger(logger, codes, self._on_failure)
        module.logger = watched
        self._installed = (module, logger, watched)

    def uninstall(self) -> None:
        if self._installed is None:
            return
        module, logger, watched = self._installed
        self._installed = None
        if getattr(module, "logger", None) is watched:
            module.logger = logger


@dataclass(slots=True, frozen=True)
class Failure:
    """One handler's exception from one callback, as recorded on spans."""

    handler: Any
    callback: str
    error_type: str
    message: str
    #: The handler has ``raise_error=True``: LangChain re-raises, aborting the dispatch.
    aborts: bool


class HandlerFailures:
    """Records other handlers' failures on the spans of one span handler's runs."""

    def __init__(self, span_handler: Any, registry: RunRegistry, max_attribute_length: int, fence: Fence) -> None:
        self._span_handler = span_handler
        self._registry = registry
        self._limit = min(max_attribute_length, _MAX_FAILURE_MESSAGE)
        self._fence = fence
        #: Failures of other handlers in a run's start callback that LangChain dispatched
        #: before callscope's: applied when callscope's handler sees the start. Empty unless a
        #: handler fails, and bounded (a start callscope never sees leaves its entry behind).
        self.pending: dict[UUID, list[Failure]] = {}

    def record(self, handler: Any, callback: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: BaseException | None) -> None:
        """Another handler raised from ``callback`` (LangChain logged "Error in …"): record it on
        the run's span. Called by ``FailureWatch`` from inside LangChain's dispatch, so it must
        not raise and must not change what LangChain does next."""
        try:
            if is_callscope(handler):
                return
            failure = Failure(
                handler,
                callback,
                encodable(type(error).__qualname__) if error is not None else "Exception",
                bound_text(safe_str(error), self._limit) if error is not None else "",
                getattr(handler, "raise_error", False) is True,
            )
            run_id = kwargs.get("run_id")
            record = self._registry.get(run_id) if isinstance(run_id, UUID) else None
            if record is not None:
                self._apply(record, run_id, failure)
                if failure.aborts and callback in _ENDS:
                    # LangChain re-raises now, so callscope's handler, later in this dispatch,
                    # never gets the end: give it the end it would have got, or the span stays
                    # open. The other handlers get exactly what LangChain gives them.
                    getattr(self._span_handler, callback)(*args, **kwargs)
                return
            if callback in _STARTS and not failure.aborts and isinstance(run_id, UUID):
                # callscope's handler gets this start later in the same dispatch.
                if len(self.pending) >= _MAX_PENDING_FAILURES:
                    self.pending.pop(next(iter(self.pending)), None)
                self.pending.setdefault(run_id, []).append(failure)
                return
            # The run's span has ended (callscope's handler came first in this dispatch), or the
            # run never starts (a raise_error handler aborted its start): its parent's span says.
            parent_run_id = kwargs.get("parent_run_id")
            parent = self._registry.get(parent_run_id)
            if parent is not None:
                self._apply(parent, parent_run_id, failure, of_child=run_id)
        except Exception:
            self._fence.note("recording another handler's failure", "LangChain's handling of it is unaffected")

    def apply_pending(self, record: RunRecord, run_id: UUID) -> None:
        """callscope's handler has seen the start of ``run_id``: record what failed before it."""
        for failure in self.pending.pop(run_id, ()):
            self._apply(record, run_id, failure)

    def _apply(self, record: RunRecord, run_id: Any, failure: Failure, *, of_child: Any = None) -> None:
        """Record ``failure`` on the span of ``record`` (run ``run_id``), or, ``of_child`` being a
        run id, on the span of the parent ``record`` of that run, whose own span had ended."""
        if not record.sampled:
            return
        label = record.scope.label(failure.handler)
        span = record.span
        outcome = failure.error_type + (", aborted the run" if failure.aborts else "")
        run_name = record.name
        if of_child is not None:
            run_name = record.scope.run_named(of_child) or f"a child run of {record.name}"
        record.scope.record_failure(label, failure.callback, run_name, outcome)
        labels, events = record.scope.failed_on(run_id)
        if not span.is_recording() or events >= _MAX_FAILURE_EVENTS:
            return
        attributes: dict[str, Any] = {
            FAILED_HANDLER: label,
            FAILED_CALLBACK: failure.callback,
            "exception.type": failure.error_type,
            "exception.message": failure.message,
        }
        if failure.aborts:
            attributes[FAILED_ABORTED] = True
        if of_child is not None:
            attributes[FAILED_RUN] = run_name
        span.add_event(HANDLER_FAILED_EVENT, attributes)
        span.set_attribute(HANDLER_FAILED_MARK, True)
        if of_child is None and label not in labels and len(labels) < MAX_LABELS_PER_TRACE:
            labels += (label,)
            span.set_attribute(HANDLERS_FAILED, labels)
        record.scope.set_failed_on(run_id, labels, events + 1)
