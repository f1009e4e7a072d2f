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
import math
import os
from urllib.parse import urlsplit
from itertools import islice
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from opentelemetry.semconv._incubating.attributes import aws_attributes, openai_attributes
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from callscope._attributes import COMPONENT, LANGGRAPH_NODE, LANGGRAPH_STEP, RETRY_ATTEMPT, RUN_TYPE
from callscope._bridge.serialize import bound_text, encodable

Attributes = dict[str, Any]

_MAX_LABEL = 256
_MAX_STOP_SEQUENCES = 16

CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
TEXT_COMPLETION = gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value
EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
RETRIEVAL = gen_ai.GenAiOperationNameValues.RETRIEVAL.value
CHAIN = "chain"  # callscope's own family for everything without a GenAI operation

ERROR_TYPE = error_attributes.ERROR_TYPE
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT

# Where provider integrations keep a non-default endpoint among the constructor fields LangChain
# serializes (only fields set away from their default are there): langchain-openai, -ollama,
# Azure, -anthropic, Bedrock, -groq, -mistralai.
ENDPOINT_FIELDS = ("openai_api_base", "base_url", "azure_endpoint", "anthropic_api_url", "endpoint_url", "groq_api_base", "endpoint")
_ENDPOINT_FIELD_SET = frozenset(ENDPOINT_FIELDS)
_DEFAULT_PORTS = {"https": 443, "http": 80}

_GCP_GEMINI = gen_ai.GenAiProviderNameValues.GCP_GEMINI.value
_GCP_VERTEX_AI = gen_ai.GenAiProviderNameValues.GCP_VERTEX_AI.value

# LangChain's provider ids (``ls_provider``) that differ from the semconv well-known values.
_PROVIDERS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "google_vertexai": "gcp.vertex_ai",
    "google_gemini": "gcp.gemini",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
    "ibm": "ibm.watsonx.ai",
}

# Request parameters under the names provider packages give them, in LangChain's invocation
# params or among the model's constructor fields (``random_seed``: Mistral; ``num_predict``: Ollama).
_REQUEST_PARAMS: tuple[tuple[str, tuple[str, ...], type], ...] = (
    (gen_ai.GEN_AI_REQUEST_TEMPERATURE, ("temperature",), float),
    (gen_ai.GEN_AI_REQUEST_MAX_TOKENS, ("max_tokens", "max_output_tokens", "max_completion_tokens", "num_predict"), int),
    (gen_ai.GEN_AI_REQUEST_TOP_P, ("top_p",), float),
    (gen_ai.GEN_AI_REQUEST_TOP_K, ("top_k",), float),
    (gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY, ("frequency_penalty",), float),
    (gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY, ("presence_penalty",), float),
    (gen_ai.GEN_AI_REQUEST_SEED, ("seed", "random_seed"), int),
    (gen_ai.GEN_AI_REQUEST_CHOICE_COUNT, ("n",), int),
)

_REQUEST_PARAM_NAMES = frozenset(name for _, names, _ in _REQUEST_PARAMS for name in names)
_STOP_FIELDS = ("stop", "stop_sequences")
#: Every model field a request parameter is read from.
REQUEST_FIELD_NAMES = _REQUEST_PARAM_NAMES | frozenset(_STOP_FIELDS) | {"model_kwargs"}


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


def short_label(text: str) -> str:
    """Names and labels come from user config (run_name, metadata): short, never a secret, and
    encodable (a span name that is not fails the whole export batch)."""
    if len(text) > 12:
        # Component and node names repeat on every run and are longer than a credential
        # pattern's shortest match, so each would pay a scrub per run: remembered instead.
        return _scrubbed_label(text) if len(text) <= _MAX_LABEL else bound_text(text, _MAX_LABEL)
    return text if text.isascii() else encodable(text)


@functools.lru_cache(maxsize=1024)
def _scrubbed_label(text: str) -> str:
    return bound_text(text, _MAX_LABEL)


def describe_chain(
    serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], tags: Iterable[str] | None, metadata: Mapping[str, Any] | None
) -> tuple[str, Attributes]:
    """Span name and start attributes of a chain-like run (sequence, prompt, parser, lambda, node).

    The span is named after the component, so no attribute repeats the name.
    """
    name = component_name(serialized, kwargs.get("name"), "chain")
    run_type = kwargs.get("run_type")
    attributes: Attributes = {RUN_TYPE: short_label(run_type) if isinstance(run_type, str) and run_type else CHAIN}
    _add_run_context(attributes, tags, metadata)
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
    fields = constructor_fields(serialized)
    attributes: Attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: operation,
        gen_ai.GEN_AI_PROVIDER_NAME: provider_name(metadata.get("ls_provider"), component, fields),
        RUN_TYPE: "llm",
        COMPONENT: component,
    }
    if model:
        attributes[gen_ai.GEN_AI_REQUEST_MODEL] = model
    server = server_of(fields)
    if server is not None:
        attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server
    add_request_parameters(attributes, metadata, params, fields)
    if params.get("stream") is True or params.get("streaming") is True:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
    _add_run_context(attributes, tags, metadata)
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
    fields = constructor_fields(serialized)
    provider = provider_name(metadata.get("ls_provider"), component_name(serialized, None, "model"), fields)
    return provider, request_model(metadata, params), server_of(fields)


