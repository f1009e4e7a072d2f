"""Message content, opt-in, in the JSON shape of the GenAI message schemas.

``gen_ai.input.messages``, ``gen_ai.output.messages`` and ``gen_ai.system_instructions`` (the
semantic conventions' ``docs/gen-ai/*.json`` schemas): LangChain messages, prompts and
generations read from their fields, each part bounded and scrubbed (``serialize``), long lists
cut with a marker saying how much was left out. Called only when content capture is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from callscope._bridge.attribute_values import Attributes, as_mapping, short_label
from callscope._bridge.providers import finish_reason
from callscope._bridge.semconv import has_message
from callscope._bridge.serialize import MAX_ITEMS, bound_text, json_text, to_jsonable


_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "tool": "tool", "function": "tool"}


def input_messages(messages: Any, limit: int) -> Attributes:
    """``gen_ai.input.messages`` and ``gen_ai.system_instructions`` for a chat model start."""
    conversation = messages[0] if isinstance(messages, Sequence) and messages and isinstance(messages[0], Sequence) else messages
    system_parts: list[dict[str, Any]] = []
    converted: list[dict[str, Any]] = []
    for message in islice(conversation or (), MAX_ITEMS):
        kind = getattr(message, "type", None)
        if kind in ("system", "developer"):
            system_parts.extend(_text_parts(getattr(message, "content", ""), limit))
            continue
        role = (_ROLES.get(kind) or short_label(kind)) if isinstance(kind, str) else "user"
        if role == "tool":
            response = to_jsonable(getattr(message, "content", None), limit)
            parts = [{"type": "tool_call_response", "id": to_jsonable(getattr(message, "tool_call_id", None), limit), "response": response}]
        else:
            parts = _text_parts(getattr(message, "content", ""), limit)
            # A human message has no tool calls, and asking a pydantic model for a field it lacks
            # costs more than converting the message.
            if kind != "human":
                parts += _tool_call_parts(getattr(message, "tool_calls", None), limit)
        converted.append({"role": role, "parts": parts})
    attributes: Attributes = {gen_ai.GEN_AI_INPUT_MESSAGES: json_text(_mark_cut(converted, conversation), limit)}
    if system_parts:
        attributes[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS] = json_text(system_parts, limit)
    return attributes


def prompt_messages(prompts: Any, limit: int) -> Attributes:
    """``gen_ai.input.messages`` for a text-completion LLM start (one user message per prompt)."""
    converted = [{"role": "user", "parts": _text_parts(p, limit)} for p in islice(prompts or (), MAX_ITEMS) if isinstance(p, str)]
    return {gen_ai.GEN_AI_INPUT_MESSAGES: json_text(_mark_cut(converted, prompts), limit)}


def output_messages(response: Any, limit: int) -> Attributes:
    converted: list[dict[str, Any]] = []
    for generation_list in islice(getattr(response, "generations", None) or (), MAX_ITEMS):
        for generation in islice(generation_list or (), MAX_ITEMS):
            message = getattr(generation, "message", None) if has_message(type(generation)) else None
            info = as_mapping(getattr(generation, "generation_info", None))
            response_metadata = as_mapping(getattr(message, "response_metadata", None))
            reason = finish_reason(info, response_metadata) or "stop"
            if message is not None:
                tool_calls = getattr(message, "tool_calls", None)
                content = getattr(message, "content", "")
                if tool_calls and not isinstance(content, str):
                    content = _without_tool_call_blocks(content, tool_calls)
                parts = _text_parts(content, limit) + _tool_call_parts(tool_calls, limit)
            else:
                parts = _text_parts(getattr(generation, "text", ""), limit)
            converted.append({"role": "assistant", "parts": parts, "finish_reason": reason})
    return {gen_ai.GEN_AI_OUTPUT_MESSAGES: json_text(converted, limit)}


# The message JSON is built from plain data: every value taken from the payload goes through
# to_jsonable or bound_text here, so json_text encodes it without walking it again. Lists are
# cut as to_jsonable cuts them.


def _mark_cut(converted: list[Any], source: Any) -> list[Any]:
    try:
        left_out = len(source) - MAX_ITEMS
    except Exception:  # not sized (a generator) or its __len__ raises: nothing to count
        return converted
    if left_out > 0:
        converted.append(f"…{left_out} more")
    return converted


def _text_parts(content: Any, limit: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": bound_text(content, limit)}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, Sequence):
        for block in islice(content, MAX_ITEMS):
            if isinstance(block, str):
                parts.append({"type": "text", "content": bound_text(block, limit)})
            elif isinstance(block, Mapping) and isinstance(text := block.get("text"), str):
                parts.append({"type": "text", "content": bound_text(text, limit)})
            elif isinstance(block, Mapping):
                # Images, audio, provider-specific blocks: a generic part that keeps its type.
                kind = block.get("type")
                rest = {key: value for key, value in block.items() if key != "type"}
                parts.append({"type": bound_text(kind, 64) if isinstance(kind, str) and kind else "generic", "content": to_jsonable(rest, limit)})
        _mark_cut(parts, content)
    return parts


# Content blocks in which a provider package keeps its raw form of a call that LangChain also
# parsed into ``tool_calls``: Anthropic's and Bedrock's ``tool_use`` (streamed with ``index`` and
# ``partial_json`` leftovers), OpenAI Responses' ``function_call``, LangChain's standard blocks.
_TOOL_CALL_BLOCKS = frozenset({"tool_use", "function_call", "tool_call", "tool_call_chunk"})


def _without_tool_call_blocks(content: Any, tool_calls: Any) -> Any:
    """The content without the blocks that repeat a parsed tool call: one call, one part."""
    if not isinstance(content, Sequence) or not isinstance(tool_calls, Sequence):
        return content
    calls = [call for call in islice(tool_calls, MAX_ITEMS) if isinstance(call, Mapping)]
    ids = {call.get("id") for call in calls} - {None}
    names = {call.get("name") for call in calls}

    def repeats_a_call(block: Any) -> bool:
        if not isinstance(block, Mapping) or block.get("type") not in _TOOL_CALL_BLOCKS:
            return False
        block_id = block.get("id") or block.get("call_id")
        return block_id in ids if block_id else block.get("name") in names

    return [block for block in content if not repeats_a_call(block)]


def _tool_call_parts(tool_calls: Any, limit: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in islice(tool_calls or (), MAX_ITEMS):
        if isinstance(call, Mapping):
            parts.append(
                {
                    "type": "tool_call",
                    "id": to_jsonable(call.get("id"), limit),
                    "name": to_jsonable(call.get("name"), limit),
                    "arguments": to_jsonable(call.get("args"), limit),
                }
            )
    return _mark_cut(parts, tool_calls)
