"""Agent invocations as ``invoke_agent`` spans: langchain's ``create_agent``, LangGraph's
``create_react_agent``, graphs the user names as agents, and graphs that are none.

Real agents and graphs around a fake tool-calling chat model (no network): what is asserted is
what the test set up (the agent's name, the model's provider and model, the tool, the thread).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from opentelemetry.trace import SpanKind

import callscope
from tests.modes import MODES, outputs
from tests.spans import SpanTree

PROVIDER = "anthropic"
MODEL = "claude-agent-test-7"
THREAD = "thread-agents-42"
QUESTION = {"messages": [("user", "weather in Paris?")]}

OPERATION = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

# create_react_agent still works, but LangGraph 1.x deprecates it for langchain's create_agent.
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")


class ToolCallingModel(GenericFakeChatModel):
    """A fake chat model that can be bound to tools (as provider integrations are) and reports
    a provider and model of its own."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools])

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = PROVIDER
        params["ls_model_name"] = MODEL
        return params


def weather_model(city: str = "Paris", call_id: str = "call-1") -> ToolCallingModel:
    """Calls ``get_weather`` once, then answers."""
    return ToolCallingModel(
        messages=iter([AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": city}, "id": call_id}]), AIMessage("It is sunny.")])
    )


@tool
def get_weather(city: str) -> str:
    """Look up today's weather for a city."""
    return f"sunny in {city}"


run = outputs


def thread(thread_id: str = THREAD) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def agent_spans(spans: SpanTree) -> list[Any]:
    return [s for s in spans.all if s.attributes.get(OPERATION) == "invoke_agent"]


def by_operation(spans: SpanTree, operation: str) -> list[Any]:
    return [s for s in spans.all if s.attributes.get(OPERATION) == operation]


@pytest.fixture
def content_spans(tracer_provider, span_exporter) -> Iterator[SpanTree]:
    """Traced with content capture on."""
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, capture_content=True)
    yield SpanTree(span_exporter)
    instrumentor.uninstrument()


def assert_is_weather_agent(spans: SpanTree, span_name: str, agent_name: str | None) -> Any:
    """One ``invoke_agent`` span, named ``span_name``, holding the model and tool spans."""
    (agent,) = agent_spans(spans)
    assert agent.name == span_name
    assert agent.kind == SpanKind.INTERNAL
    assert agent.attributes.get(AGENT_NAME) == agent_name
    assert agent.attributes[OPERATION] == "invoke_agent"
    assert agent.attributes["gen_ai.provider.name"] == PROVIDER
    assert agent.attributes["gen_ai.request.model"] == MODEL
    assert agent.attributes["gen_ai.conversation.id"] == THREAD
    chats = by_operation(spans, "chat")
    tools = by_operation(spans, "execute_tool")
    assert len(chats) == 2 and len(tools) == 1, spans.names()
    assert tools[0].name == "execute_tool get_weather"
    for inner in chats + tools:
        assert span_name in spans.ancestors(inner), (inner.name, spans.ancestors(inner))
    return agent


@pytest.mark.parametrize("mode", MODES)
def test_create_agent_is_one_invoke_agent_span(mode, spans):
    agent = create_agent(weather_model(), [get_weather], name="weather_agent")
    run(agent, mode, QUESTION, config=thread())
    span = assert_is_weather_agent(spans, "invoke_agent weather_agent", "weather_agent")
    assert span.parent is None
    # Its "model" and "tools" nodes inherit create_agent's metadata but are no agents.
    assert {s.name for s in spans.all} >= {"model", "tools"}
    assert len(spans.named("invoke_agent weather_agent")) == 1


@pytest.mark.parametrize("mode", MODES)
def test_unnamed_create_agent_has_no_agent_name(mode, spans):
    run(create_agent(weather_model(), [get_weather]), mode, QUESTION, config=thread())
    span = assert_is_weather_agent(spans, "invoke_agent", None)
    assert AGENT_NAME not in span.attributes


@pytest.mark.parametrize("mode", MODES)
def test_named_create_react_agent_root_is_renamed(mode, spans):
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(weather_model(), [get_weather], name="weather_agent")
    run(agent, mode, QUESTION, config=thread())
    span = assert_is_weather_agent(spans, "invoke_agent weather_agent", "weather_agent")
    assert span.parent is None
    assert spans.named("weather_agent") == []


@pytest.mark.parametrize("mode", MODES)
def test_unnamed_create_react_agent_stays_a_graph(mode, spans):
    """A documented limitation: nothing tells an unnamed create_react_agent from a graph."""
    from langgraph.prebuilt import create_react_agent

    run(create_react_agent(weather_model(), [get_weather]), mode, QUESTION, config=thread())
    assert agent_spans(spans) == []
    (root,) = [s for s in spans.all if s.parent is None]
    assert root.name == "LangGraph"
    assert AGENT_NAME not in root.attributes
    assert len(by_operation(spans, "chat")) == 2


def pipeline(model: Any) -> StateGraph:
    """Two nodes, the second calling the chat model."""

    def prepare(state: MessagesState) -> dict[str, Any]:
        return {"messages": [("user", "and in Rome?")]}

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("prepare", prepare)
    graph.add_node("answer", answer)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "answer")
    graph.add_edge("answer", END)
    return graph


