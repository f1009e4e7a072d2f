"""callscope's own failures: fenced, counted, and logged a bounded number of times.

Whatever goes wrong inside a callback body is logged and swallowed here, because an exception
from a handler would surface in LangChain's log ("Error in … callback") or, with
``raise_error``, in the user's chain. The tests and the differential harness read ``count``: a
run that reaches the fence is a callscope defect, even when the user never notices.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

_log = logging.getLogger("callscope")

_MAX_LOGGED = 10
_F = TypeVar("_F", bound=Callable[..., Any])


class Fence:
    """Counts callscope's internal failures and logs the first few with their traceback."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def note(self, what: str, outcome: str, *, level: int = logging.WARNING) -> None:
        """Called from an ``except`` block: ``what`` failed, ``outcome`` is what it cost."""
        self.count += 1
        if self.count <= _MAX_LOGGED:
            _log.log(level, "callscope: %s failed; %s", what, outcome, exc_info=True)


def absorb(method: _F) -> _F:
    """Run a callback body of an object with a ``fence``; note and swallow anything it raises."""

    @functools.wraps(method)
    def fenced(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            self.fence.note(method.__name__, "the chain is unaffected", level=logging.ERROR)

    return fenced  # type: ignore[return-value]
