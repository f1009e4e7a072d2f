"""How a LangChain run maps onto a span: its name, kind and OpenTelemetry attributes.

Chat models and LLMs follow the GenAI inference span (``chat {model}`` / ``text_completion
{model}``, kind CLIENT), tools the execute-tool span (``execute_tool {name}``, INTERNAL),
retrievers the retrieval span (``retrieval {data source id}``, CLIENT). Chains, prompts,
parsers, lambdas and graph nodes have no GenAI operation: they are INTERNAL spans named after
the component, with callscope's own ``callscope.*`` attributes. Attribute names come from
``opentelemetry-semantic-conventions``, never typed by hand.

Every function here returns data and touches no span, so the handler can build attributes once
and set them in one call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes

from callscope._attributes import COMPONENT, RUN_TYPE
from callscope._bridge import providers
from callscope._bridge.attribute_values import Attributes, as_mapping, bounded_int, first_str, short_label
from callscope._bridge.providers import SERVER_ADDRESS, SERVER_PORT
from callscope._bridge.serialize import encodable


CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
TEXT_COMPLETION = gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value
EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
RETRIEVAL = gen_ai.GenAiOperationNameValues.RETRIEVAL.value
CHAIN = "chain"  # callscope's own family for everything without a GenAI operation

ERROR_TYPE = error_attributes.ERROR_TYPE

def component_name(serialized: Mapping[str, Any] | None, name: Any, default: str) -> str:
    """The component's display name: run_name, else what ``serialized`` says, else ``default``."""
    if isinstance(name, str) and name:
        return short_label(name)
    if isinstance(serialized, Mapping):
        candidate = serialized.get("name")
        if isinstance(candidate, str) and candidate:
            return short_label(candidate)
        ids = serialized.get("id")
        if isinstance(ids, Sequence) and ids and isinstance(ids[-1], str):
            return short_label(ids[-1])
    return default


def describe_chain(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], tags: Iterable[str] | None, metadata: Mapping[str, Any] | None
) -> tuple[str, Attributes]:
    """Span name and start attributes of a chain-like run (sequence, prompt, parser, lambda, node).

    The span is named after the component, so no attribute repeats the name.
    """
    name = component_name(serialized, kwargs.get("name"), "chain")
    run_type = kwargs.get("run_type")
    attributes: Attributes = {RUN_TYPE: short_label(run_type) if isinstance(run_type, str) and run_type else CHAIN}
    return name, attributes


