"""Where each provider package puts what it knows about a request and its response.

LangChain gives callbacks a model's ``ls_*`` metadata, its invocation params and the
constructor fields it serializes; each provider package spreads its facts differently among
those and its response metadata (README, Providers). This module knows where: the endpoint
fields, the request parameters under every package's names, the provider name (by LangChain's
``ls_provider``, and for langchain-google-genai by its backend), finish reasons under each
package's key, and the response attributes only one provider has. Nothing is guessed from a
class name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import aws_attributes, openai_attributes
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import server_attributes

from callscope._bridge.attribute_values import Attributes, first_number, first_present, first_str, short_label

SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
_MAX_STOP_SEQUENCES = 16

# Where provider packages keep a non-default endpoint among a model's constructor fields (in
# LangChain's serialization only fields set away from their default are there): langchain-openai,
# -ollama, Azure, -anthropic, -google-genai, Bedrock, -groq, -mistralai.
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
    if type(fields) is dict and _ENDPOINT_FIELD_SET.isdisjoint(fields):  # the usual model: on its default endpoint
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
                value = first_number(kind, *present)
                if value is not None:
                    attributes[key] = value
    stop = metadata.get("ls_stop")
    if stop is None:
        stop = params.get("stop")
        if stop is None and (fields or extra):
            stop = first_present(fields.get("stop"), fields.get("stop_sequences"), extra.get("stop"))
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


def response_attributes(response_metadata: Mapping[str, Any]) -> Attributes:
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
