"""A trace the sampler drops: callscope leaves it at its root (``callscope._bridge.unsampled``), and the
trace stays whole for the code inside it (application spans, provider requests, threads).

What the other handlers receive is compared with and without callscope on every workload and
mode by ``test_differential.py::test_a_dropped_trace_changes_nothing_either``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableParallel
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import callscope
from callscope._bridge.unsampled import dropped_without_asking
from tests.models import chat_model
from tests.bridge.test_steps import MODES, run_mode

UNSAMPLED_TRACE_ID = 0x5CA1AB1E0000000000000000000000AB


@contextmanager
def unsampled_parent(remote: bool = True) -> Iterator[SpanContext]:
    """The caller's span was sampled out upstream (an HTTP request at 1 % sampling, say)."""
    parent = SpanContext(UNSAMPLED_TRACE_ID, 0xAB, is_remote=remote, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        yield parent
    finally:
        otel_context.detach(token)


def callbacks_received(handler: Any) -> list[str]:
    """Counts every callback LangChain delivers to callscope's span handler from now on."""
    received: list[str] = []
    for name in dir(type(handler)):
        if name.startswith("on_") and callable(getattr(handler, name)):
            method = getattr(handler, name)
            setattr(handler, name, lambda *a, _name=name, _method=method, **k: (received.append(_name), _method(*a, **k))[-1])
    return received


def seen_from_inside(seen: list[tuple[SpanContext, bool]], user_tracer: Any):
    """A step that records the current span and whether an application span started there records."""

    def step(value: Any) -> Any:
        with user_tracer.start_as_current_span("application work") as span:
            seen.append((trace.get_current_span().get_span_context(), span.is_recording()))
        return value

    return RunnableLambda(step)


def nested_chain(step: Any) -> Any:
    inner = RunnableLambda(lambda v: v) | step
    return ChatPromptTemplate.from_template("say {x}") | chat_model() | StrOutputParser() | RunnableParallel(a=inner, b=step)


@pytest.mark.parametrize("mode", MODES)
def test_only_the_root_of_a_dropped_trace_reaches_callscope(mode, instrumented, span_exporter, user_tracer):
    handler = instrumented.handler
    received = callbacks_received(handler)
    seen: list[tuple[SpanContext, bool]] = []
    with unsampled_parent():
        run_mode(nested_chain(seen_from_inside(seen, user_tracer)), {"x": "hi"}, mode)
    roots = 2 if "batch" in mode else 1
    if "batch" in mode:
        # A batched sequence configures its steps' managers outside any step context, where
        # callscope's handler is added again: it meets the marker there and leaves each run.
        assert received.count("on_chain_start") > roots
    else:
        assert received == ["on_chain_start"] * roots
    assert len(seen) == 2 * roots, "the steps did not run"
    assert span_exporter.get_finished_spans() == ()
    assert len(handler.registry) == 0 and not handler.unsampled.leaving


@pytest.mark.parametrize("mode", MODES)
def test_code_inside_a_dropped_trace_stays_in_it(mode, instrumented, span_exporter, user_tracer):
    seen: list[tuple[SpanContext, bool]] = []
    with unsampled_parent():
        run_mode(nested_chain(seen_from_inside(seen, user_tracer)), {"x": "hi"}, mode)
    assert seen
    for context, recording in seen:
        assert context.trace_id == UNSAMPLED_TRACE_ID and not context.trace_flags.sampled
        assert not recording
    assert span_exporter.get_finished_spans() == ()


def test_a_langgraph_node_inside_a_dropped_trace_stays_in_it(instrumented, span_exporter, user_tracer):
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        x: str

    seen: list[tuple[SpanContext, bool]] = []
    step = seen_from_inside(seen, user_tracer)
    graph = StateGraph(State)
    graph.add_node("work", lambda state: {"x": (RunnableLambda(lambda v: v) | step).invoke(state["x"])})
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    received = callbacks_received(instrumented.handler)
    with unsampled_parent():
        graph.compile().invoke({"x": "hi"})
    assert seen and all(context.trace_id == UNSAMPLED_TRACE_ID and not recording for context, recording in seen)
    assert received.count("on_chain_start") <= 2  # the graph, and a node LangGraph configures outside the graph's steps
    assert span_exporter.get_finished_spans() == ()


def test_a_provider_request_in_a_dropped_trace_carries_the_unsampled_parent(instrumented, span_exporter, tracer_provider):
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from tests.models import PROVIDER_URL, ProviderChatModel, provider_reply

    sent: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("traceparent", ""))
        return provider_reply(request)

    client = httpx.Client(transport=httpx.MockTransport(reply), base_url=PROVIDER_URL)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
    try:
        chain = ChatPromptTemplate.from_template("say {x}") | ProviderChatModel(client=client, aclient=None) | StrOutputParser()
        with unsampled_parent():
            chain.invoke({"x": "hi"})
            list(chain.stream({"x": "hi"}))
    finally:
        HTTPXClientInstrumentor.uninstrument_client(client)
        client.close()
    assert len(sent) == 2
    for header in sent:
        # The downstream service is told the trace and that it was not sampled, as the SDK says
        # for any child of an unsampled parent: it drops its part too.
        assert header.startswith(f"00-{UNSAMPLED_TRACE_ID:032x}-") and header.endswith("-00")
    assert span_exporter.get_finished_spans() == ()


