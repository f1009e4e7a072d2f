"""What a run's RunnableConfig puts on its span: the user's own tags and metadata (bounded, with
secrets redacted), the conversation it belongs to, the real input of a streamed chain, and the
attempt number of a retried LangGraph node."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy
from opentelemetry.trace import StatusCode

import callscope
from tests.models import chat_model
from tests.modes import MODES, outputs
from tests.spans import SpanTree

TAGS = "callscope.run.tags"
META = "callscope.run.metadata."
INPUT = "callscope.input"
ATTEMPT = "callscope.retry.attempt"
CONVERSATION = "gen_ai.conversation.id"

# RunnableWithMessageHistory and InMemoryChatMessageHistory still work, but are deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")


run = outputs


@pytest.fixture
def instrument(tracer_provider, span_exporter) -> Iterator[Callable[..., SpanTree]]:
    """Instrument with the given options; uninstrumented after the test."""
    instrumentor = callscope.CallscopeInstrumentor()

    def start(**options: Any) -> SpanTree:
        instrumentor.instrument(tracer_provider=tracer_provider, **options)
        return SpanTree(span_exporter)

    yield start
    instrumentor.uninstrument()


def root_of(spans: SpanTree) -> Any:
    (root,) = [s for s in spans.all if s.parent is None]
    return root


def metadata_of(span: Any) -> dict[str, Any]:
    return {k[len(META) :]: v for k, v in span.attributes.items() if k.startswith(META)}


def lcel_chain(**parser_config: Any) -> Any:
    parser = StrOutputParser()
    if parser_config:
        parser = parser.with_config(**parser_config)
    return ChatPromptTemplate.from_messages([("human", "{question}")]) | chat_model("Fine.") | parser


# --- tags and metadata --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_user_tags_and_metadata_on_the_run_that_set_them(mode, spans):
    config = {"tags": ["tenant:acme", "prod"], "metadata": {"user_id": "u1", "tenant": "acme", "ls_foo": 1}}
    run(lcel_chain(), mode, {"question": "ok?"}, config=config)
    root = root_of(spans)
    assert root.attributes[TAGS] == ("prod", "tenant:acme")
    assert metadata_of(root) == {"user_id": "u1", "tenant": "acme"}
    children = [s for s in spans.all if s.parent is not None]
    assert len(children) == 3, spans.names()
    for child in children:
        assert TAGS not in child.attributes, child.name
        assert metadata_of(child) == {}, child.name
    for span in spans.all:
        assert not any(tag.startswith("seq:step:") for tag in span.attributes.get(TAGS, ())), span.name
        internal = [k for k in metadata_of(span) if k.startswith(("ls_", "lc_", "langgraph_")) or k in ("ls_provider", "ls_model_name", "lc_versions")]
        assert internal == [], span.name


@pytest.mark.parametrize("mode", MODES)
def test_tags_set_on_an_inner_runnable(mode, spans):
    run(lcel_chain(tags=["inner-tag"]), mode, {"question": "ok?"}, config={"tags": ["outer-tag"]})
    root = root_of(spans)
    assert root.attributes[TAGS] == ("outer-tag",)
    assert spans.one("StrOutputParser").attributes[TAGS] == ("inner-tag",)
    others = [s for s in spans.all if s.name != "StrOutputParser"]
    assert len(others) == 3 and [s.name for s in others if "inner-tag" in s.attributes.get(TAGS, ())] == []


def test_metadata_bounds_and_secrets(spans):
    metadata = {"api_key": "sk-live-1234", "long": "x" * 10_000, "shape": {"a": [1, 2], "b": "c"}}
    run(RunnableLambda(lambda x: x, name="echo"), "invoke", 1, config={"metadata": metadata, "tags": ["t" * 10_000]})
    span = spans.one("echo")
    recorded = metadata_of(span)
    assert set(recorded) == {"api_key", "long", "shape"}
    assert recorded["api_key"] == "[REDACTED]"
    assert "sk-live-1234" not in json.dumps(dict(span.attributes))
    assert recorded["long"].startswith("xxx") and len(recorded["long"]) <= 256
    assert json.loads(recorded["shape"]) == {"a": [1, 2], "b": "c"}
    (tag,) = span.attributes[TAGS]
    assert tag.startswith("ttt") and len(tag) <= 256


def test_metadata_numbers_and_booleans_are_kept_as_they_are_within_otlps_range(spans):
    metadata = {"retries": 3, "ratio": 0.5, "beta": True, "huge": 2**70, "nan": float("nan")}
    run(RunnableLambda(lambda x: x, name="echo"), "invoke", 1, config={"metadata": metadata})
    recorded = metadata_of(spans.one("echo"))
    assert (recorded["retries"], recorded["ratio"], recorded["beta"]) == (3, 0.5, True)
    # Past int64, or not finite: text, never a value the OTLP encoder would refuse.
    assert isinstance(recorded["huge"], str) and isinstance(recorded["nan"], str)


def test_metadata_keys_are_bounded(spans):
    many = {f"key{i:02}": i for i in range(40)}
    run(RunnableLambda(lambda x: x, name="echo"), "invoke", 1, config={"metadata": many})
    recorded = metadata_of(spans.one("echo"))
    assert 16 <= len(recorded) <= 32
    assert all(many[key] == value for key, value in recorded.items())


def test_openai_api_key_metadata_is_redacted(spans):
    run(RunnableLambda(lambda x: x, name="echo"), "invoke", 1, config={"metadata": {"openai_api_key": "sk-also-secret"}})
    assert metadata_of(spans.one("echo")) == {"openai_api_key": "[REDACTED]"}


# --- the conversation -----------------------------------------------------------------------------


class Counter(TypedDict):
    count: int
    seen: Annotated[list[str], operator.add]


def asking_graph() -> Any:
    """A one-node graph whose node calls a chat model, with a checkpointer (so it has threads)."""
    model = chat_model("graph answer")

    def ask(state: Counter) -> dict[str, Any]:
        return {"seen": [model.invoke("hello").content]}

    graph = StateGraph(Counter)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("mode", MODES)
def test_langgraph_thread_is_every_spans_conversation(mode, spans):
    app = asking_graph()
    run(app, mode, {"count": 0, "seen": []}, config={"configurable": {"thread_id": "t-7"}})
    assert len(spans.all) >= 3, spans.names()
    assert [(s.name, s.attributes.get(CONVERSATION)) for s in spans.all] == [(s.name, "t-7") for s in spans.all]


def test_each_invoke_carries_its_own_thread(spans):
    """A conversation key is read on every run that has one, however often it was met before."""
    app = asking_graph()
    for thread in ("t-1", "t-2", "t-1", "t-3"):
        app.invoke({"count": 0, "seen": []}, config={"configurable": {"thread_id": thread}})
    per_trace: dict[int, set[Any]] = {}
    for span in spans.all:
        per_trace.setdefault(span.context.trace_id, set()).add(span.attributes.get(CONVERSATION))
    roots = sorted((s for s in spans.all if s.parent is None), key=lambda s: s.start_time)
    assert [per_trace[root.context.trace_id] for root in roots] == [{"t-1"}, {"t-2"}, {"t-1"}, {"t-3"}]


def test_each_invoke_carries_its_own_session_from_metadata(spans):
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat_model("ok") | StrOutputParser()
    for session in ("s-1", "s-2", "s-1"):
        chain.invoke({"question": "hi"}, config={"metadata": {"session_id": session}})
    roots = sorted((s for s in spans.all if s.parent is None), key=lambda s: s.start_time)
    by_trace = {root.context.trace_id: {s.attributes.get(CONVERSATION) for s in spans.all if s.context.trace_id == root.context.trace_id} for root in roots}
    assert [by_trace[root.context.trace_id] for root in roots] == [{"s-1"}, {"s-2"}, {"s-1"}]


def history_chain(get_session_history: Callable[..., InMemoryChatMessageHistory] | None = None, **kwargs: Any) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    store: dict[str, InMemoryChatMessageHistory] = {}

    def by_session(session_id: str) -> InMemoryChatMessageHistory:
        return store.setdefault(session_id, InMemoryChatMessageHistory())

    return RunnableWithMessageHistory(
        prompt | chat_model("remembered"), get_session_history or by_session, input_messages_key="question", history_messages_key="history", **kwargs
    )


@pytest.mark.parametrize("mode", MODES)
def test_message_history_session_is_every_spans_conversation(mode, spans):
    run(history_chain(), mode, {"question": "hi"}, config={"configurable": {"session_id": "s-9"}})
    assert root_of(spans).name == "RunnableWithMessageHistory"
    assert any(s.attributes.get("gen_ai.operation.name") == "chat" for s in spans.all)
    assert [(s.name, s.attributes.get(CONVERSATION)) for s in spans.all] == [(s.name, "s-9") for s in spans.all]


def tenant_history_chain() -> RunnableWithMessageHistory:
    store: dict[tuple[str, str], InMemoryChatMessageHistory] = {}

    def by_tenant(tenant_conversation: str, session_id: str) -> InMemoryChatMessageHistory:
        return store.setdefault((tenant_conversation, session_id), InMemoryChatMessageHistory())

    fields = [ConfigurableFieldSpec(id="tenant_conversation", annotation=str), ConfigurableFieldSpec(id="session_id", annotation=str)]
    return history_chain(by_tenant, history_factory_config=fields)


def assert_conversation(spans: SpanTree, expected: str) -> None:
    assert len(spans.all) > 3
    assert [(s.name, s.attributes.get(CONVERSATION)) for s in spans.all] == [(s.name, expected) for s in spans.all]


@pytest.mark.parametrize("mode", MODES)
def test_conversation_keys_argument(mode, instrument):
    spans = instrument(conversation_keys=["tenant_conversation"])
    run(tenant_history_chain(), mode, {"question": "hi"}, config={"configurable": {"tenant_conversation": "c-1", "session_id": "s-other"}})
    assert_conversation(spans, "c-1")


def test_conversation_keys_environment_variable(instrument, monkeypatch):
    monkeypatch.setenv("CALLSCOPE_CONVERSATION_KEYS", "tenant_conversation")
    spans = instrument()
    run(tenant_history_chain(), "invoke", {"question": "hi"}, config={"configurable": {"tenant_conversation": "c-1", "session_id": "s-other"}})
    assert_conversation(spans, "c-1")


def test_conversation_keys_must_be_a_list(tracer_provider):
    instrumentor = callscope.CallscopeInstrumentor()
    try:
        with pytest.raises(callscope.ConfigError):
            instrumentor.instrument(tracer_provider=tracer_provider, conversation_keys="tenant_conversation")
    finally:
        instrumentor.uninstrument()


# --- the real input of a streamed chain -----------------------------------------------------------


def shout() -> Any:
    return RunnableLambda(lambda x: x["q"] + "!") | RunnableLambda(str.upper)


@pytest.mark.parametrize("mode", MODES)
def test_streamed_chain_records_its_real_input(mode, instrument):
    spans = instrument(capture_content=True)
    assert "".join(run(shout(), mode, {"q": "hi"})) == "HI!"
    assert json.loads(root_of(spans).attributes[INPUT]) == {"q": "hi"}


def explode(text: str) -> str:
    raise RuntimeError(f"cannot shout {text}")


@pytest.mark.parametrize("mode", MODES)
def test_failed_stream_records_its_real_input(mode, instrument):
    spans = instrument(capture_content=True)
    chain = RunnableLambda(lambda x: x["q"] + "!") | RunnableLambda(explode)
    with pytest.raises(RuntimeError, match="cannot shout"):
        run(chain, mode, {"q": "hi"})
    root = root_of(spans)
    assert root.status.status_code == StatusCode.ERROR
    assert json.loads(root.attributes[INPUT]) == {"q": "hi"}


@pytest.mark.parametrize("mode", MODES)
def test_no_input_without_content_capture(mode, spans):
    run(shout(), mode, {"q": "hi"})
    assert len(spans.all) == 3
    assert [s.name for s in spans.all if INPUT in s.attributes] == []


# --- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_langgraph_retry_policy_attempts(mode, spans):
    calls: list[int] = []

    def flaky(state: Counter) -> dict[str, Any]:
        calls.append(state["count"])
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)} failed")
        return {"count": state["count"] + 1}

    graph = StateGraph(Counter)
    policy = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False, retry_on=ValueError)
    graph.add_node("flaky", flaky, retry_policy=policy)
    graph.add_edge(START, "flaky")
    graph.add_edge("flaky", END)
    run(graph.compile(), mode, {"count": 0, "seen": []})
    assert len(calls) == 3
    tries = sorted(spans.named("flaky"), key=lambda s: s.start_time)
    assert [s.attributes.get(ATTEMPT) for s in tries] == [None, 2, 3]
    assert [s.status.status_code for s in tries] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]


@pytest.mark.parametrize("mode", MODES)
def test_node_looping_over_steps_has_no_attempt(mode, spans):
    def step(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] + 1, "seen": ["step"]}

    graph = StateGraph(Counter)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda state: "step" if state["count"] < 3 else END)
    run(graph.compile(), mode, {"count": 0, "seen": []})
    steps = spans.named("step")
    assert len(steps) == 3
    assert [s.attributes.get(ATTEMPT) for s in steps] == [None, None, None]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])  # LangChain retries no stream
def test_lcel_with_retry_attempts(mode, spans):
    attempts: list[str] = []

    def flaky(value: str) -> str:
        attempts.append(value)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return value

    runnable = RunnableLambda(flaky, name="flaky").with_retry(stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(ConnectionError,))
    assert "".join(run(runnable, mode, "x")) == "x"
    (wrapper,) = [s for s in spans.named("flaky") if s.parent is None]
    tries = sorted(spans.children(wrapper), key=lambda s: s.start_time)
    assert [s.attributes.get(ATTEMPT) for s in tries] == [None, 2, 3]