def answering_model() -> ToolCallingModel:
    return ToolCallingModel(messages=iter([AIMessage("Rome is sunny too.")]))


@pytest.mark.parametrize("mode", MODES)
def test_named_plain_graph_is_no_agent(mode, spans):
    app = pipeline(answering_model()).compile(name="pipeline")
    run(app, mode, QUESTION, config=thread())
    assert agent_spans(spans) == []
    root = spans.one("pipeline")
    assert root.parent is None
    assert AGENT_NAME not in root.attributes
    assert {"prepare", "answer"} <= set(spans.names())
    assert len(by_operation(spans, "chat")) == 1


@pytest.mark.parametrize("mode", MODES)
def test_graph_named_as_agent_by_metadata(mode, spans):
    app = pipeline(answering_model()).compile().with_config(metadata={"lc_agent_name": "planner"})
    run(app, mode, QUESTION, config=thread())
    (agent,) = agent_spans(spans)
    assert agent.name == "invoke_agent planner"
    assert agent.parent is None
    assert agent.attributes[AGENT_NAME] == "planner"
    assert agent.attributes["gen_ai.provider.name"] == PROVIDER
    assert agent.attributes["gen_ai.request.model"] == MODEL
    (chat,) = by_operation(spans, "chat")
    assert "invoke_agent planner" in spans.ancestors(chat)


def test_tool_definitions_with_content_capture(content_spans):
    create_agent(weather_model(), [get_weather], name="weather_agent").invoke(QUESTION, config=thread())
    (agent,) = agent_spans(content_spans)
    raw = agent.attributes[TOOL_DEFINITIONS]
    assert isinstance(raw, str)
    (definition,) = json.loads(raw)
    assert definition["type"] == "function"
    assert definition["name"] == "get_weather"
    assert definition["description"] == "Look up today's weather for a city."
    assert definition["parameters"]["properties"]["city"]["type"] == "string"
    assert definition["parameters"]["required"] == ["city"]


@pytest.mark.parametrize("mode", MODES)
def test_no_tool_definitions_without_content_capture(mode, spans):
    run(create_agent(weather_model(), [get_weather], name="weather_agent"), mode, QUESTION, config=thread())
    assert agent_spans(spans), spans.names()
    assert [s.name for s in spans.all if TOOL_DEFINITIONS in s.attributes] == []


@pytest.mark.parametrize("mode", MODES)
def test_agent_inside_an_agent(mode, spans):
    inner = create_agent(
        ToolCallingModel(messages=iter([AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "in-1"}]), AIMessage("Oslo: sunny")])),
        [get_weather],
        name="inner",
    )

    @tool
    def ask_inner(question: str) -> str:
        """Ask the inner agent."""
        return inner.invoke({"messages": [("user", question)]})["messages"][-1].content

    outer_model = ToolCallingModel(
        messages=iter([AIMessage("", tool_calls=[{"name": "ask_inner", "args": {"question": "Oslo?"}, "id": "out-1"}]), AIMessage("Done.")])
    )
    outer = create_agent(outer_model, [ask_inner], name="outer")
    run(outer, mode, QUESTION, config=thread())
    assert sorted(s.name for s in agent_spans(spans)) == ["invoke_agent inner", "invoke_agent outer"]
    outer_span = spans.one("invoke_agent outer")
    inner_span = spans.one("invoke_agent inner")
    assert outer_span.parent is None
    assert spans.ancestors(inner_span)[-1] == "invoke_agent outer"
    assert "execute_tool ask_inner" in spans.ancestors(inner_span)
    assert inner_span.attributes[AGENT_NAME] == "inner"
    assert outer_span.attributes[AGENT_NAME] == "outer"
    inner_tool = spans.one("execute_tool get_weather")
    assert "invoke_agent inner" in spans.ancestors(inner_tool)
