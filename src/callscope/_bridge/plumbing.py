"""LangChain's and LangGraph's own handlers, which no user attached: told apart by what they are.

``stream``, ``astream_events``, ``astream_log``, ``with_listeners``, ``RunnableWithMessageHistory``
and LangGraph's message streaming add handlers of their own to carry a feature. They are not
listed among the handlers a run reached unless ``include_internal_handlers=True``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any


def is_plumbing(handler: Any) -> bool:
    """LangChain's and LangGraph's internal handlers: the ones they add themselves to carry a
    feature (``stream``/``astream_events``/``astream_log`` output, ``with_listeners`` and
    ``RunnableWithMessageHistory`` listeners, LangGraph's message streaming and idle timeouts),
    not observers a user attached."""
    return _is_plumbing_class(type(handler))


#: Where LangChain and LangGraph offer the callback handlers meant for users.
_PUBLIC_HANDLER_MODULES = ("langchain_core.callbacks", "langchain_core.tracers", "langgraph.callbacks")
#: LangChain's marker types for handlers that consume a stream's output.
_STREAMING_MARKERS = ("_StreamingCallbackHandler", "_V2StreamingCallbackHandler")


@functools.lru_cache(maxsize=256)
def _is_plumbing_class(cls: type) -> bool:
    # By what the class is, not by a list of names that goes stale: a streaming handler by
    # LangChain's marker base, otherwise any handler class LangChain or LangGraph define but do
    # not offer to users (private, or absent from their public handler modules). A user's own
    # class, even one derived from a LangChain tracer, is never plumbing.
    if any(base.__name__ in _STREAMING_MARKERS and _from_langchain(base.__module__) for base in cls.__mro__):
        return True
    module = cls.__module__
    if not _from_langchain(module):
        return False
    private = cls.__name__.startswith("_") or any(part.startswith("_") for part in module.split("."))
    return private or cls not in _public_handler_classes()


def _from_langchain(module: str) -> bool:
    return module.startswith(("langchain_core.", "langgraph."))


@functools.lru_cache(maxsize=1)
def _public_handler_classes() -> frozenset[type]:
    from langchain_core.callbacks import BaseCallbackHandler

    public: set[type] = set()
    for module_name in _PUBLIC_HANDLER_MODULES:
        # LangGraph only if the application already loaded it: importing it here would load a
        # whole framework into an app that does not use it (its handlers cannot be in play then).
        if module_name.startswith("langgraph") and "langgraph" not in sys.modules:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # a LangGraph too old to have lifecycle callbacks
        for name in getattr(module, "__all__", ()):
            candidate = getattr(module, name, None)
            if isinstance(candidate, type) and issubclass(candidate, BaseCallbackHandler):
                public.add(candidate)
    return frozenset(public)