def constructor_fields(serialized: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The constructor fields LangChain serialized for a model (only those set away from their
    defaults); empty for a model LangChain could not serialize (see ``instances``)."""
    fields = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
    return fields if isinstance(fields, Mapping) else _NO_FIELDS


_NO_FIELDS: Mapping[str, Any] = {}


def server_of(fields: Mapping[str, Any]) -> tuple[str, int] | None:
    """``server.address`` and ``server.port`` of the endpoint a model was constructed with, when
    its constructor fields name one; only host and port are taken from the URL, never credentials
    or paths. A model on its provider's default endpoint says nothing, so nothing is guessed."""
    if _ENDPOINT_FIELD_SET.isdisjoint(fields):  # the usual model: on its provider's default endpoint
        return None
    for name in ENDPOINT_FIELDS:
        url = fields.get(name)
        if not isinstance(url, str) or not url:
            continue
        try:
            parts = urlsplit(url if "://" in url else f"//{url}")
            host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return None
        return (short_label(host), port) if host and port else None
    return None


def add_request_parameters(
    attributes: Attributes, metadata: Mapping[str, Any], params: Mapping[str, Any], fields: Mapping[str, Any]
) -> None:
    """``gen_ai.request.*`` parameters, each from the first place that has it: LangChain's
    ``ls_*`` metadata and invocation params (which see a call's own overrides), then the model's
    constructor fields and the ``model_kwargs`` a package sends as they are (ChatGroq keeps
    ``top_p`` and ``seed`` only there)."""
    # Runs on every model start: most sources are empty or hold no parameter, so each is
    # looked at once with a C-level set check before any name is looked up in it.
    extra = fields.get("model_kwargs") if fields else None
    extra = extra if type(extra) is dict and extra else _NO_FIELDS
    temperature, max_tokens = metadata.get("ls_temperature"), metadata.get("ls_max_tokens")
    names = _REQUEST_PARAM_NAMES
    if temperature is not None or max_tokens is not None or not (names.isdisjoint(params) and names.isdisjoint(fields) and names.isdisjoint(extra)):
        sources = ({"temperature": temperature, "max_tokens": max_tokens}, params, fields, extra)
        for key, keys, kind in _REQUEST_PARAMS:
            present = [found for source in sources for n in keys if (found := source.get(n)) is not None]
            if present:
                value = _first_number(kind, *present)
                if value is not None:
                    attributes[key] = value
    stop = metadata.get("ls_stop")
    if stop is None:
        stop = params.get("stop")
        if stop is None and (fields or extra):
            stop = _first_present(fields.get("stop"), fields.get("stop_sequences"), extra.get("stop"))
    if stop is None:
        return
    if isinstance(stop, str):
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = (short_label(stop),)
    elif isinstance(stop, Sequence) and stop and all(isinstance(s, str) for s in stop):
        stops = tuple(stop) if len(stop) <= _MAX_STOP_SEQUENCES else tuple(islice(stop, _MAX_STOP_SEQUENCES))
        # Usually a few short ASCII strings: one joined check instead of one per sequence.
        joined = "".join(stops)
        if len(joined) > 12 or not joined.isascii():
            stops = tuple([short_label(s) for s in stops])
        attributes[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops


def provider_name(ls_provider: Any, component: str, fields: Mapping[str, Any] = _NO_FIELDS) -> str:
    if isinstance(ls_provider, str) and ls_provider:
        provider = ls_provider.lower()
        if provider == "google_genai":
            return _google_backend(fields)
        return _PROVIDERS.get(provider) or short_label(provider)
    return component.lower() or "langchain"


def _google_backend(fields: Mapping[str, Any]) -> str:
    """langchain-google-genai says ``google_genai`` for both of its backends: which one a model
    calls is decided as the package decides it (``vertexai``, then ``GOOGLE_GENAI_USE_VERTEXAI``,
    then credentials or a project mean Vertex AI; otherwise the Gemini Developer API)."""
    vertexai = fields.get("vertexai")
    if vertexai is None:
        switch = os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower()
        if switch in ("true", "1", "yes"):
            vertexai = True
        elif switch in ("false", "0", "no"):
            vertexai = False
        else:
            vertexai = fields.get("credentials") is not None or fields.get("project") is not None
    return _GCP_VERTEX_AI if vertexai else _GCP_GEMINI


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
                reason = finish_reason(info, response_metadata)
                if reason:
                    finish_reasons.append(reason)
            if response_metadata:
                response_model = response_model or first_str(response_metadata.get("model_name"), response_metadata.get("model"))
                response_id = response_id or first_str(response_metadata.get("id"))
                if not provider_facts:
                    provider_facts = _provider_response_attributes(response_metadata)
            usage = getattr(message, "usage_metadata", None)
            if isinstance(usage, Mapping):
                saw_usage = True
                input_tokens += _int(usage.get("input_tokens"))
                output_tokens += _int(usage.get("output_tokens"))
                details = as_mapping(usage.get("input_token_details"))
                cache_read += _int(details.get("cache_read"))
                # langchain-anthropic zeroes cache_creation when the API splits it by cache TTL.
                cache_creation += _int(details.get("cache_creation")) or (
                    _int(details.get("ephemeral_5m_input_tokens")) + _int(details.get("ephemeral_1h_input_tokens"))
                )
                reasoning += _int(as_mapping(usage.get("output_token_details")).get("reasoning"))
    llm_output = getattr(response, "llm_output", None)
    if isinstance(llm_output, Mapping):
        response_model = response_model or first_str(llm_output.get("model_name"), llm_output.get("model"))
        token_usage = llm_output.get("token_usage") or llm_output.get("usage")
        if not saw_usage and isinstance(token_usage, Mapping):
            saw_usage = True
            input_tokens = _int(token_usage.get("prompt_tokens", token_usage.get("input_tokens")))
            output_tokens = _int(token_usage.get("completion_tokens", token_usage.get("output_tokens")))
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


def _provider_response_attributes(response_metadata: Mapping[str, Any]) -> Attributes:
    """A provider's own response attributes, from the response metadata its package fills:
    OpenAI's (and Azure OpenAI's) system fingerprint and service tier, Bedrock's request id."""
    attributes: Attributes = {}
    if response_metadata.get("model_provider") == "openai":
        fingerprint = first_str(response_metadata.get("system_fingerprint"))
        if fingerprint:
            attributes[openai_attributes.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = fingerprint
        tier = first_str(response_metadata.get("service_tier"))
        if tier:
            attributes[openai_attributes.OPENAI_RESPONSE_SERVICE_TIER] = tier
    request = response_metadata.get("ResponseMetadata")
    if isinstance(request, Mapping):
        request_id = first_str(request.get("RequestId"))
        if request_id:
            attributes[aws_attributes.AWS_REQUEST_ID] = request_id
    return attributes


def finish_reason(generation_info: Mapping[str, Any], response_metadata: Mapping[str, Any]) -> str | None:
    """Why a generation ended, as its provider said it: ``finish_reason`` (OpenAI, Groq, Mistral,
    Gemini), ``stop_reason`` (Anthropic), ``done_reason`` (Ollama), ``stopReason`` (Bedrock)."""
    return first_str(
        generation_info.get("finish_reason"),
        response_metadata.get("finish_reason"),
        response_metadata.get("stop_reason"),
        response_metadata.get("done_reason"),
        response_metadata.get("stopReason"),
    )


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
    _add_run_context(attributes, tags, metadata)
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
    _add_run_context(attributes, tags, metadata)
    return name, attributes


def _add_run_context(attributes: Attributes, tags: Iterable[str] | None, metadata: Mapping[str, Any] | None) -> None:
    for tag in tags or ():
        if isinstance(tag, str) and tag.startswith("retry:attempt:"):
            attempt = tag.rpartition(":")[2]
            if attempt.isdigit():
                attributes[RETRY_ATTEMPT] = int(attempt)
    if metadata and isinstance(metadata, Mapping):
        # LangGraph's thread: a resumed run (after an interrupt) continues the same conversation.
        thread = metadata.get("thread_id")
        if isinstance(thread, (str, int, UUID)) and not isinstance(thread, bool):
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = short_label(str(thread))
        node = metadata.get("langgraph_node")
        if isinstance(node, str):
            attributes[LANGGRAPH_NODE] = short_label(node)
            step = metadata.get("langgraph_step")
            if isinstance(step, int) and not isinstance(step, bool):
                attributes[LANGGRAPH_STEP] = step


@functools.lru_cache(maxsize=256)
def has_message(cls: type) -> bool:
    """Whether a generation of ``cls`` may carry a message. A text completion's ``Generation``
    does not, and asking that pydantic model for the field it lacks costs more than converting
    its text; only LangChain's own classes are judged by their declared fields."""
    if not cls.__module__.startswith("langchain_core."):
        return True
    fields = getattr(cls, "model_fields", None)
    return not isinstance(fields, Mapping) or "message" in fields


# --- small coercions --------------------------------------------------------------------------


def first_str(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return short_label(value)
    return None


def _first_present(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


_INT64_MAX = 2**63 - 1


def _first_number(kind: type, *values: Any) -> int | float | None:
    """The first value usable as an attribute of ``kind``: finite, and within int64 for ints
    (OTLP has no bigger integer), so a nonsense parameter is dropped rather than exported."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if kind is int:
            if abs(value) <= _INT64_MAX:
                return int(value)
            continue
        return float(value)
    return None


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _INT64_MAX:
        return value
    return 0


def as_mapping(value: Any) -> Mapping[str, Any]:
    # A dict (the usual case) without the Mapping ABC's Python-level instance check.
    return value if type(value) is dict or isinstance(value, Mapping) else {}
