"""Points 1 and 6-10 of the core issue: one span per run of every kind, GenAI semantic
conventions, errors and retries, streaming, content capture and secrets, absorbed bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid

import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, StatusCode

import callscope
from tests.models import chat_model


class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager) -> list[Document]:
        return [Document(page_content=f"about {query}", id="doc-1", metadata={"score": 0.9})]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_one_span_per_run_of_every_kind(spans):
    chain = ChatPromptTemplate.from_template("q {x}") | FakeListChatModel(responses=["r"]) | StrOutputParser()
    RunnableParallel(chain=chain, llm=RunnableLambda(lambda d: d["x"]) | FakeListLLM(responses=["t"]), docs=RunnableLambda(lambda d: d["x"]) | Shelf()).invoke({"x": "1"})
    add.invoke({"a": 1, "b": 2})
    names = spans.names()
    for expected in ("RunnableParallel<chain,llm,docs>", "RunnableSequence", "ChatPromptTemplate", "chat", "StrOutputParser", "text_completion", "retrieval", "execute_tool add"):
        assert expected in names, (expected, names)
    assert names.count("RunnableSequence") == 3
    assert names.count("RunnableLambda") == 2
    kinds = {s.name: s.kind for s in spans.all}
    assert kinds["chat"] == SpanKind.CLIENT and kinds["text_completion"] == SpanKind.CLIENT
    assert kinds["retrieval"] == SpanKind.CLIENT
    assert kinds["execute_tool add"] == SpanKind.INTERNAL and kinds["RunnableSequence"] == SpanKind.INTERNAL
    run_types = {s.name: s.attributes["callscope.run.type"] for s in spans.all}
    assert run_types["ChatPromptTemplate"] == "prompt" and run_types["StrOutputParser"] == "parser"


def test_langgraph_graph_and_nodes_are_spans(spans):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        n: int

    builder = StateGraph(State)
    builder.add_node("double", lambda s: {"n": s["n"] * 2})
    builder.add_node("inc", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "double")
    builder.add_edge("double", "inc")
    builder.add_edge("inc", END)
    assert builder.compile().invoke({"n": 2}) == {"n": 5}
    graph = spans.one("LangGraph")
    for node, step in (("double", 1), ("inc", 2)):
        span = spans.one(node)
        assert spans.parent_of(span) is graph or spans.ancestors(span)[-1] == "LangGraph"
        assert span.attributes["callscope.langgraph.node"] == node
        assert span.attributes["callscope.langgraph.step"] == step


def test_langgraph_node_and_step_are_on_the_node_run_not_repeated_inside_it(spans):
    """Runs inside a node inherit its node and step in their metadata: only the node run, and a
    subgraph's own nodes, record them."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        text: str

    model = chat_model("inner")
    inner = StateGraph(State)
    inner.add_node("ask", lambda s: {"text": model.invoke(s["text"]).content})
    inner.add_edge(START, "ask")
    inner.add_edge("ask", END)
    subgraph = inner.compile(name="inner")
    outer = StateGraph(State)
    outer.add_node("prepare", RunnableLambda(lambda s: {"text": s["text"] + "!"}, name="prepare_body") | RunnableLambda(lambda s: s))
    outer.add_node("delegate", subgraph)
    outer.add_edge(START, "prepare")
    outer.add_edge("prepare", "delegate")
    outer.add_edge("delegate", END)
    outer.compile().invoke({"text": "hi"})
    noded = {(s.name, s.attributes.get("callscope.langgraph.node"), s.attributes.get("callscope.langgraph.step")) for s in spans.all if "callscope.langgraph.node" in s.attributes}
    assert noded == {("prepare", "prepare", 1), ("delegate", "delegate", 2), ("ask", "ask", 1)}, spans.names()
    for inside in ("prepare_body", "chat gpt-test", "inner"):
        assert "callscope.langgraph.node" not in spans.one(inside).attributes, inside
        assert "callscope.langgraph.step" not in spans.one(inside).attributes, inside


