"""LangChain's async LLM start reaches the user's handlers as it does without callscope, and
callscope's span handler still sees it (the broad proof is ``test_differential.py``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler
from langchain_core.language_models import FakeListLLM
from langchain_core.tracers.base import BaseTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import callscope
from callscope._bridge.dispatch import takes_start_from_others


class Rec(BaseCallbackHandler):
    """The issue's ordinary handler: run_inline is False."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.run_ids: list[Any] = []

    def on_llm_start(self, *args: Any, run_id: Any, **kwargs: Any) -> None:
        self.events.append("llm_start")
        self.run_ids.append(run_id)

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("llm_end")


class InlineRec(Rec):
    run_inline = True


class StrictTracer(BaseTracer):
    raise_error = True

    def _persist_run(self, run: Any) -> None:
        pass


async def test_the_issue_example_keeps_the_start(spans) -> None:
    r = Rec()
    await FakeListLLM(responses=["x"]).ainvoke("hi", config={"callbacks": [r]})
    assert r.events == ["llm_start", "llm_end"]
    assert spans.names() == ["text_completion"]


async def test_a_strict_tracer_no_longer_raises_into_the_caller(spans, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert await FakeListLLM(responses=["x"]).ainvoke("hi", config={"callbacks": [StrictTracer()]}) == "x"
    assert not [r for r in caplog.records if "callback" in r.getMessage()]


async def test_a_users_inline_handler_keeps_langchains_own_dispatch(spans) -> None:
    # Without callscope LangChain gives the start to inline handlers only; so it must with it.
    ordinary, inline = Rec(), InlineRec()
    await FakeListLLM(responses=["x"]).ainvoke("hi", config={"callbacks": [ordinary, inline]})
    assert inline.events == ["llm_start", "llm_end"]
    assert ordinary.events == ["llm_end"]
    assert spans.names() == ["text_completion"]


async def test_several_prompts_keep_one_run_id_each_for_every_handler(instrumented, span_exporter) -> None:
    r = Rec()
    manager = AsyncCallbackManager.configure(inheritable_callbacks=[r])
    given = "0190a0a0-0000-7000-8000-000000000001"
    from uuid import UUID

    run_managers = await manager.on_llm_start({"name": "SomeLLM"}, ["a", "b", "c"], run_id=UUID(given))
    assert [m.run_id for m in run_managers] == r.run_ids
    assert r.run_ids[0] == UUID(given) and len(set(r.run_ids)) == 3
    for m in run_managers:
        assert any(getattr(h, "_callscope_internal", False) for h in m.handlers), "callscope must see the run's end"
        await m.on_llm_end(_llm_result())
    assert r.events == ["llm_start"] * 3 + ["llm_end"] * 3
    assert len(span_exporter.get_finished_spans()) == 3


def _llm_result() -> Any:
    from langchain_core.outputs import Generation, LLMResult

    return LLMResult(generations=[[Generation(text="ok")]])


@pytest.mark.parametrize(
    ("inline", "ordinary", "expected"),
    [
        ((), ("r",), False),  # callscope absent: LangChain's method, untouched
        (("callscope",), (), False),  # nobody else to lose the start
        (("callscope",), ("r",), True),
        (("callscope", "user"), ("r",), False),  # the user's inline handler decides, as without callscope
    ],
)
def test_only_callscope_alone_inline_changes_the_dispatch(inline, ordinary, expected) -> None:
    def handler(name: str, run_inline: bool) -> Any:
        h = InlineRec() if run_inline else Rec()
        if name == "callscope":
            h._callscope_internal = True  # type: ignore[attr-defined]
        return h

    handlers = [handler(n, True) for n in inline] + [handler(n, False) for n in ordinary]
    assert takes_start_from_others(handlers) is expected


async def test_an_attached_components_carrier_changes_no_dispatch(tracer_provider) -> None:
    exporter = InMemorySpanExporter()
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        r = Rec()
        llm = callscope.attach(FakeListLLM(responses=["x"]), SimpleSpanProcessor(exporter))
        await llm.ainvoke("hi", config={"callbacks": [r]})
    finally:
        instrumentor.uninstrument()
    assert r.events == ["llm_start", "llm_end"]
    assert [s.name for s in exporter.get_finished_spans()] == ["text_completion"]