def model_attributes(
    operation: str,
    serialized: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
    tags: Iterable[str] | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[str, Attributes]:
    """Span name and start attributes of a chat model / LLM run."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    params = kwargs.get("invocation_params")
    params = params if isinstance(params, Mapping) else {}
    component = component_name(serialized, None, "model")
    model = request_model(metadata, params)
    fields = providers.constructor_fields(serialized)
    attributes: Attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: operation,
        gen_ai.GEN_AI_PROVIDER_NAME: providers.provider_name(metadata.get("ls_provider"), component, fields),
        RUN_TYPE: "llm",
        COMPONENT: component,
    }
    if model:
        attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
    server = providers.server_of(fields)
    if server is not None:
        attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server
    providers.add_request_parameters(attributes, metadata, params, fields)
    if params.get("stream") is True or params.get("streaming") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    return (f"{operation} {model}" if model else operation), attributes


def describe_chat(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], tags: Iterable[str] | None, metadata: Mapping[str, Any] | None
) -> tuple[str, Attributes]:
    return model_attributes(CHAT, serialized, kwargs, tags, metadata)


def describe_text_completion(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], tags: Iterable[str] | None, metadata: Mapping[str, Any] | None
) -> tuple[str, Attributes]:
    return model_attributes(TEXT_COMPLETION, serialized, kwargs, tags, metadata)


def request_model(metadata: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """``gen_ai.request.model``: LangChain's ``ls_model_name``, else the invocation params'."""
    return first_str(metadata.get("ls_model_name"), params.get("model"), params.get("model_name"), params.get("model_id"))


def model_identity(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], metadata: Mapping[str, Any] | None
) -> tuple[str, str | None, tuple[str, int] | None]:
    """The provider, requested model and server of a chat model / LLM run, exactly as its span
    names them, without the rest of the start attributes (for metrics of runs that have no span)."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    params = kwargs.get("invocation_params")
    params = params if isinstance(params, Mapping) else {}
    fields = providers.constructor_fields(serialized)
    provider = providers.provider_name(metadata.get("ls_provider"), component_name(serialized, None, "model"), fields)
    return provider, request_model(metadata, params), providers.server_of(fields)


def model_end_attributes(response: Any) -> Attributes:
    """Response model, id, finish reasons and token usage from an ``LLMResult``."""
    attributes: Attributes = {}
    generations = getattr(response, "generations", None) or ()
    finish_reasons: list[str] = []
    input_tokens = output_tokens = cache_read = cache_creation = reasoning = 0
    saw_usage = False
    response_model = response_id = None
    provider_facts: Attributes = {}
    for generation_list in generations:
        for generation in generation_list or ():
            info = as_mapping(getattr(generation, "generation_info", None))
            message = getattr(generation, "message", None) if has_message(type(generation)) else None
            response_metadata = as_mapping(getattr(message, "response_metadata", None))
            if info or response_metadata:  # a model that reports nothing (the fakes) skips the lookups
                reason = providers.finish_reason(info, response_metadata)
                if reason:
                    finish_reasons.append(reason)
            if response_metadata:
                response_model = response_model or first_str(response_metadata.get("model_name"), response_metadata.get("model"))
                response_id = response_id or first_str(response_metadata.get("id"))
                if not provider_facts:
                    provider_facts = providers.response_attributes(response_metadata)
            usage = getattr(message, "usage_metadata", None)
            if isinstance(usage, Mapping):
                saw_usage = True
                input_tokens += bounded_int(usage.get("input_tokens"))
                output_tokens += bounded_int(usage.get("output_tokens"))
                details = as_mapping(usage.get("input_token_details"))
                cache_read += bounded_int(details.get("cache_read"))
                # langchain-anthropic zeroes cache_creation when the API splits it by cache TTL.
                cache_creation += bounded_int(details.get("cache_creation")) or (
                    bounded_int(details.get("ephemeral_5m_input_tokens")) + bounded_int(details.get("ephemeral_1h_input_tokens"))
                )
                reasoning += bounded_int(as_mapping(usage.get("output_token_details")).get("reasoning"))
    llm_output = getattr(response, "llm_output", None)
    if isinstance(llm_output, Mapping):
        response_model = response_model or first_str(llm_output.get("model_name"), llm_output.get("model"))
        token_usage = llm_output.get("token_usage") or llm_output.get("usage")
        if not saw_usage and isinstance(token_usage, Mapping):
            saw_usage = True
            input_tokens = bounded_int(token_usage.get("prompt_tokens", token_usage.get("input_tokens")))
            output_tokens = bounded_int(token_usage.get("completion_tokens", token_usage.get("output_tokens")))
    attributes.update(provider_facts)
    if response_model:
        attributes[gen_ai.GEN_AI_RESPONSE_MODEL] = response_model
    if response_id:
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    if finish_reasons:
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(finish_reasons)
    if saw_usage:
        attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
        if cache_read:
            attributes[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read
        if cache_creation:
            attributes[gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_creation
        if reasoning:
            attributes[gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    return attributes


def describe_tool(
    serialized: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
    tags: Iterable[str] | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[str, Attributes]:
    serialized = serialized if isinstance(serialized, Mapping) else {}
    name = component_name(serialized, kwargs.get("name"), "tool")
    attributes: Attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: EXECUTE_TOOL,
        gen_ai.GEN_AI_TOOL_NAME: name,
        gen_ai.GEN_AI_TOOL_TYPE: "function",
        RUN_TYPE: "tool",
        COMPONENT: name,
    }
    description = serialized.get("description")
    if isinstance(description, str) and description:
        # A docstring, not user data: cut and made encodable, not scrubbed (a regex pass per run).
        attributes[gen_ai.GEN_AI_TOOL_DESCRIPTION] = encodable(description[:1024])
    call_id = kwargs.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        attributes[gen_ai.GEN_AI_TOOL_CALL_ID] = short_label(call_id)
    return f"{EXECUTE_TOOL} {name}", attributes


def describe_retriever(
    serialized: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
    tags: Iterable[str] | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[str, Attributes]:
    """Span name and start attributes of a retriever run: ``retrieval {gen_ai.data_source.id}``,
    or plain ``retrieval`` when the data source is unknown; the component is in an attribute.

    The only data source LangChain identifies is a vector store retriever's store, by class
    (``ls_vector_store_provider``, e.g. ``InMemoryVectorStore``). It is not a GenAI provider, so
    it is not written to ``gen_ai.provider.name``.
    """
    attributes: Attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: RETRIEVAL,
        RUN_TYPE: "retriever",
        COMPONENT: component_name(serialized, kwargs.get("name"), "retriever"),
    }
    source = metadata.get("ls_vector_store_provider") if isinstance(metadata, Mapping) else None
    name = RETRIEVAL
    if isinstance(source, str) and source:
        attributes[gen_ai.GEN_AI_DATA_SOURCE_ID] = source = short_label(source)
        name = f"{RETRIEVAL} {source}"
    return name, attributes


@functools.lru_cache(maxsize=256)
def has_message(cls: type) -> bool:
    """Whether a generation of ``cls`` may carry a message. A text completion's ``Generation``
    does not, and asking that pydantic model for the field it lacks costs more than converting
    its text; only LangChain's own classes are judged by their declared fields."""
    if not cls.__module__.startswith("langchain_core."):
        return True
    fields = getattr(cls, "model_fields", None)
    return not isinstance(fields, Mapping) or "message" in fields