def test_chat_span_follows_genai_conventions(spans):
    model = chat_model()
    model.invoke("What is the capital of France?", stop=["\n\n"])
    span = spans.one("chat gpt-test")
    a = span.attributes
    assert span.kind == SpanKind.CLIENT
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert a[gen_ai.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[gen_ai.GEN_AI_REQUEST_MODEL] == "gpt-test"
    assert a[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.2)
    assert a[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert a[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] == ("\n\n",)
    assert a[gen_ai.GEN_AI_RESPONSE_MODEL] == "gpt-test-2026"
    assert a[gen_ai.GEN_AI_RESPONSE_ID] == "resp-123"
    assert a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 11 and a[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert isinstance(a[gen_ai.GEN_AI_USAGE_INPUT_TOKENS], int)
    assert gen_ai.GEN_AI_INPUT_MESSAGES not in a and gen_ai.GEN_AI_OUTPUT_MESSAGES not in a
    assert span.status.status_code == StatusCode.UNSET


def test_text_completion_span_and_model_without_a_name(spans):
    FakeListLLM(responses=["x"]).invoke("p")
    span = spans.one("text_completion")
    assert span.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "text_completion"
    assert gen_ai.GEN_AI_REQUEST_MODEL not in span.attributes  # never invent a model name
    assert span.attributes["callscope.component"] == "FakeListLLM"
    assert span.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == "fakelist"


def test_tool_span_follows_genai_conventions(spans):
    add.invoke({"type": "tool_call", "id": "call_7", "name": "add", "args": {"a": 2, "b": 3}})
    a = spans.one("execute_tool add").attributes
    assert a[gen_ai.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert a[gen_ai.GEN_AI_TOOL_NAME] == "add"
    assert a[gen_ai.GEN_AI_TOOL_DESCRIPTION] == "Add two integers."
    assert a[gen_ai.GEN_AI_TOOL_CALL_ID] == "call_7"
    assert gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS not in a and gen_ai.GEN_AI_TOOL_CALL_RESULT not in a


def test_failing_step_marks_it_and_every_ancestor_failing_with_it(spans, user_tracer):
    def explode(_: str) -> str:
        raise KeyError("missing")

    chain = RunnableLambda(lambda v: v, name="ok") | RunnableLambda(explode, name="explode")
    with user_tracer.start_as_current_span("caller"), pytest.raises(KeyError):
        chain.invoke("x")
    for name in ("explode", "RunnableSequence"):
        span = spans.one(name)
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "KeyError"
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "builtins.KeyError"
        assert "missing" in event.attributes["exception.message"]
        assert "explode" in event.attributes["exception.stacktrace"]
    assert spans.one("ok").status.status_code == StatusCode.UNSET


def test_callscopes_failing_spans_carry_the_error_marker_for_exact_match_search(spans, user_tracer):
    def explode(_: str) -> str:
        raise KeyError("missing")

    chain = RunnableLambda(lambda v: v, name="ok") | RunnableLambda(explode, name="explode")
    with pytest.raises(KeyError), user_tracer.start_as_current_span("caller"):
        chain.invoke("x")
    failing = sorted(s.name for s in spans.all if s.status.status_code == StatusCode.ERROR)
    assert failing == ["RunnableSequence", "caller", "explode"]
    # The application's own span failed too, but callscope writes only on the spans it starts.
    assert sorted((s.name, s.attributes["callscope.error"]) for s in spans.all if "callscope.error" in s.attributes) == [
        ("RunnableSequence", True),
        ("explode", True),
    ]


def test_each_retry_attempt_is_a_span(spans):
    attempts = []

    def flaky(value: str) -> str:
        attempts.append(value)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return value

    runnable = RunnableLambda(flaky, name="flaky").with_retry(stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(ConnectionError,))
    assert runnable.invoke("x") == "x"
    # The retry wrapper takes the bound runnable's name; each attempt is a child run of it.
    (wrapper,) = [s for s in spans.named("flaky") if s.parent is None]
    tries = sorted(spans.children(wrapper), key=lambda s: s.start_time)
    assert [s.name for s in tries] == ["flaky"] * 3
    # LangChain tags the retries, not the first attempt.
    assert [s.attributes.get("callscope.retry.attempt") for s in tries] == [None, 2, 3]
    assert [s.status.status_code for s in tries] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert wrapper.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_streamed_model_records_first_chunk_time_and_chunk_count(mode, spans):
    model = chat_model("one two three four")
    if mode == "stream":
        chunks = list(model.stream("hi"))
    else:

        async def collect():
            return [c async for c in model.astream("hi")]

        chunks = asyncio.run(collect())
    a = spans.one("chat gpt-test").attributes
    assert a[gen_ai.GEN_AI_REQUEST_STREAM] is True
    assert a["callscope.stream.chunks"] == len(chunks) > 1
    ttfc = a[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(ttfc, float) and 0 <= ttfc < 60


def test_content_is_not_exported_by_default(spans):
    chain = ChatPromptTemplate.from_template("secret plan {x}") | chat_model("classified answer")
    chain.invoke({"x": "omega"})
    add.invoke({"a": 1, "b": 2})
    dumped = json.dumps([dict(s.attributes) for s in spans.all], default=str)
    for text in ("omega", "secret plan", "classified answer"):
        assert text not in dumped
    assert all("callscope.input" not in s.attributes and "callscope.output" not in s.attributes for s in spans.all)


@pytest.fixture
def with_content(monkeypatch, tracer_provider, span_exporter):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    callscope.instrument(tracer_provider)
    from tests.spans import SpanTree

    yield SpanTree(span_exporter)
    callscope.uninstrument()


def test_content_is_exported_with_the_standard_switch(with_content):
    spans = with_content
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "capital of {x}?")])
    (prompt | chat_model("Paris")).invoke({"x": "France"})
    add.invoke({"type": "tool_call", "id": "c1", "name": "add", "args": {"a": 2, "b": 3}})
    chat = spans.one("chat gpt-test").attributes
    assert json.loads(chat[gen_ai.GEN_AI_INPUT_MESSAGES]) == [{"role": "user", "parts": [{"type": "text", "content": "capital of France?"}]}]
    assert json.loads(chat[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "be brief"}]
    assert json.loads(chat[gen_ai.GEN_AI_OUTPUT_MESSAGES]) == [{"role": "assistant", "parts": [{"type": "text", "content": "Paris"}], "finish_reason": "stop"}]
    assert json.loads(spans.one("RunnableSequence").attributes["callscope.input"]) == {"x": "France"}
    tool_span = spans.one("execute_tool add").attributes
    assert json.loads(tool_span[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"a": 2, "b": 3}
    assert json.loads(tool_span[gen_ai.GEN_AI_TOOL_CALL_RESULT]) == "5"


def test_secrets_never_exported_even_with_content(with_content):
    spans = with_content

    def leak(_: dict) -> dict:
        return {"api_key": "plain-key-value-123", "note": "token is sk-ant-abcdefghijklmnopqrstuv", "ok": 1}

    chain = RunnableLambda(leak, name="leaky") | RunnableLambda(lambda d: d, name="next")
    chain.invoke({"openai_api_key": "sk-proj-AAAAAAAAAAAAAAAAAAAA", "password": "hunter2hunter2"})
    chat_model().invoke("hello")  # its serialized repr carries api_key=SecretStr(...)
    blob = json.dumps([[dict(s.attributes), [dict(e.attributes or {}) for e in s.events]] for s in spans.all], default=str)
    for secret in ("plain-key-value-123", "sk-ant-abcdefghijklmnopqrstuv", "sk-proj-AAAAAAAAAAAAAAAAAAAA", "hunter2hunter2", "SECRETSECRETSECRET"):
        assert secret not in blob
    assert "[REDACTED]" in blob
    assert json.loads(spans.one("next").attributes["callscope.output"])["ok"] == 1


def test_secret_in_an_exception_message_is_scrubbed(spans):
    def fail(_: str) -> str:
        raise PermissionError("Incorrect API key provided: sk-proj-ZZZZZZZZZZZZZZZZZZZZ")

    with pytest.raises(PermissionError):
        RunnableLambda(fail, name="auth").invoke("x")
    span = spans.one("auth")
    text = json.dumps([span.status.description, [dict(e.attributes) for e in span.events]])
    assert "sk-proj-ZZZZ" not in text and "[REDACTED]" in text


def test_content_values_are_bounded(monkeypatch, tracer_provider, span_exporter):
    callscope.instrument(tracer_provider, capture_content=True, max_attribute_length=1000)
    try:
        RunnableLambda(lambda d: "y" * 1_000_000, name="huge").invoke({"blob": "x" * 1_000_000, "nan": math.nan, "raw": b"\x00\x01"})
    finally:
        callscope.uninstrument()
    (span,) = span_exporter.get_finished_spans()
    assert all(len(v) <= 1000 for v in span.attributes.values() if isinstance(v, str))
    assert span.attributes["callscope.output"].endswith("…[truncated]")
    assert '"nan":"nan"' in span.attributes["callscope.input"].replace("NaN", "nan") or "truncated" in span.attributes["callscope.input"]


def test_odd_callbacks_are_absorbed_without_langchain_errors(spans, instrumented, caplog):
    caplog.set_level(logging.WARNING)
    handler = instrumented.handler
    ghost = uuid.uuid4()
    handler.on_chain_end({}, run_id=ghost)
    handler.on_llm_end(object(), run_id=ghost)
    handler.on_tool_error(RuntimeError("x"), run_id=ghost)
    handler.on_llm_new_token("t", run_id=ghost)
    handler.on_custom_event("evt", {"a": 1}, run_id=ghost)

    class Hostile:
        def __repr__(self):
            raise RuntimeError("repr bomb")

        __str__ = __repr__

    cyclic: dict = {}
    cyclic["self"] = cyclic
    manager = CallbackManager.configure(inheritable_callbacks=[])
    run = manager.on_chain_start({"id": None, "name": 7}, {"cyc": cyclic, 1: Hostile(), "b": b"\xff", "n": math.inf}, name=None)
    run.on_chain_end({"out": Hostile()})
    run.on_chain_end({"again": True})  # duplicate end
    run.on_chain_error(ValueError("late"))  # error after end
    assert handler.internal_errors == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("Error in")]
    assert len(handler.registry) == 0
    assert len(spans.all) == 1


def test_custom_events_land_on_the_dispatching_run(spans):
    from langchain_core.callbacks import dispatch_custom_event

    def step(value: str) -> str:
        dispatch_custom_event("progress", {"done": 1})
        return value

    RunnableLambda(step, name="step").invoke("x")
    (event,) = spans.one("step").events
    assert event.name == "progress"


def test_a_hostile_payload_at_the_end_still_ends_the_span(tracer_provider, span_exporter):
    class Exploding:
        def __iter__(self):
            raise RuntimeError("iteration exploded")

        def __bool__(self):
            return True

    callscope.instrument(tracer_provider, capture_content=True)
    try:
        manager = CallbackManager.configure()
        run = manager.on_retriever_start({"name": "r"}, "q", name="r")
        run.on_retriever_end(Exploding())
        handler = callscope.CallscopeInstrumentor().handler
        assert len(handler.registry) == 0
    finally:
        callscope.uninstrument()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["retrieval"]


# --- LangGraph control flow is not failure (issue 11, point 2) --------------------------------

GRAPH_MODES = ["invoke", "ainvoke", "stream", "astream", "astream_events"]


def run_graph(graph, value, config, mode: str):
    """Drive a LangGraph graph to its end in one execution mode; returns what invoke would."""
    if mode == "invoke":
        return graph.invoke(value, config)
    if mode == "stream":
        return list(graph.stream(value, config))

    async def drive():
        if mode == "ainvoke":
            return await graph.ainvoke(value, config)
        if mode == "astream":
            return [chunk async for chunk in graph.astream(value, config)]
        return [event async for event in graph.astream_events(value, config, version="v2")]

    return asyncio.run(drive())


def approval_graph():
    from typing import TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    class State(TypedDict, total=False):
        request: str
        decision: str

    def ask(state: State) -> State:
        return {"decision": interrupt({"question": f"approve {state['request']}?"})}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_interrupt_is_not_an_error_and_the_resumed_run_continues_the_thread(mode, spans, instrumented):
    from langgraph.types import Command

    graph = approval_graph()
    config = {"configurable": {"thread_id": f"thread-{mode}"}}
    run_graph(graph, {"request": "refund"}, config, mode)
    (pending,) = graph.get_state(config).interrupts
    assert all(s.status.is_unset for s in spans.all), [(s.name, s.status) for s in spans.all]
    node, graph_span = spans.one("ask"), spans.one("LangGraph")
    assert node.attributes["callscope.langgraph.control_flow"] == "GraphInterrupt"
    for span in (node, graph_span):
        assert "error.type" not in span.attributes
        assert span.attributes["callscope.langgraph.interrupted"] is True
        assert span.attributes["callscope.langgraph.interrupt.ids"] == (pending.id,)
        assert span.attributes[gen_ai.GEN_AI_CONVERSATION_ID] == f"thread-{mode}"
    assert "callscope.langgraph.resumed" not in graph_span.attributes

    spans.clear()
    run_graph(graph, Command(resume="yes"), config, mode)
    assert graph.get_state(config).values["decision"] == "yes"
    resumed = spans.one("LangGraph")
    assert resumed.attributes["callscope.langgraph.resumed"] is True
    assert resumed.attributes[gen_ai.GEN_AI_CONVERSATION_ID] == f"thread-{mode}"
    assert all(s.status.is_unset and "callscope.langgraph.interrupted" not in s.attributes for s in spans.all)
    assert len(instrumented.handler.registry) == 0


def test_interrupt_in_a_react_agent_tool_pauses_the_agent_without_errors(spans, instrumented):
    from langchain_core.tools import tool as make_tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.prebuilt import create_react_agent
    from langgraph.types import Command, interrupt

    from tests.models import react_agent_model

    @make_tool
    def book_flight(city: str) -> str:
        """Book a flight once a human approves."""
        return f"booked {city}" if interrupt(f"book {city}?") == "ok" else "declined"

    agent = create_react_agent(react_agent_model("book_flight", {"city": "Paris"}), [book_flight], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "agent-1"}}
    agent.invoke({"messages": [("user", "book me a flight")]}, config)
    assert all(s.status.is_unset for s in spans.all), [(s.name, s.attributes.get("error.type")) for s in spans.all]
    tool_span = spans.one("execute_tool book_flight")
    assert tool_span.attributes["callscope.langgraph.control_flow"] == "GraphInterrupt"
    for name in ("tools", "LangGraph"):
        assert spans.one(name).attributes["callscope.langgraph.interrupted"] is True
    assert "callscope.langgraph.interrupted" not in spans.one("agent").attributes  # finished before

    spans.clear()
    result = agent.invoke(Command(resume="ok"), config)
    assert result["messages"][-2].content == "booked Paris"
    assert all(s.status.is_unset for s in spans.all)
    assert {s.attributes.get(gen_ai.GEN_AI_CONVERSATION_ID) for s in spans.all} == {"agent-1"}
    assert len(instrumented.handler.registry) == 0


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_handoff_to_the_parent_graph_is_not_an_error(mode, spans):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    class State(TypedDict, total=False):
        note: str

    def hand_off(state: State) -> Command:
        return Command(graph=Command.PARENT, goto="billing", update={"note": "from triage"})

    triage = StateGraph(State)
    triage.add_node("hand_off", hand_off)
    triage.add_edge(START, "hand_off")
    parent = StateGraph(State)
    parent.add_node("triage", triage.compile())
    parent.add_node("billing", lambda state: {"note": state["note"] + ", billed"})
    parent.add_edge(START, "triage")
    parent.add_edge("billing", END)
    run_graph(parent.compile(), {"note": ""}, None, mode)

    assert all(s.status.is_unset for s in spans.all), [(s.name, s.attributes.get("error.type")) for s in spans.all]
    for name in ("hand_off", "triage"):
        span = spans.one(name)
        assert span.attributes["callscope.langgraph.control_flow"] == "ParentCommand"
        assert span.attributes["callscope.langgraph.goto"] == ("billing",)
    assert "billing" in spans.names()


def test_langgraph_failures_stay_failures(spans):
    from typing import TypedDict

    from langgraph.errors import GraphRecursionError
    from langgraph.graph import START, StateGraph

    class State(TypedDict):
        n: int

    builder = StateGraph(State)
    builder.add_node("loop", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "loop")
    builder.add_edge("loop", "loop")
    with pytest.raises(GraphRecursionError):
        builder.compile().invoke({"n": 0}, {"recursion_limit": 3})
    graph = spans.one("LangGraph")
    assert graph.status.status_code == StatusCode.ERROR
    assert graph.attributes["error.type"] == "GraphRecursionError"
    assert "callscope.langgraph.control_flow" not in graph.attributes


# --- a stream the consumer stops ends at once, abandoned or cancelled, never failed (point 3) --


def research_agent():
    """A ReAct agent whose model streams a few tokens before it calls its tool."""
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool as make_tool
    from langgraph.prebuilt import create_react_agent

    from tests.models import ToolCallingChatModel

    @make_tool
    def search(query: str) -> str:
        """Search the web."""
        return "results"

    call = AIMessage(content="let me look that up", tool_calls=[{"name": "search", "args": {"query": "q"}, "id": "c1", "type": "tool_call"}])
    return create_react_agent(ToolCallingChatModel(messages=iter([call, AIMessage(content="done")])), [search])


def prompt_and_model():
    return ChatPromptTemplate.from_template("q {x}") | chat_model("one two three four")


STOPPED_STREAMS = {
    "agent astream_events": (research_agent, {"messages": [("user", "hi")]}, lambda r, v: r.astream_events(v, version="v2")),
    "agent astream messages": (research_agent, {"messages": [("user", "hi")]}, lambda r, v: r.astream(v, stream_mode="messages")),
    "chain astream_events": (prompt_and_model, {"x": "1"}, lambda r, v: r.astream_events(v, version="v2")),
    "chain astream": (prompt_and_model, {"x": "1"}, lambda r, v: r.astream(v)),
}


def first_token(item) -> bool:
    """True once the stream has delivered a model token (an event, a (chunk, metadata) pair, a chunk)."""
    if isinstance(item, dict) and "event" in item:
        return item["event"] == "on_chat_model_stream"
    return True


@pytest.mark.parametrize("how", ["break", "aclose"])
@pytest.mark.parametrize("case", list(STOPPED_STREAMS))
def test_stream_stopped_after_the_first_token_ends_every_run_without_error(case, how, spans, instrumented, user_tracer, caplog):
    make, value, open_stream = STOPPED_STREAMS[case]
    runnable = make()
    open_after_close: list[int] = []

    async def consume() -> None:
        stream = open_stream(runnable, value)
        async for item in stream:
            if first_token(item):
                break
        if how == "aclose":
            await stream.aclose()
            # LangChain's inner async generators are closed by the event loop's finalizer on its
            # next iterations, not inside aclose(): a few ticks, never a wait.
            for _ in range(5):
                await asyncio.sleep(0)
            open_after_close.append(len(instrumented.handler.registry))

    with user_tracer.start_as_current_span("caller"):
        asyncio.run(consume())
    if how == "aclose":
        assert open_after_close == [0]  # ended by the time the stream is closed and collected
    assert len(instrumented.handler.registry) == 0
    stopped = [s for s in spans.all if s.attributes.get("callscope.stream.abandoned") or s.attributes.get("callscope.run.cancelled")]
    assert stopped, spans.names()
    assert any(s.name == "chat" or s.name.startswith("chat ") for s in stopped)
    for span in spans.all:
        assert span.status.status_code != StatusCode.ERROR, (span.name, span.status.description)
        assert "error.type" not in span.attributes, (span.name, span.attributes["error.type"])
    assert len(spans.trace_ids()) == 1
    # Nothing callscope does around the streams makes asyncio or LangChain complain.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_sync_graph_stream_stopped_early_ends_every_run(spans, instrumented):
    for _ in research_agent().stream({"messages": [("user", "hi")]}, stream_mode="messages"):
        break
    assert len(instrumented.handler.registry) == 0
    assert spans.one("LangGraph").attributes["callscope.stream.abandoned"] is True
    assert all(s.status.is_unset for s in spans.all)


def test_a_run_cancelled_by_a_timeout_is_cancelled_not_failed(spans, instrumented):
    async def slow(value: str) -> str:
        await asyncio.sleep(10)
        return value

    chain = RunnableLambda(lambda v: v, name="fast") | RunnableLambda(slow, name="slow")

    async def call() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(chain.ainvoke("x"), 0.05)

    asyncio.run(call())
    assert len(instrumented.handler.registry) == 0
    for name in ("slow", "RunnableSequence"):
        span = spans.one(name)
        assert span.status.is_unset and span.attributes["callscope.run.cancelled"] is True


async def test_a_bare_model_call_cancelled_while_awaiting_its_provider_ends_its_span(spans, instrumented):
    # LangChain's agenerate is cancelled inside its gather and reports the run's end to nobody.
    class SlowModel(FakeListChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(SlowModel(responses=["x"]).ainvoke("hi"), timeout=0.05)
    chat = spans.one("chat")
    assert chat.attributes["callscope.run.cancelled"] is True
    assert chat.status.status_code.name == "UNSET"
    assert len(instrumented.handler.registry) == 0
