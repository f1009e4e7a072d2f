"""Captured message content validates against the official GenAI message JSON schemas
(shared/semconv, v1.41.1), including tool calls and tool results."""

from __future__ import annotations

import json
from itertools import cycle
from pathlib import Path

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

import callscope
from tests.spans import SpanTree

#: The official registry's files these tests read, copied from semantic-conventions v1.41.1 with its
#: license (tests/test_vendored_semconv.py keeps the copy equal to the research notes' registry).
SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "semconv" / "v1.41.1" / "docs" / "gen-ai"

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture
def content_spans(tracer_provider, span_exporter):
    callscope.instrument(tracer_provider, capture_content=True)
    yield SpanTree(span_exporter)
    callscope.uninstrument()


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def test_content_attributes_match_the_genai_schemas(content_spans):
    reply = AIMessage(
        content="",
        tool_calls=[{"id": "call_1", "name": "weather", "args": {"city": "Paris"}, "type": "tool_call"}],
        response_metadata={"finish_reason": "tool_calls"},
    )
    model = GenericFakeChatModel(messages=cycle([reply]))
    model.invoke(
        [
            SystemMessage("You are terse."),
            HumanMessage("Weather in Paris?"),
            AIMessage(content="", tool_calls=[{"id": "call_0", "name": "weather", "args": {"city": "Lyon"}, "type": "tool_call"}]),
            ToolMessage("12C", tool_call_id="call_0"),
        ]
    )
    attributes = content_spans.one("chat").attributes
    inputs = json.loads(attributes[gen_ai.GEN_AI_INPUT_MESSAGES])
    outputs = json.loads(attributes[gen_ai.GEN_AI_OUTPUT_MESSAGES])
    system = json.loads(attributes[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS])
    jsonschema.validate(inputs, schema("gen-ai-input-messages.json"))
    jsonschema.validate(outputs, schema("gen-ai-output-messages.json"))
    jsonschema.validate(system, schema("gen-ai-system-instructions.json"))
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool"]
    assert inputs[1]["parts"][0] == {"type": "tool_call", "id": "call_0", "name": "weather", "arguments": {"city": "Lyon"}}
    assert inputs[2]["parts"][0] == {"type": "tool_call_response", "id": "call_0", "response": "12C"}
    assert outputs[0]["finish_reason"] == "tool_calls" and outputs[0]["parts"][0]["name"] == "weather"


# --- span names follow the conventions (spans.yaml of v1.41.1) ----------------------------------

from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402


class ShelfStore(VectorStore):
    """The smallest real vector store: LangChain's own VectorStoreRetriever wraps it."""

    def add_texts(self, texts, metadatas=None, **kwargs):  # type: ignore[override]
        return []

    @classmethod
    def from_texts(cls, texts, embedding, metadatas=None, **kwargs):  # type: ignore[override]
        return cls()

    def similarity_search(self, query, k=4, **kwargs):  # type: ignore[override]
        return [Document(page_content=f"about {query}", id="doc-1")]


class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager) -> list[Document]:
        return [Document(page_content=f"about {query}")]


def test_a_vector_store_retrieval_is_named_after_its_data_source(spans):
    ShelfStore().as_retriever().invoke("otel")
    (span,) = spans.all
    # LangChain identifies a vector store retriever's store by class (ls_vector_store_provider).
    assert span.name == "retrieval ShelfStore"
    assert span.attributes[gen_ai.GEN_AI_DATA_SOURCE_ID] == "ShelfStore"
    assert span.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "retrieval"
    assert span.attributes["callscope.component"] == "VectorStoreRetriever"
    assert gen_ai.GEN_AI_PROVIDER_NAME not in span.attributes  # a vector store is no GenAI provider


def test_a_retrieval_without_a_known_data_source_is_plain_retrieval(spans):
    Shelf().with_config(run_name="docs").invoke("otel")
    (span,) = spans.all
    assert span.name == "retrieval"
    assert gen_ai.GEN_AI_DATA_SOURCE_ID not in span.attributes
    assert span.attributes["callscope.component"] == "docs"


def test_genai_span_names_are_operation_then_identifier(spans):
    from langchain_core.language_models import FakeListChatModel, FakeListLLM
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    FakeListChatModel(responses=["r"]).invoke("hi", config={"metadata": {"ls_model_name": "gpt-x"}})
    FakeListLLM(responses=["t"]).invoke("hi")
    add.invoke({"a": 1, "b": 2})
    by_operation = {s.attributes.get(gen_ai.GEN_AI_OPERATION_NAME): s for s in spans.all}
    # {gen_ai.operation.name} {gen_ai.request.model}; the model name only where it is known.
    assert by_operation["chat"].name == "chat gpt-x"
    assert by_operation["text_completion"].name == "text_completion"
    assert gen_ai.GEN_AI_REQUEST_MODEL not in by_operation["text_completion"].attributes
    # execute_tool {gen_ai.tool.name}
    assert by_operation["execute_tool"].name == "execute_tool add"
    assert by_operation["execute_tool"].attributes[gen_ai.GEN_AI_TOOL_NAME] == "add"


# --- the agent span (span.gen_ai.invoke_agent.internal of v1.41.1) ---------------------------------


def test_the_agent_span_is_the_registrys_in_process_agent_invocation(spans):
    """Kind, name and required attributes as spans.yaml gives them for an agent invoked within
    the same process (LangChain's own example)."""
    import yaml
    from langchain.agents import create_agent

    from tests.bridge.test_agents import get_weather, weather_model

    path = SCHEMAS.parents[1] / "model" / "gen-ai" / "spans.yaml"
    group = next(g for g in yaml.safe_load(path.read_text())["groups"] if g["id"] == "span.gen_ai.invoke_agent.internal")
    create_agent(weather_model(), [get_weather], name="weather_agent").invoke({"messages": [("user", "weather in Paris?")]})
    [span] = [s for s in spans.all if s.attributes.get(gen_ai.GEN_AI_OPERATION_NAME) == "invoke_agent"]
    assert span.kind.name.lower() == group["span_kind"]
    assert span.name == "invoke_agent weather_agent"  # "invoke_agent {gen_ai.agent.name}"
    required = [a["ref"] for a in group["attributes"] if a.get("requirement_level") == "required"]
    assert required and all(span.attributes.get(name) for name in required), (required, dict(span.attributes))
    assert span.attributes[gen_ai.GEN_AI_AGENT_NAME] == "weather_agent"
