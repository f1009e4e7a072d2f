"""OpenAI's Chat Completions and Embeddings APIs, as langchain-openai's SDK client speaks them.

``POST /v1/chat/completions`` answers JSON, or with ``"stream": true`` server-sent ``data:``
chunks ending with ``data: [DONE]``; when the request asks for ``stream_options.include_usage``
a last chunk with no choices carries the usage, as the real API sends it (otherwise no usage is
streamed at all). A request with ``tools`` gets one tool call (streamed as ``tool_calls``
deltas), a user message containing ``FAIL`` gets OpenAI's error JSON with status 400. The
response ``model`` is the dated model name the API reports, never the requested alias.

Azure OpenAI speaks the same wire format under
``/openai/deployments/{deployment}/chat/completions?api-version=...`` (and ``.../embeddings``);
``deployment_of(request)`` reads the deployment back from a recorded request. Azure answers with
the model the deployment runs (``AZURE_DEPLOYMENT_MODEL``), whatever the body says.

``POST /v1/embeddings`` returns a small deterministic vector per input, as floats or, when asked
(the openai SDK asks for it by default), as base64 float32 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from typing import Any

from tests.fakes.loopback import Reply, Request

RESPONSE_ID = "chatcmpl-fake0123456789"
SYSTEM_FINGERPRINT = "fp_fake42"
CREATED = 1_722_000_000
REPLY_TEXT = "Paris is the capital of France."

# Distinct numbers so a mix-up shows.
PROMPT_TOKENS = 31
COMPLETION_TOKENS = 17
CACHED_TOKENS = 7
REASONING_TOKENS = 5

TOOL_CALL_ID = "call_fakeWeather01"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}

ERROR_MESSAGE = "The fake server was asked to fail."
ERROR_TYPE = "invalid_request_error"
ERROR_CODE = "fake_failure"

EMBEDDING_DIMENSIONS = 8
EMBEDDING_PROMPT_TOKENS = 11

_DATED = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06", "text-embedding-3-small": "text-embedding-3-small"}
AZURE_DEPLOYMENT_MODEL = "gpt-4o-mini-2024-07-18"

_AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<operation>chat/completions|embeddings)$")


def response_model(requested: str | None) -> str:
    """The dated name the API reports for a requested model alias."""
    if not requested:
        return AZURE_DEPLOYMENT_MODEL
    return _DATED.get(requested, f"{requested}-2024-07-18")


def deployment_of(request: Request) -> str | None:
    """The Azure deployment a request was addressed to (None for the OpenAI path)."""
    match = _AZURE_PATH.match(request.path)
    return match["deployment"] if match else None


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": REASONING_TOKENS,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def route(request: Request) -> Reply:
    azure = _AZURE_PATH.match(request.path)
    operation = azure["operation"] if azure else request.path.removeprefix("/v1/")
    if request.method == "POST" and operation == "chat/completions":
        return _chat(request.json or {}, azure is not None)
    if request.method == "POST" and operation == "embeddings":
        return _embeddings(request.json or {})
    return _error(f"Unknown request URL: {request.method} {request.path}", status=404, type_="invalid_request_error", code="unknown_url")


def _error(message: str, *, status: int = 400, type_: str = ERROR_TYPE, param: str | None = "messages", code: str | None = ERROR_CODE) -> Reply:
    return Reply.json({"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status)


def _wants_failure(body: dict[str, Any]) -> bool:
    for message in body.get("messages") or ():
        if message.get("role") != "user":
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        if "FAIL" in text:
            return True
    return False


def _chat(body: dict[str, Any], azure: bool) -> Reply:
    if _wants_failure(body):
        return _error(ERROR_MESSAGE)
    model = AZURE_DEPLOYMENT_MODEL if azure else response_model(body.get("model"))
    tool = bool(body.get("tools"))
    finish_reason = "tool_calls" if tool else "stop"
    if body.get("stream"):
        return _chat_stream(body, model, tool, finish_reason)
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else REPLY_TEXT, "refusal": None, "annotations": []}
    if tool:
        message["tool_calls"] = [
            {"id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)}}
        ]
    return Reply.json(
        {
            "id": RESPONSE_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


def _chat_stream(body: dict[str, Any], model: str, tool: bool, finish_reason: str) -> Reply:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> tuple[None, dict[str, Any]]:
        payload = {
            "id": RESPONSE_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            payload["usage"] = None
        payload.update(extra)
        return None, payload

    def delta(content: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}

    events = [chunk([delta({"role": "assistant", "content": None if tool else "", "refusal": None})])]
    if tool:
        arguments = json.dumps(TOOL_ARGUMENTS)
        events.append(
            chunk([delta({"tool_calls": [{"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": ""}}]})])
        )
        for start in range(0, len(arguments), 6):
            events.append(chunk([delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start : start + 6]}}]})]))
    else:
        for word in REPLY_TEXT.split(" "):
            events.append(chunk([delta({"content": word if not events[1:] else " " + word})]))
    events.append(chunk([delta({}, finish_reason)]))
    if include_usage:
        events.append(chunk([], usage=usage()))
    return Reply.sse([*events, (None, "[DONE]")])


def embedding(text: str) -> list[float]:
    """A deterministic vector for ``text``: word hashes counted into a few buckets (so texts
    sharing words are near), exactly representable as float32."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        vector[hashlib.sha256(word.encode()).digest()[0] % EMBEDDING_DIMENSIONS] += 1.0
    return vector if any(vector) else [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)


def _embeddings(body: dict[str, Any]) -> Reply:
    inputs = body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        return _error("The fake server only embeds strings.", param="input", code=None)
    if any("FAIL" in item for item in inputs):
        return _error(ERROR_MESSAGE, param="input")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding(text)
        encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return Reply.json(
        {"object": "list", "data": data, "model": response_model(body.get("model")), "usage": {"prompt_tokens": EMBEDDING_PROMPT_TOKENS, "total_tokens": EMBEDDING_PROMPT_TOKENS}}
    )
