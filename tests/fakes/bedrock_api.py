"""Amazon Bedrock Runtime's Converse API, as botocore calls it with ``endpoint_url`` pointed here.

``POST /model/{modelId}/converse`` answers one JSON document; ``POST
/model/{modelId}/converse-stream`` answers in AWS's binary event-stream encoding
(``application/vnd.amazon.eventstream``), one message per event: total length and headers length
(4 bytes big-endian each), the CRC32 of those 8 bytes, the headers (``:event-type``,
``:content-type``, ``:message-type``, all strings, type 7), the JSON payload, then the CRC32 of
everything before it. Both answers carry ``x-amzn-requestid``, which botocore puts in
``ResponseMetadata.RequestId``; Bedrock sends no response id or model of its own.

A request with ``toolConfig`` gets a call to its first tool (``stopReason`` ``tool_use``), a user
message containing ``FAIL`` gets a 400 ``ValidationException``, one containing ``LONG`` stops on
``max_tokens``; anything else gets ``TEXT`` and ``end_turn``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from tests.fakes.loopback import Reply, Request

REQUEST_ID = "7d3f2a9c-5e61-4b8a-9c0d-2f1e4b6a8c31"
TEXT = "Bonjour from the fake Bedrock."
TOOL_USE_ID = "tooluse_Qx7Lm2NbR4eWk9Tz1Yv3Ha"
TOOL_INPUT = {"city": "Paris", "unit": "celsius"}
# Bedrock (for Anthropic models) reports cache reads and writes apart from inputTokens; totalTokens
# counts all of them.
USAGE = {"inputTokens": 13, "outputTokens": 7, "cacheReadInputTokens": 5, "cacheWriteInputTokens": 3}
USAGE["totalTokens"] = sum(USAGE.values())
LATENCY_MS = 321
ERROR_MESSAGE = "The provided request is not valid: the fake server was asked to FAIL"
ERROR_TYPE = "ValidationException"

EVENT_STREAM = "application/vnd.amazon.eventstream"


def model_of(request: Request) -> str:
    """The model id in the request path (botocore percent-encodes the ``:`` of ``...-v1:0``)."""
    return unquote(request.path.split("/")[2])


def route(request: Request) -> Reply:
    body = request.json or {}
    parts = request.path.strip("/").split("/")
    if request.method != "POST" or len(parts) != 3 or parts[0] != "model" or parts[2] not in ("converse", "converse-stream"):
        return _error(404, "UnknownOperationException", f"fake Bedrock does not serve {request.method} {request.path}")
    text = _user_text(body)
    if "FAIL" in text:
        return _error(400, ERROR_TYPE, ERROR_MESSAGE)
    tools = (body.get("toolConfig") or {}).get("tools") or []
    tool_name = tools[0]["toolSpec"]["name"] if tools else None
    stop_reason = "tool_use" if tool_name else "max_tokens" if "LONG" in text else "end_turn"
    if parts[2] == "converse-stream":
        return Reply(200, {"content-type": EVENT_STREAM, "x-amzn-requestid": REQUEST_ID}, _stream(tool_name, stop_reason))
    if tool_name:
        content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": TOOL_USE_ID, "name": tool_name, "input": TOOL_INPUT}}]
    else:
        content = [{"text": TEXT}]
    reply = Reply.json(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": USAGE,
            "metrics": {"latencyMs": LATENCY_MS},
        }
    )
    reply.headers["x-amzn-requestid"] = REQUEST_ID
    return reply


def _user_text(body: dict[str, Any]) -> str:
    return " ".join(
        block.get("text", "") for message in body.get("messages") or () if message.get("role") == "user" for block in message.get("content") or ()
    )


def _error(status: int, error_type: str, message: str) -> Reply:
    reply = Reply.json({"message": message}, status=status)
    reply.headers.update({"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/", "x-amzn-requestid": REQUEST_ID})
    return reply


def _stream(tool_name: str | None, stop_reason: str) -> Iterable[bytes]:
    yield event("messageStart", {"role": "assistant"})
    if tool_name:
        yield event("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": tool_name}}})
        arguments = json.dumps(TOOL_INPUT)
        cut = len(arguments) // 2
        for fragment in (arguments[:cut], arguments[cut:]):
            yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}})
    else:
        # Claude on Bedrock opens a text block with its first delta, no contentBlockStart.
        cut = len(TEXT) // 2
        for fragment in (TEXT[:cut], TEXT[cut:]):
            yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": fragment}})
    yield event("contentBlockStop", {"contentBlockIndex": 0})
    yield event("messageStop", {"stopReason": stop_reason})
    yield event("metadata", {"usage": USAGE, "metrics": {"latencyMs": LATENCY_MS}})


def event(event_type: str, payload: Any) -> bytes:
    """One event-stream message carrying ``payload`` as JSON."""
    headers = b"".join(
        _string_header(name, value) for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event"))
    )
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def _string_header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return struct.pack(">B", len(name_bytes)) + name_bytes + struct.pack(">BH", 7, len(value_bytes)) + value_bytes
