"""Other handlers' failures on the spans (``_failures``): a handler that raises from one callback
is recorded where it happened, LangChain's log line and behaviour stay exactly as they are, and
every span ends whatever a handler does (``raise_error=True`` included)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import callscope
from tests.bridge.test_scope import run_in, summary_of

FAILED = "callscope.handlers.failed"
MANAGER_LOGGER = "langchain_core.callbacks.manager"


class FailsOnLLMEnd(BaseCallbackHandler):
    """Raises from one callback only, with a credential in its message."""

    def __init__(self) -> None:
        self.starts = 0

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        raise RuntimeError("quota store down (key sk-abcdefghijklmnopqrstuvwxyz0123456789)")


class FailsOnChainStart(BaseCallbackHandler):
    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        raise ValueError("no")


class Strict(BaseCallbackHandler):
    raise_error = True

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        raise RuntimeError("strict handler refuses the answer")


class AsyncStrictInline(AsyncCallbackHandler):
    raise_error = True
    run_inline = True

    async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        raise RuntimeError("strict handler refuses the answer")


def failure_events(spans) -> list[tuple[str, dict[str, Any]]]:
    return [(s.name, dict(e.attributes)) for s in spans.all for e in s.events if e.name == "callscope.handler.failed"]


def seed(handler: BaseCallbackHandler):
    return ChatPromptTemplate.from_template("What is 1 + {number}?") | FakeListChatModel(responses=["3"], callbacks=[handler])


@pytest.mark.parametrize("mode", ["invoke", "batch", "ainvoke", "abatch", "stream", "astream", "astream_events"])
def test_a_handler_raising_in_one_callback_is_recorded_on_that_run(mode, spans):
    handler = FailsOnLLMEnd()
    run_in(mode, seed(handler), {"number": "2"}, {})
    assert handler.starts == 1  # the other callbacks still reach it
    ((where, event),) = failure_events(spans)
    chat = spans.one("chat")
    # The model's constructor handler comes after callscope's in LangChain's dispatch, so the chat
    # span has ended when it fails: the event is on the parent, naming the run.
    assert (where, event["callscope.callback.run"]) == ("RunnableSequence", "chat")
    assert chat.parent.span_id == spans.one("RunnableSequence").context.span_id
    assert event["callscope.handler"] == "FailsOnLLMEnd" and event["callscope.callback"] == "on_llm_end"
    assert event["exception.type"] == "RuntimeError"
    assert "sk-abc" not in event["exception.message"] and "[REDACTED]" in event["exception.message"]
    assert spans.one("chat").status.is_ok and all(s.end_time for s in spans.all)
    assert "failed: raised in on_llm_end of chat (RuntimeError) (fix: fix the handler;" in summary_of(spans, "FailsOnLLMEnd")


def test_a_runtime_handler_failing_on_a_run_still_open_marks_that_span(spans):
    FakeListChatModel(responses=["3"]).invoke("hi", {"callbacks": [FailsOnLLMEnd()]})
    chat = spans.one("chat")
    assert tuple(chat.attributes[FAILED]) == ("FailsOnLLMEnd",)
    ((where, event),) = failure_events(spans)
    assert where == "chat" and "callscope.callback.run" not in event


def test_the_failed_marker_is_on_exactly_the_spans_holding_a_failure_event(spans):
    """``callscope.handler.failed=true``, for exact-match search: on the span that got the event,
    also when that is the parent of the run the handler failed on."""
    seed(FailsOnLLMEnd()).invoke({"number": "2"})  # the event lands on RunnableSequence
    FakeListChatModel(responses=["3"]).invoke("hi", {"callbacks": [FailsOnLLMEnd()]})  # on chat
    holding = {s.context.span_id for s in spans.all if any(e.name == "callscope.handler.failed" for e in s.events)}
    marked = {s.context.span_id: s.attributes["callscope.handler.failed"] for s in spans.all if "callscope.handler.failed" in s.attributes}
    assert len(holding) == 2 and marked == dict.fromkeys(holding, True)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "stream"])
def test_a_start_callback_failure_lands_on_the_run_it_started(mode, spans):
    run_in(mode, RunnableLambda(lambda v: v, name="first") | RunnableLambda(lambda v: v, name="second"), 1, {"callbacks": [FailsOnChainStart()]})
    assert sorted(where for where, _ in failure_events(spans)) == ["RunnableSequence", "first", "second"]
    for name in ("RunnableSequence", "first", "second"):
        assert tuple(spans.one(name).attributes[FAILED]) == ("FailsOnChainStart",)


def _log_lines(caplog) -> list[tuple[str, int, str, int, str, str]]:
    return [(r.name, r.levelno, r.funcName, r.lineno, r.pathname, r.getMessage()) for r in caplog.records if r.name == MANAGER_LOGGER]


def test_langchain_logs_exactly_what_it_logs_without_callscope(caplog, tracer_provider):
    caplog.set_level(logging.WARNING, logger=MANAGER_LOGGER)
    seed(FailsOnLLMEnd()).invoke({"number": "2"})
    asyncio.run(seed(FailsOnLLMEnd()).ainvoke({"number": "2"}))
    without = _log_lines(caplog)
    caplog.clear()
    callscope.instrument(tracer_provider)
    try:
        seed(FailsOnLLMEnd()).invoke({"number": "2"})
        asyncio.run(seed(FailsOnLLMEnd()).ainvoke({"number": "2"}))
    finally:
        callscope.uninstrument()
    assert len(without) == 2 and without[0][5].startswith("Error in FailsOnLLMEnd.on_llm_end callback: RuntimeError(")
    assert _log_lines(caplog) == without  # same logger, level, origin (function, line, file) and text


def test_failures_are_recorded_when_langchain_s_logger_is_silenced(spans):
    logger = logging.getLogger("langchain_core")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        FakeListChatModel(responses=["3"]).invoke("hi", {"callbacks": [FailsOnLLMEnd()]})
    finally:
        logger.setLevel(level)
    assert tuple(spans.one("chat").attributes[FAILED]) == ("FailsOnLLMEnd",)


def test_uninstrument_gives_langchain_its_own_logger_back(tracer_provider):
    from langchain_core.callbacks import manager

    original = manager.logger
    callscope.instrument(tracer_provider)
    assert manager.logger is not original
    callscope.uninstrument()
    assert manager.logger is original


# --- raise_error=True: the chain is aborted, and every span still ends -----------------------


def _bare_model_call(mode: str, handler: BaseCallbackHandler) -> Any:
    model = FakeListChatModel(responses=["3"])
    config = {"callbacks": [handler]}
    if mode == "invoke":
        return model.invoke("hi", config)
    if mode == "stream":
        return list(model.stream("hi", config))
    if mode == "batch":
        return model.batch(["hi", "ho"], config)

    async def drive():
        if mode == "ainvoke":
            return await model.ainvoke("hi", config)
        return [c async for c in model.astream("hi", config)]

    return asyncio.run(drive())


# An async handler driven from a sync call never raises into it (LangChain's _run_coros logs and
# swallows), so the async handler is exercised on the async paths only.
@pytest.mark.parametrize(
    ("strict", "mode"),
    [(Strict, "invoke"), (Strict, "stream"), (Strict, "batch"), (Strict, "ainvoke"), (AsyncStrictInline, "ainvoke"), (AsyncStrictInline, "astream")],
)
def test_a_raise_error_handler_raising_in_on_llm_end_no_longer_leaves_the_model_span_open(strict, mode, spans, instrumented):
    with pytest.raises(RuntimeError, match="strict handler refuses"):
        _bare_model_call(mode, strict())
    assert len(instrumented.handler.registry) == 0, "a run is still open"
    chats = spans.named("chat")
    assert chats and all(s.end_time for s in chats)
    if (strict, mode) == (Strict, "ainvoke"):
        # A non-inline handler gets an async end after callscope's inline handler has ended the
        # span, and this run is the root: no span is left to carry the failure (README).
        return
    first = min(chats, key=lambda s: s.start_time)
    assert tuple(first.attributes[FAILED]) == (strict.__name__,)
    events = [e for w, e in failure_events(spans) if w == "chat"]
    assert events and events[0]["callscope.handler.raise_error"] is True


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_a_raise_error_handler_aborting_a_chain_ends_every_span(mode, spans, instrumented):
    with pytest.raises(RuntimeError, match="strict handler refuses"):
        run_in(mode, seed(Strict()), {"number": "2"}, {})
    assert len(instrumented.handler.registry) == 0, "a run is still open"
    assert sorted(s.name for s in spans.all) == ["ChatPromptTemplate", "RunnableSequence", "chat"]
    root = spans.one("RunnableSequence")
    assert not root.status.is_ok  # the handler's exception went through the chain, as without callscope
    assert "failed: raised in on_llm_end of chat (RuntimeError, aborted the run) (fix: fix the handler; with raise_error=True" in summary_of(
        spans, "Strict"
    )


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream"])
def test_langgraph_a_failing_handler_a_filtered_one_and_a_constructor_one_in_a_graph(mode, spans):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        answer: str

    class ModelsOnly(BaseCallbackHandler):
        ignore_chain = True

    flaky = FailsOnLLMEnd()
    model = FakeListChatModel(responses=["3"], callbacks=[flaky])

    def ask(state: State) -> State:
        return {"answer": model.invoke("1 + 2?").content}

    async def aask(state: State) -> State:
        return {"answer": (await model.ainvoke("1 + 2?")).content}

    builder = StateGraph(State)
    builder.add_node("ask", RunnableLambda(ask, afunc=aask))
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    run_in(mode, builder.compile(), {"answer": ""}, {"callbacks": [ModelsOnly()]})
    assert flaky.starts == 1
    (chat,) = spans.named("chat")
    assert [tuple(s.attributes["callscope.handlers.filtered"]) for s in spans.named("ask")] == [("ModelsOnly",)] * 2
    # The model's constructor handler comes after callscope's: the failure names the model's run.
    ((where, event),) = failure_events(spans)
    assert (event["callscope.handler"], event["callscope.callback.run"]) == ("FailsOnLLMEnd", "chat")
    assert where == spans.parent_name(chat)
    summary = summary_of(spans, "FailsOnLLMEnd", root="LangGraph")
    assert "; scope: missed LangGraph, ask ×2 (a constructor callback of chat;" in summary
    assert "; failed: raised in on_llm_end of chat (RuntimeError)" in summary
    assert "; filtered: missed LangGraph, ask ×2 (ignore_chain=True" in summary_of(spans, "ModelsOnly", root="LangGraph")
