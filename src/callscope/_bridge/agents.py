"""Which runs are agent invocations, and what their spans say: ``invoke_agent {gen_ai.agent.name}``.

An agent is decided from what LangChain and LangGraph themselves record, never from a graph's
default name:

- ``langchain.agents.create_agent`` marks its graph in the metadata every run under it inherits:
  ``ls_integration="langchain_create_agent"`` and, when named, ``lc_agent_name``. So does any
  graph the user names as an agent with that key (``graph.with_config(metadata={"lc_agent_name":
  …})``). The agent's run is the outermost with the marker; runs below inherit it.
- ``langgraph.prebuilt.create_react_agent`` records nothing at the start, but names every message
  its agent writes after it (``name=…``): a graph root whose output messages carry the graph's own
  name is an agent, and its span is renamed as it ends. An unnamed one cannot be told from a plain
  graph, and stays one.

The agent's model, provider and tool definitions are those of the first model call inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from callscope._bridge.attribute_values import Attributes, short_label
from callscope._bridge.runs import RunRecord
from callscope._bridge.serialize import json_text, to_jsonable

INVOKE_AGENT = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
_CREATE_AGENT = "langchain_create_agent"
_LANGGRAPH = "langgraph"
#: LangGraph's name for a compiled graph nobody named: no agent name.
_DEFAULT_GRAPH_NAME = "LangGraph"
_MAX_TOOLS = 64


class AgentRun:
    """A run that is, or may turn out to be, an agent invocation."""

    __slots__ = ("name", "confirmed", "provider", "model", "tools")

    def __init__(self, name: str | None, confirmed: bool) -> None:
        self.name = name
        #: False for a graph root that is an agent only if its output says so (create_react_agent).
        self.confirmed = confirmed
        self.provider: str | None = None
        self.model: str | None = None
        self.tools: Any = None


def agent_at_start(name: str, attributes: Attributes, markers: tuple[Any, Any], above: tuple[Any, Any] | None) -> tuple[str, AgentRun | None]:
    """The span name of a chain run, and its ``AgentRun`` when it is (or may be) an agent; an
    agent's start attributes are added to ``attributes``. ``markers`` are the run's
    (``ls_integration``, ``lc_agent_name``), ``above`` the enclosing run's; asked only where
    they differ (runs below an agent inherit its markers)."""
    integration, agent_name = markers
    above_integration, above_name = above or (None, None)
    if isinstance(agent_name, str) and agent_name:
        if above_name == agent_name:
            return name, None  # the agent above's name, inherited
        label = short_label(agent_name)
    elif integration == _CREATE_AGENT and above_integration != _CREATE_AGENT:
        label = name if name != _DEFAULT_GRAPH_NAME else None
    elif integration == _LANGGRAPH and above_integration != _LANGGRAPH:
        # A graph root: an agent if it writes messages under its own name. Unnamed, it cannot.
        return name, (AgentRun(name, confirmed=False) if name != _DEFAULT_GRAPH_NAME else None)
    else:
        return name, None
    attributes[gen_ai.GEN_AI_OPERATION_NAME] = INVOKE_AGENT
    if label:
        attributes[gen_ai.GEN_AI_AGENT_NAME] = label
    return (f"{INVOKE_AGENT} {label}" if label else INVOKE_AGENT), AgentRun(label, confirmed=True)


def note_model_call(agent: AgentRun, attributes: Attributes, invocation_params: Any) -> None:
    """Give the agent a model call is made in that call's provider, model and tools, if it has
    none yet."""
    if agent.provider is None:
        agent.provider = attributes.get(gen_ai.GEN_AI_PROVIDER_NAME)
        agent.model = attributes.get(gen_ai.GEN_AI_REQUEST_MODEL)
        tools = invocation_params.get("tools") if isinstance(invocation_params, Mapping) else None
        agent.tools = tools if isinstance(tools, Sequence) and not isinstance(tools, str) else None


def agent_at_end(record: RunRecord, outputs: Any, content: bool, limit: int) -> None:
    """Finish an agent's span: what its first model call said, and for a graph that turned out to
    be an agent (its messages carry its name), its agent name and span name."""
    agent = record.agent
    if agent is None or not record.span.is_recording():
        return
    span = record.span
    if not agent.confirmed:
        if agent.name is None or not _wrote_as(outputs, agent.name):
            return
        label = short_label(agent.name)
        span.update_name(f"{INVOKE_AGENT} {label}")
        span.set_attributes({gen_ai.GEN_AI_OPERATION_NAME: INVOKE_AGENT, gen_ai.GEN_AI_AGENT_NAME: label})
    attributes: Attributes = {}
    if agent.provider:
        attributes[gen_ai.GEN_AI_PROVIDER_NAME] = agent.provider
    if agent.model:
        attributes[gen_ai.GEN_AI_REQUEST_MODEL] = agent.model
    if content and agent.tools:
        attributes[gen_ai.GEN_AI_TOOL_DEFINITIONS] = json_text(_tool_definitions(agent.tools, limit), limit)
    if attributes:
        span.set_attributes(attributes)


def _wrote_as(outputs: Any, name: str) -> bool:
    """Whether the graph's output holds a message its agent named ``name`` (create_react_agent
    names each message its model writes after the agent)."""
    messages = outputs.get("messages") if isinstance(outputs, Mapping) else None
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return False
    return any(getattr(message, "name", None) == name and getattr(message, "type", None) == "ai" for message in messages[-_MAX_TOOLS:])


def _tool_definitions(tools: Sequence[Any], limit: int) -> list[dict[str, Any]]:
    """The conventions' tool definitions from the provider-format tools a model was bound to
    (OpenAI's ``{"type": "function", "function": {...}}``, Anthropic's ``input_schema``)."""
    definitions: list[dict[str, Any]] = []
    for tool in tools[:_MAX_TOOLS]:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
        name = function.get("name")
        if not isinstance(name, str):
            continue
        definition: dict[str, Any] = {"type": "function", "name": to_jsonable(name, limit)}
        description = function.get("description")
        if isinstance(description, str):
            definition["description"] = to_jsonable(description, limit)
        parameters = function.get("parameters", function.get("input_schema"))
        if isinstance(parameters, Mapping):
            definition["parameters"] = to_jsonable(parameters, limit)
        definitions.append(definition)
    return definitions
