"""Google's Generative Language API (Gemini Developer API), as the google-genai SDK speaks it.

``POST /{version}/models/{model}:generateContent`` answers one ``GenerateContentResponse`` JSON;
``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` answers server-sent ``data:``
chunks, each a whole ``GenerateContentResponse`` carrying ``responseId``, ``modelVersion`` and the
usage counted so far (``usageMetadata`` is cumulative, as the real API sends it); the last chunk
carries ``finishReason`` and the final counts. The usage reports cached prompt tokens
(``cachedContentTokenCount``) and hidden thinking tokens (``thoughtsTokenCount``, not part of
``candidatesTokenCount`` but part of ``totalTokenCount``).

A request with ``tools`` gets one ``functionCall`` part (with an ``id`` and, as Gemini 2.5 sends
it, a ``thoughtSignature``) and ``finishReason`` ``STOP`` (Gemini has no tool-call finish reason);
a user message containing ``FAIL`` gets Google's error JSON (``{"error": {"code": 400, "message",
"status": "INVALID_ARGUMENT"}}``) with status 400, streamed or not; one containing ``LONG`` is cut
short with ``finishReason`` ``MAX_TOKENS``. google-genai 3.x addresses the Developer API as
``v1`` (``GOOGLE_AI_API_DEFAULT_VERSION``), older releases as ``v1beta``: both are served.

Vertex AI speaks the same bodies under ``/v1beta1/publishers/google/models/{model}:...`` (express
mode, API key) or ``/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:...``
(project and credentials); ``backend_of(request)`` tells the two APIs apart.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.loopback import Reply, Request

RESPONSE_ID = "fakeGeminiResp0123XYZ"
REPLY_TEXT = "Paris is the capital of France."
LONG_TEXT = "Paris is the capital"

FINISH_STOP = "STOP"
FINISH_MAX_TOKENS = "MAX_TOKENS"

# Distinct numbers so a mix-up shows. Output tokens in LangChain's sense are candidates + thoughts.
PROMPT_TOKENS = 29
CANDIDATES_TOKENS = 13
CACHED_TOKENS = 11
THOUGHTS_TOKENS = 7

TOOL_CALL_ID = "fake-call-weather-01"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}
THOUGHT_SIGNATURE = "ZmFrZS10aG91Z2h0LXNpZ25hdHVyZQ=="

ERROR_CODE = 400
ERROR_STATUS = "INVALID_ARGUMENT"
ERROR_MESSAGE = "The fake server was asked to fail."

_MODEL_VERSIONS = {"gemini-2.5-flash": "gemini-2.5-flash-preview-05-20"}

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1)/"
    r"(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
    r"(?P<publisher>publishers/google/)?"
    r"models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)


def model_version(requested: str) -> str:
    """The ``modelVersion`` the API reports for a requested model name."""
    return _MODEL_VERSIONS.get(requested, f"{requested}-001")


def model_of(request: Request) -> str | None:
    match = _PATH.match(request.path)
    return match["model"] if match else None


def backend_of(request: Request) -> str | None:
    """``"gemini"`` for the Developer API path, ``"vertex"`` for Vertex AI's publisher path."""
    match = _PATH.match(request.path)
    if not match:
        return None
    return "vertex" if match["publisher"] else "gemini"


def usage(*, final: bool = True) -> dict[str, Any]:
    """``usageMetadata`` as the API reports it: a chunk before the last has no candidates count."""
    candidates = CANDIDATES_TOKENS if final else 0
    metadata: dict[str, Any] = {
        "promptTokenCount": PROMPT_TOKENS,
        "cachedContentTokenCount": CACHED_TOKENS,
        "thoughtsTokenCount": THOUGHTS_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + candidates + THOUGHTS_TOKENS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": CACHED_TOKENS}],
    }
    if final:
        metadata["candidatesTokenCount"] = CANDIDATES_TOKENS
    return metadata


def route(request: Request) -> Reply:
    match = _PATH.match(request.path)
    if request.method != "POST" or not match:
        return _error(f"Unknown request URL: {request.method} {request.path}", code=404, status="NOT_FOUND")
    body = request.json or {}
    if _user_text_contains(body, "FAIL"):
        return _error(ERROR_MESSAGE)
    version = model_version(match["model"])
    tool = bool(body.get("tools"))
    finish = FINISH_MAX_TOKENS if _user_text_contains(body, "LONG") and not tool else FINISH_STOP
    if match["method"] == "streamGenerateContent":
        return _stream(version, tool, finish)
    if tool:
        parts = [_function_call_part()]
    else:
        parts = [{"text": LONG_TEXT if finish == FINISH_MAX_TOKENS else REPLY_TEXT}]
    return Reply.json(_response(version, parts, finish, usage()))


def _error(message: str, *, code: int = ERROR_CODE, status: str = ERROR_STATUS) -> Reply:
    return Reply.json({"error": {"code": code, "message": message, "status": status}}, status=code)


def _user_text_contains(body: dict[str, Any], needle: str) -> bool:
    for content in body.get("contents") or ():
        if content.get("role", "user") != "user":
            continue
        for part in content.get("parts") or ():
            if needle in str(part.get("text", "")):
                return True
    return False


def _function_call_part() -> dict[str, Any]:
    return {"functionCall": {"id": TOOL_CALL_ID, "name": TOOL_NAME, "args": TOOL_ARGUMENTS}, "thoughtSignature": THOUGHT_SIGNATURE}


def _response(version: str, parts: list[dict[str, Any]], finish: str | None, usage_metadata: dict[str, Any]) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage_metadata, "modelVersion": version, "responseId": RESPONSE_ID}


def _stream(version: str, tool: bool, finish: str) -> Reply:
    if tool:
        # Gemini sends a function call whole, in one chunk.
        events = [_response(version, [_function_call_part()], finish, usage())]
    else:
        text = LONG_TEXT if finish == FINISH_MAX_TOKENS else REPLY_TEXT
        head, _, tail = text.partition(" ")
        events = [_response(version, [{"text": head}], None, usage(final=False)), _response(version, [{"text": " " + tail}], finish, usage())]
    return Reply.sse((None, json.dumps(event, separators=(",", ":"))) for event in events)
