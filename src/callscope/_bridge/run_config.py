"""What a run's ``RunnableConfig`` says about it: the user's tags and metadata, the conversation it
belongs to, the LangGraph node and step it runs in, and which attempt of a retry it is.

LangChain passes every run the tags and metadata of its config, merged with those of the runs
above it and with its own bookkeeping (``seq:step:2``, ``ls_provider``, ``langgraph_node``…). A
span records only the user's, and only where they were set: a tag or metadata value the parent
run already had is not repeated on every run below it (Jaeger finds a trace by any of its spans).

The conversation (``gen_ai.conversation.id``) is on every run that belongs to one: LangGraph's
``thread_id`` is in each run's metadata; ``RunnableWithMessageHistory``'s ``session_id`` is only
in the ``configurable`` of the config the run executes in, which LangChain never passes to
callbacks, so it is read from the run's config context, and the runs above it that started
before it was known get it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from callscope._attributes import LANGGRAPH_NODE, LANGGRAPH_STEP, RETRY_ATTEMPT, RUN_METADATA_PREFIX, RUN_TAGS
from callscope._bridge.attribute_values import Attributes, first_number, short_label
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.serialize import REDACTED, bound_text, is_secret_key, to_json

_MAX_TAGS = 32
_MAX_METADATA = 32
_MAX_KEY = 64
_MAX_VALUE = 256
# Tags LangChain and LangGraph add to a child run for their own bookkeeping.
_INTERNAL_TAG_PREFIXES = ("seq:step:", "map:key:", "condition:", "branch:", "retry:attempt:", "graph:step:", "langsmith:")
# Metadata LangChain, LangSmith and LangGraph add: LangSmith's ``ls_*`` and ``lc_*``, LangGraph's
# node and checkpoint keys, and the configurable keys LangGraph copies for its own tracing.
_INTERNAL_KEY_PREFIXES = ("ls_", "lc_", "langgraph_", "checkpoint_", "__")
_INTERNAL_KEYS = frozenset({"checkpoint_id", "checkpoint_ns", "checkpoint_map", "task_id", "run_id", "assistant_id", "graph_id"})

_EMPTY: Mapping[str, Any] = {}
_NO_TAGS: frozenset[str] = frozenset()
_MAX_REMEMBERED = 4096


class RunConfigReader:
    """Reads tags, metadata and the conversation of each run as it starts."""

    def __init__(self, registry: RunRegistry, conversation_keys: Sequence[str], max_length: int) -> None:
        self._registry = registry
        self._max_value = min(_MAX_VALUE, max_length)
        self._conversation_keys = tuple(conversation_keys)
        self._conversation_key_set = frozenset(self._conversation_keys)
        self._not_user_keys = _INTERNAL_KEYS.union(self._conversation_keys)
        # LangChain's and LangGraph's own metadata keys and tags, as met: they repeat on every run.
        self._internal_keys_seen: set[Any] = set()
        self._internal_tags_seen: set[Any] = set()

    def add(self, attributes: Attributes, tags: Any, metadata: Any, config: Any, parent: RunRecord | None) -> tuple[frozenset[str], Mapping[str, Any], tuple[Any, Any] | None, str | None]:
        """Put this run's own tags, metadata and conversation among its start attributes, and
        its LangGraph node attempt; return what its children compare theirs with."""
        # On every run start: most runs carry only LangChain's and LangGraph's own tags and keys,
        # and each check below settles that first with a C-level set operation.
        if type(metadata) is not dict:
            metadata = metadata if isinstance(metadata, Mapping) else _EMPTY
        if parent is None:
            parent_tags, parent_metadata, conversation = _NO_TAGS, _EMPTY, None
        else:
            parent_tags, parent_metadata, conversation = parent.user_tags, parent.user_metadata or _EMPTY, parent.conversation
        user_tags = _NO_TAGS
        if tags:
            try:
                only_internal = self._internal_tags_seen.issuperset(tags)  # seq:step:N, graph:step:N…
            except TypeError:  # an unhashable tag: a payload LangChain never sends
                only_internal = True
            if not only_internal:
                user_tags = self._user_tags(tags, attributes)
        if user_tags and user_tags != parent_tags:
            new = sorted(tag for tag in user_tags if tag not in parent_tags)
            if new:
                attributes[RUN_TAGS] = tuple([bound_text(tag, self._max_value) for tag in new[:_MAX_TAGS]])
        # Usually every key is one LangChain or LangGraph has used before (one C-level subset
        # test); only the user's keys, the conversation's, and a key met for the first time are
        # judged in Python.
        if not metadata or self._internal_keys_seen.issuperset(metadata):
            user_metadata = _EMPTY
            named = None
        else:
            unknown = metadata.keys() - self._internal_keys_seen
            user_metadata = self._user_metadata(metadata, unknown)
            if user_metadata and user_metadata != parent_metadata:
                changed = {k: v for k, v in user_metadata.items() if parent_metadata.get(k, _EMPTY) != v}
                _add_metadata(attributes, changed, self._max_value)
            named = None if self._conversation_key_set.isdisjoint(unknown) else self._named_in(metadata)
        if named is not None:
            conversation = named
        elif conversation is None and config:
            configurable = config.get("configurable")
            if configurable:
                conversation = self._named_in(configurable)
        if conversation is not None:
            attributes[gen_ai.GEN_AI_CONVERSATION_ID] = conversation
            if parent is not None and parent.conversation is None:
                self._tell_runs_above(parent, conversation)
        if parent is not None and type(tags) is list and tags:
            first = tags[0]  # LangGraph's graph:step:N, a node run's own tag, comes first
            if type(first) is str and first.startswith("graph:step:"):
                self._add_node(attributes, metadata, parent)
        markers = (metadata.get("ls_integration"), metadata.get("lc_agent_name")) if metadata else None
        return user_tags, user_metadata, markers, conversation

    def _add_node(self, attributes: Attributes, metadata: Mapping[str, Any], parent: RunRecord) -> None:
        """A LangGraph node's run: its node, step and attempt. Runs inside the node carry the same
        node and step in their metadata; as with the user's own labels, only the run where they
        are set records them (the runs inside are its descendants in the trace)."""
        node = metadata.get("langgraph_node")
        if type(node) is str:
            attributes[LANGGRAPH_NODE] = short_label(node)
            step = metadata.get("langgraph_step")
            if type(step) is int:
                attributes[LANGGRAPH_STEP] = step
        # A node retried by its RetryPolicy starts again as a new run of the same task (same
        # parent, same langgraph_checkpoint_ns) and nothing says which attempt it is: count.
        task = metadata.get("langgraph_checkpoint_ns")
        if type(task) is str:
            attempts = parent.node_attempts
            if attempts is None:
                attempts = parent.node_attempts = {}
            attempt = attempts[task] = attempts.get(task, 0) + 1
            if attempt > 1:  # as LangChain's with_retry tags it: nothing on the first attempt
                attributes[RETRY_ATTEMPT] = attempt

    def _named_in(self, mapping: Mapping[str, Any]) -> str | None:
        """The conversation ``mapping`` names under the first conversation key it has."""
        for key in self._conversation_keys:
            value = mapping.get(key)
            if value is not None and not isinstance(value, bool) and isinstance(value, (str, int, UUID)):
                return short_label(str(value))
        return None

    def _tell_runs_above(self, record: RunRecord | None, conversation: str) -> None:
        """The runs above that started before the conversation was known (the history wrapper
        itself, whose own start has no config context) belong to it too."""
        while record is not None and record.conversation is None:
            record.conversation = conversation
            if record.sampled and record.span.is_recording():
                record.span.set_attribute(gen_ai.GEN_AI_CONVERSATION_ID, conversation)
            record = self._registry.get(record.parent_run_id)

    def _user_metadata(self, metadata: Mapping[str, Any], unknown: set[Any]) -> Mapping[str, Any]:
        user: dict[str, Any] = {}
        for key in unknown:
            if type(key) is str and key not in self._not_user_keys and not key.startswith(_INTERNAL_KEY_PREFIXES):
                user[key] = metadata[key]
            elif key in self._conversation_key_set:
                continue  # never remembered: a run that has one is always read
            elif len(self._internal_keys_seen) < _MAX_REMEMBERED:
                self._internal_keys_seen.add(key)
        return user or _EMPTY

    def _user_tags(self, tags: Any, attributes: Attributes) -> frozenset[str]:
        user = None
        for tag in tags:
            if type(tag) is str and tag and not tag.startswith(_INTERNAL_TAG_PREFIXES):
                if user is None:
                    user = [tag]
                else:
                    user.append(tag)
            elif type(tag) is str and tag.startswith("retry:attempt:"):
                # LCEL's with_retry tags attempts 2, 3…: never remembered, so always read here.
                attempt = tag.rpartition(":")[2]
                if attempt.isdigit():
                    attributes[RETRY_ATTEMPT] = int(attempt)
            elif len(self._internal_tags_seen) < _MAX_REMEMBERED:
                self._internal_tags_seen.add(tag)
        return frozenset(user) if user else _NO_TAGS


def _add_metadata(attributes: Attributes, metadata: Mapping[str, Any], limit: int) -> None:
    for key in sorted(metadata)[:_MAX_METADATA]:
        name = RUN_METADATA_PREFIX + short_label(key[:_MAX_KEY])
        attributes[name] = REDACTED if is_secret_key(key) else _value(metadata[key], limit)


def _value(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return bound_text(value, limit)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        # Within OTLP's int64, or finite: a number as it is; anything else as JSON text.
        number = first_number(int if isinstance(value, int) else float, value)
        if number is not None:
            return number
    return to_json(value, limit)
