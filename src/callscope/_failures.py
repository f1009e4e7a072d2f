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
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

_log = logging.getLogger("callscope")

_MANAGER_MODULE = "langchain_core.callbacks.manager"
#: The functions that dispatch one event to a handler and log its failure, and the frames
#: between the log call and them (the stand-in's own ``warning``).
_DISPATCHERS = ("handle_event", "_ahandle_event_for_handler")
_MAX_FRAMES_UP = 4

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
        module = importlib.import_module(_MANAGER_MODULE)
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
                _MANAGER_MODULE,
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
