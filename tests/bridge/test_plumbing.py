"""LangChain's and LangGraph's internal handlers, told apart from the user's by what they are."""

from __future__ import annotations

from tests.bridge.test_scope import LoggingHandler


def test_internal_tracers_are_recognised_by_what_they_are():
    from langchain_core.callbacks import StdOutCallbackHandler, UsageMetadataCallbackHandler
    from langchain_core.tracers import ConsoleCallbackHandler, LangChainTracer
    from langchain_core.tracers.log_stream import LogStreamCallbackHandler
    from langchain_core.tracers.root_listeners import AsyncRootListenersTracer, RootListenersTracer
    from langgraph.pregel._messages import StreamMessagesHandler

    from callscope._bridge.plumbing import _is_plumbing_class

    for internal in (RootListenersTracer, AsyncRootListenersTracer, LogStreamCallbackHandler, StreamMessagesHandler):
        assert _is_plumbing_class(internal), internal
    # LangChain's own observers a user turns on, and any class of the user's (even a tracer).
    for observer in (StdOutCallbackHandler, UsageMetadataCallbackHandler, ConsoleCallbackHandler, LangChainTracer, LoggingHandler):
        assert not _is_plumbing_class(observer), observer

    class MyTracer(RootListenersTracer):
        pass

    assert not _is_plumbing_class(MyTracer)