def test_a_chain_in_a_thread_langchain_context_never_reached_stays_in_the_dropped_trace(instrumented, span_exporter):
    # The sampler samples every root; only the marker on the step's callbacks says that the chain
    # in the worker thread belongs to a dropped trace, not to a new one.
    inner = RunnableLambda(lambda v: v) | RunnableLambda(lambda v: v)

    def in_a_thread(value: Any, config: RunnableConfig) -> Any:
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(inner.invoke(value, config)))
        worker.start()
        worker.join()
        return results[0]

    with unsampled_parent():
        assert (RunnableLambda(lambda v: v) | RunnableLambda(in_a_thread)).invoke("hi") == "hi"
    assert span_exporter.get_finished_spans() == ()
    assert len(instrumented.handler.registry) == 0


def test_a_sampled_trace_after_a_dropped_one_is_traced_whole(instrumented, span_exporter):
    chain = ChatPromptTemplate.from_template("say {x}") | chat_model() | StrOutputParser() | RunnableLambda(str.upper)
    with unsampled_parent():
        chain.invoke({"x": "hi"})

    async def both() -> None:
        with unsampled_parent():
            await chain.ainvoke({"x": "hi"})
        await chain.ainvoke({"x": "hi"})

    chain.invoke({"x": "hi"})
    asyncio.run(both())
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 10 and len({span.context.trace_id for span in spans}) == 2


def test_a_ratio_sampler_drops_the_trace_once_its_root_span_starts(user_tracer):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=TraceIdRatioBased(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        received = callbacks_received(instrumentor.handler)
        seen: list[tuple[SpanContext, bool]] = []
        nested_chain(seen_from_inside(seen, provider.get_tracer("app"))).invoke({"x": "hi"})
    finally:
        instrumentor.uninstrument()
    assert received == ["on_chain_start"]
    # The root's own (non-recording) span, made by the SDK: one trace id, valid, not sampled.
    assert len({context.trace_id for context, _ in seen}) == 1
    assert all(context.is_valid and not context.trace_flags.sampled and not recording for context, recording in seen)
    assert exporter.get_finished_spans() == ()


class DropsSequencesOnly(Sampler):
    """A sampler that decides by span name: callscope cannot tell what it does to children."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP if name == "RunnableSequence" else Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "DropsSequencesOnly"


def test_with_a_sampler_callscope_cannot_read_every_run_is_offered_to_it():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=DropsSequencesOnly())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    callscope.instrument(provider)
    try:
        (ChatPromptTemplate.from_template("say {x}") | chat_model() | StrOutputParser()).invoke({"x": "hi"})
    finally:
        callscope.uninstrument()
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["ChatPromptTemplate", "StrOutputParser", "chat gpt-test"]


@pytest.fixture
def no_global_provider() -> Iterator[None]:
    from opentelemetry.util._once import Once

    def reset() -> None:
        # The API lets a process set the global provider once; the test needs it unset after.
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None

    reset()
    yield
    reset()


def test_before_the_application_sets_a_provider_traces_are_left_and_once_it_does_they_are_traced(no_global_provider):
    chain = ChatPromptTemplate.from_template("say {x}") | chat_model() | StrOutputParser()
    callscope.instrument()  # the global provider: a proxy that drops every span until one is set
    try:
        received = callbacks_received(callscope.CallscopeInstrumentor().handler)
        chain.invoke({"x": "hi"})
        assert received == ["on_chain_start"]
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        chain.invoke({"x": "hi"})
    finally:
        callscope.uninstrument()
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["ChatPromptTemplate", "RunnableSequence", "StrOutputParser", "chat gpt-test"]


VALID_PARENTS = {
    "none": SpanContext(0, 0, is_remote=False),
    "sampled": SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
    "unsampled local": SpanContext(1, 1, is_remote=False),
    "unsampled remote": SpanContext(1, 1, is_remote=True),
}


@pytest.mark.parametrize(
    ("sampler", "dropped"),
    [
        (ALWAYS_OFF, {"none", "sampled", "unsampled local", "unsampled remote"}),
        (ALWAYS_ON, set()),
        (ParentBased(ALWAYS_ON), {"unsampled local", "unsampled remote"}),
        (ParentBased(ALWAYS_OFF), {"none", "unsampled local", "unsampled remote"}),
        (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), {"unsampled local"}),
        (ParentBased(TraceIdRatioBased(0.5)), {"unsampled local", "unsampled remote"}),
        (TraceIdRatioBased(0.0), set()),  # decided on the trace id the SDK draws at the start
        (DropsSequencesOnly(), set()),
        (None, set()),
    ],
    ids=repr,
)
def test_the_drop_is_told_before_the_start_only_where_it_is_certain(sampler, dropped):
    told = dropped_without_asking(sampler)
    assert {name for name, parent in VALID_PARENTS.items() if told(parent)} == dropped
