"""callscope never changes what LangChain does: every workload runs twice in one test, without
callscope and with it, and everything the user can observe must be identical (see
``tests/differential.py`` for what is recorded and how ids and timing are normalised).

The matrix: every workload below × every execution mode × four kinds of handler sets (ordinary
handlers; the user's own inline handlers; handlers whose failures reach the caller, non-inline
and inline), each placed at run time, in the constructors and through ``with_config``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import cycle
from typing import Any

import pytest
from langchain_core.callbacks import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models import FakeListLLM, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableParallel
from langchain_core.tools import StructuredTool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

import callscope
from tests.differential import HANDLER_KINDS, MODES, Handlers, Observation, observe
from tests.models import StreamingEchoLLM, LookupAgentModel

pytestmark = [
    pytest.mark.filterwarnings("ignore:astream_events version='v1' is deprecated"),
    pytest.mark.filterwarnings("ignore:astream_log is deprecated"),
    pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning"),
]

Workload = Callable[[Handlers], tuple[Runnable, list[Any]]]


def _chat(h: Handlers) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=cycle([AIMessage("Paris is the capital")]), callbacks=h.constructor)


def _llm(h: Handlers) -> FakeListLLM:
    return FakeListLLM(responses=["four"], callbacks=h.constructor)


def chain(h: Handlers):
    prompt = ChatPromptTemplate.from_template("Capital of {country}?")
    parser = StrOutputParser().with_config(callbacks=h.bound)
    return prompt | _chat(h) | parser | RunnableLambda(str.upper), [{"country": "France"}, {"country": "Peru"}]


def prompt(h: Handlers):
    return ChatPromptTemplate.from_template("Capital of {country}?").with_config(callbacks=h.bound), [{"country": "France"}]


def chat_model(h: Handlers):
    return _chat(h).with_config(callbacks=h.bound), ["hi", "hello"]


def attached_chat_model(h: Handlers):
    """``callscope.attach`` adds a carrier among the model's constructor callbacks; the baseline
    is the same chain without it."""
    model = _chat(h)
    if callscope.CallscopeInstrumentor().is_instrumented_by_opentelemetry:
        callscope.attach(model, SimpleSpanProcessor(InMemorySpanExporter()))
    return ChatPromptTemplate.from_template("{q}") | model, [{"q": "hi"}, {"q": "ho"}]


def text_llm(h: Handlers):
    return _llm(h).with_config(callbacks=h.bound), ["what is 2 + 2?", "and 3 + 1?"]


def streaming_text_llm(h: Handlers):
    return StreamingEchoLLM(callbacks=h.constructor).with_config(callbacks=h.bound), ["say hello", "say bye"]


def llm_chain(h: Handlers):
    template = PromptTemplate.from_template("Q: {question}")
    return template | StreamingEchoLLM(callbacks=h.constructor) | _llm(h).with_config(callbacks=h.bound), [{"question": "why"}]


def parser(h: Handlers):
    return StrOutputParser().with_config(callbacks=h.bound), [AIMessage("parsed"), AIMessage("again")]


def lambda_with_nested_runs(h: Handlers):
    llm = _llm(h)

    def step(question: str, config: RunnableConfig) -> str:
        dispatch_custom_event("progress", {"question": question}, config=config)
        return llm.invoke(question, config)

    return RunnableLambda(step).with_config(callbacks=h.bound) | RunnableLambda(len), ["one", "two"]


def tool(h: Handlers):
    llm = _llm(h)

    def lookup(city: str, config: RunnableConfig) -> str:
        """Look a city up."""
        return f"{city}: {llm.invoke(city, config)}"

    search = StructuredTool.from_function(lookup, callbacks=h.constructor)
    return RunnableLambda(lambda q: {"city": q}) | search.with_config(callbacks=h.bound), ["Paris", "Lima"]


class CityRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=f"{query} is a city", metadata={"score": 0.9})]


def retriever(h: Handlers):
    join = RunnableLambda(lambda docs: " ".join(d.page_content for d in docs))
    return CityRetriever().with_config(callbacks=h.bound) | join, ["Paris", "Lima"]


def parallel(h: Handlers):
    branches = RunnableParallel(
        completion=RunnableLambda(lambda x: x["q"]) | _llm(h),
        chat=ChatPromptTemplate.from_template("{q}") | _chat(h).with_config(callbacks=h.bound),
        length=RunnableLambda(lambda x: len(x["q"])),
    )
    return RunnableLambda(lambda q: {"q": q}) | branches, ["first", "second", "third"]


def _refuse(_: Any) -> str:
    raise ValueError("primary model is down")


def fallbacks(h: Handlers):
    return RunnableLambda(_refuse).with_fallbacks([_llm(h).with_config(callbacks=h.bound)]), ["hi", "ho"]


def retry(h: Handlers):
    attempts: dict[str, int] = {}

    def flaky(x: str) -> str:
        attempts[x] = attempts.get(x, 0) + 1
        if attempts[x] == 1:
            raise ConnectionError("try again")
        return x * 2

    steps = RunnableLambda(flaky).with_config(callbacks=h.bound).with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    return steps | _llm(h), ["a", "b"]


def failing_step(h: Handlers):
    return ChatPromptTemplate.from_template("{q}") | _chat(h) | RunnableLambda(_refuse).with_config(callbacks=h.bound), [
        {"q": "x"}
    ]


def langgraph_agent(h: Handlers):
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    def lookup(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    model = LookupAgentModel(callbacks=h.constructor)
    llm = _llm(h)

    def summarize(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [AIMessage(llm.invoke(f"summarize {len(state['messages'])}", config))]}

    async def asummarize(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [AIMessage(await llm.ainvoke(f"summarize {len(state['messages'])}", config))]}

    def agent(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], config)]}

    review = StateGraph(MessagesState)
    review.add_node("summarize", RunnableLambda(summarize, afunc=asummarize))
    review.add_edge(START, "summarize")
    review.add_edge("summarize", END)

    graph = StateGraph(MessagesState)
    graph.add_node("agent", RunnableLambda(agent).with_config(callbacks=h.bound))
    graph.add_node("tools", ToolNode([StructuredTool.from_function(lookup, callbacks=h.constructor)]))
    graph.add_node("review", review.compile())
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: "review"})
    graph.add_edge("tools", "agent")
    graph.add_edge("review", END)
    inputs = [{"messages": [("user", "weather in Paris")]}, {"messages": [("user", "weather in Lima")]}]
    return graph.compile(), inputs


def create_agent_with_labels(h: Handlers):
    """langchain's create_agent (an invoke_agent span), named, in a conversation, run with the
    user's tags and metadata: what callscope reads of each run's config changes nothing."""
    from langchain.agents import create_agent

    class ToolCallingModel(LookupAgentModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def lookup(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    agent = create_agent(ToolCallingModel(callbacks=h.constructor), [StructuredTool.from_function(lookup, callbacks=h.constructor)], name="weather")
    labelled = agent.with_config(tags=["prod"], metadata={"tenant": "acme"}, configurable={"thread_id": "t-1"})
    return labelled, [{"messages": [("user", "weather in Paris")]}, {"messages": [("user", "weather in Lima")]}]


def worker_thread(h: Handlers):
    """A step runs a chain in a worker thread without passing its config, the OTel context
    carried into the thread as OpenTelemetry's threading instrumentation carries it: a new
    LangChain root inside the step (callscope's "dropped")."""
    from concurrent.futures import ThreadPoolExecutor

    from opentelemetry import context as otel_context

    inner = ChatPromptTemplate.from_template("{q}") | _chat(h).with_config(callbacks=h.bound)

    def fetch(question: str) -> str:
        captured = otel_context.get_current()

        def work() -> str:
            token = otel_context.attach(captured)
            try:
                return inner.invoke({"q": question}).content
            finally:
                otel_context.detach(token)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(work).result()

    return RunnableLambda(fetch, name="fetch") | RunnableLambda(str.upper), ["hi", "ho"]


def message_history(h: Handlers):
    """``RunnableWithMessageHistory`` saves the turn from a listener (LangChain's own tracer) at
    the end of the run; the step after it returns the history as saved."""
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.prompts import MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    history = InMemoryChatMessageHistory()
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    with_history = RunnableWithMessageHistory(
        prompt | _chat(h).with_config(callbacks=h.bound),
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    ).with_config(configurable={"session_id": "s1"})
    saved = RunnableLambda(lambda _: [f"{m.type}: {m.content}" for m in history.messages])
    return with_history | saved, [{"question": "hi"}]


_loopback_servers: dict[str, Any] = {}


def _loopback(api: Any) -> str:
    """The URL of a loopback server speaking ``api`` (tests/fakes), started once per session."""
    from tests.fakes.loopback import LoopbackServer

    name = api.__name__
    if name not in _loopback_servers:
        _loopback_servers[name] = LoopbackServer(api.route).__enter__()
    return _loopback_servers[name].url


def ollama_chat(h: Handlers):
    """A model LangChain cannot serialize: callscope reads its fields from the instance."""
    from langchain_ollama import ChatOllama

    from tests.fakes import ollama_api

    model = ChatOllama(model="llama3.2", base_url=_loopback(ollama_api), num_predict=64, top_p=0.5, callbacks=h.constructor)
    return model.with_config(callbacks=h.bound), ["What is the capital of France?"]


def anthropic_tool_call(h: Handlers):
    """A provider package over HTTP, its reply a tool call kept twice in the message."""
    from langchain_anthropic import ChatAnthropic

    from tests.fakes import anthropic_api

    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny"

    model = ChatAnthropic(
        model="claude-sonnet-4-5", base_url=_loopback(anthropic_api), api_key="sk-ant-test", max_retries=0, stop_sequences=["END"], callbacks=h.constructor
    )
    return model.bind_tools([get_weather]).with_config(callbacks=h.bound), ["What is the weather in Paris?"]


WORKLOADS: dict[str, Workload] = {
    f.__name__: f
    for f in (
        chain,
        prompt,
        chat_model,
        attached_chat_model,
        text_llm,
        streaming_text_llm,
        llm_chain,
        parser,
        lambda_with_nested_runs,
        tool,
        retriever,
        parallel,
        fallbacks,
        retry,
        failing_step,
        worker_thread,
        message_history,
        langgraph_agent,
        ollama_chat,
        anthropic_tool_call,
        create_agent_with_labels,
    )
}


#: Workloads (and modes) that start a run inside a step without the step's config.
DROPS_CONFIG = {
    **{("worker_thread", mode): "the chain in the worker thread is invoked without config" for mode in MODES},
    # LangChain's RunnableWithFallbacks.stream calls ``runnable.stream(input, **kwargs)`` without
    # the child config it built, relying on the config context; the fallback's
    # ``with_config(callbacks=...)`` then replaces the callbacks, and the runtime handlers never
    # see the fallback's run (invoke and astream pass the config: no drop there).
    ("fallbacks", "stream"): "RunnableWithFallbacks.stream drops the config",
}

#: Workloads whose steps run concurrently: their stream chunks and events arrive in timing order.
CONCURRENT = {"parallel"}


@pytest.fixture
def callscope_on():
    """Instruments callscope for the block it wraps, then removes it; yields the exported spans.
    GenAI metrics are on (a real meter provider), so the comparison covers them too."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = callscope.CallscopeInstrumentor()

    class Switch:
        spans = exporter

        def __enter__(self) -> None:
            instrumentor.instrument(tracer_provider=provider, meter_provider=meter_provider)

        def __exit__(self, *exc: Any) -> None:
            self.internal_errors = instrumentor.handler.internal_errors + instrumentor.handler._metrics._failures
            instrumentor.uninstrument()

    yield Switch()
    provider.shutdown()
    meter_provider.shutdown()


def assert_same(without: Observation, with_: Observation) -> None:
    assert with_.error == without.error, "the exception raised into the caller changed"
    assert with_.output == without.output, "the workload's output changed"
    assert with_.logs == without.logs, "LangChain's log records changed"
    assert with_.recordings.keys() == without.recordings.keys()
    for handler, events in without.recordings.items():
        assert with_.recordings[handler] == events, f"{handler} received different events"


#: Cases LangChain itself does not reproduce from one run to the next, so no comparison with a
#: second run can hold; each was seen differing between two runs *without* callscope.
RACES_IN_LANGCHAIN = {
    # A handler raising in one branch fails the parallel step; LangChain then stops the sibling
    # branches wherever they happen to be (GeneratorExit or CancelledError, after 0 to n chunks).
    **{("parallel", mode, "raising_inline"): "a failing branch stops its siblings at a random point" for mode in MODES},
    # With a user's own inline handler LangChain gives the async LLM start to inline handlers
    # only, so astream_events v1's log handler misses it and the stream crashes
    # (JsonPointerException); the model's task is then cancelled after a random number of tokens.
    # Which handlers a raising inline handler pre-empts varies between two runs of this chain
    # (seen in sync invoke and stream); not investigated further.
    **{("message_history", mode, "raising_inline"): "a raiser pre-empts different handlers from run to run" for mode in MODES},
    **{
        ("streaming_text_llm", "astream_events_v1", kind): "LangChain's own crash cancels the model mid-stream"
        for kind in ("inline", "raising_inline")
    },
}

CASES = [
    pytest.param(workload, mode, kind, id=f"{workload}-{mode}-{kind}")
    for workload in WORKLOADS
    for mode in MODES
    for kind in HANDLER_KINDS
    if (workload, mode, kind) not in RACES_IN_LANGCHAIN
]


@pytest.mark.parametrize(("workload", "mode", "kind"), CASES)
def test_every_handler_receives_what_it_receives_without_callscope(workload: str, mode: str, kind: str, callscope_on) -> None:
    build = WORKLOADS[workload]
    concurrent = workload in CONCURRENT
    without = observe(build, mode, kind, concurrent=concurrent)
    with callscope_on:
        with_ = observe(build, mode, kind, concurrent=concurrent)
    assert callscope_on.spans.get_finished_spans(), "callscope traced nothing: the comparison would prove nothing"
    assert callscope_on.internal_errors == 0
    assert_same(without, with_)
    # "dropped" is said only where a chain really started inside a step without its config.
    dropped = {s.name for s in callscope_on.spans.get_finished_spans() if "callscope.handlers.dropped" in (s.attributes or {})}
    if (workload, mode) in DROPS_CONFIG:
        assert dropped, "the chain run in the worker thread lost the step's handlers, and no span says so"
    else:
        assert not dropped, f"spans said dropped where no config was dropped: {sorted(dropped)}"


# --- dropped traces -----------------------------------------------------------------------------

#: Samplers that drop every trace: callscope leaves such a trace at its root (``_unsampled``),
#: by each of its two ways — a parent-based decision known before the root's span starts, a
#: ratio decision learnt from the span — and with each marker (GenAI metrics live or not).
DROPPING = {
    "parent-based-off": (lambda: ParentBased(ALWAYS_OFF), False),
    "ratio-0-measured": (lambda: TraceIdRatioBased(0.0), True),
}
#: Workloads whose root is a model or retriever run: their dropped trace is not left (the run's
#: span is current in its provider code, and it is measured), only recorded without a span.
BARE_ROOTS = {"chat_model", "attached_chat_model", "text_llm", "streaming_text_llm", "retriever", "ollama_chat", "anthropic_tool_call"}

DROPPED_CASES = [
    pytest.param(*case.values, sampler, id=f"{case.id}-{sampler}")
    for case, sampler in zip(CASES, cycle(DROPPING))
]


@pytest.mark.parametrize(("workload", "mode", "kind", "sampler"), DROPPED_CASES)
def test_a_dropped_trace_changes_nothing_either(workload: str, mode: str, kind: str, sampler: str) -> None:
    make_sampler, measured = DROPPING[sampler]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=make_sampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()]) if measured else None
    build = WORKLOADS[workload]
    concurrent = workload in CONCURRENT
    without = observe(build, mode, kind, concurrent=concurrent)
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=meter_provider, metrics=measured)
    handler = instrumentor.handler
    left = []
    leave = handler.unsampled.leave
    handler.unsampled.leave = lambda run_id, marker: (left.append(marker), leave(run_id, marker))[-1]
    try:
        with_ = observe(build, mode, kind, concurrent=concurrent)
        internal_errors = handler.internal_errors + (handler._metrics._failures if handler._metrics else 0)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert exporter.get_finished_spans() == ()
    assert left or workload in BARE_ROOTS, "callscope never left the dropped trace: the comparison would prove little"
    assert internal_errors == 0
    assert_same(without, with_)
