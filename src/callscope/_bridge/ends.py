"""What a run becomes at its end: the span's end attributes, its outcome, and the span ending.

LangChain's end and error callbacks carry only the ``run_id`` and the payload (outputs, the
model's response, the tool's output, the documents, or the exception). The run's record leaves
the registry first and its span ends whatever the payload does to the annotation, so a hostile
payload costs the span its details, never the span. Message content is added only when content
capture is on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any
from uuid import UUID

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import Status, StatusCode

from callscope._attributes import ERROR_MARK, INPUT, LANGGRAPH_INTERRUPTED, OUTPUT
from callscope._bridge import semconv as sc
from callscope._bridge.agents import agent_at_end
from callscope._bridge.labels import LabelsByTrace
from callscope._bridge.messages import output_messages
from callscope._bridge.metrics import Metrics
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.serialize import bound_text, encodable, safe_str, to_json
from callscope._bridge.settings import Settings
from callscope._bridge.stops import (
    control_flow_attributes,
    end_runs_stopped_with,
    mark_enclosing_runs_interrupted,
    stopped_by_caller,
)

#: A span's status description: the SDK keeps it whole, so it is bounded here.
_MAX_STATUS_DESCRIPTION = 1024
_MAX_DOCUMENTS = 64

Annotate = Callable[[RunRecord, Any], None]


class RunEnds:
    """Ends the spans of one span handler's runs (see ``SpanHandler.on_*_end`` / ``_error``)."""

    def __init__(self, settings: Settings, registry: RunRegistry, metrics: Metrics | None, labels_by_trace: LabelsByTrace) -> None:
        self._content = settings.capture_content.on_spans
        self._limit = settings.max_attribute_length
        self._registry = registry
        self._metrics = metrics
        self._labels_by_trace = labels_by_trace

    def end(self, run_id: UUID, annotate: Annotate, payload: Any, failed: bool = False) -> None:
        record = self._registry.pop(run_id)
        if record is None:
            return
        if record.metric_attributes is not None:
            # Before the span ends: a synchronous exporter must not lengthen the measured run.
            self._metrics.ended(record, payload, failed=failed)  # type: ignore[union-attr]
        try:
            if record.span.is_recording():
                annotate(record, payload)
        finally:
            # Whatever the payload does to the annotation (a hostile __iter__, say), the span
            # has left the registry and must still end, or it is lost.
            record.finish()
            if record.owns_scope and record.span.parent is None:
                self._labels_by_trace.forget(record.span.get_span_context().trace_id, record.scope.labels)

    def fail(self, run_id: UUID, error: BaseException) -> None:
        """End a run with ``error``: a failure, or a stop or steer that is none (``stops``)."""
        stopped = stopped_by_caller(error)
        record = self._registry.get(run_id) if stopped else None
        self.end(run_id, self._annotate_failure, error, failed=True)
        if record is not None:
            end_runs_stopped_with(self._registry, record, stopped)  # type: ignore[arg-type]

    def streamed_input(self, run_id: UUID, inputs: Any) -> None:
        """A streamed chain starts with LangChain's placeholder input (``{"input": ""}``) and is
        told its real input only as it ends: record that one, as ``invoke``'s start does."""
        record = self._registry.get(run_id)
        if record is not None and record.span.is_recording():
            record.span.set_attribute(INPUT, to_json(inputs, self._limit))

    def annotate_chain(self, record: RunRecord, outputs: Any) -> None:
        if self._content:
            record.span.set_attribute(OUTPUT, to_json(outputs, self._limit))
        if record.agent is not None:
            agent_at_end(record, outputs, self._content, self._limit)

    def annotate_model(self, record: RunRecord, response: Any) -> None:
        attributes = sc.model_end_attributes(response)
        record.add_stream_timing(attributes)
        if self._content:
            attributes.update(output_messages(response, self._limit))
        if attributes:  # a model that reports nothing (the fakes) costs the SDK no pass
            record.span.set_attributes(attributes)

    def annotate_tool(self, record: RunRecord, output: Any) -> None:
        if self._content:
            result = getattr(output, "content", output) if hasattr(output, "tool_call_id") else output
            record.span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_RESULT, to_json(result, self._limit))

    def annotate_retriever(self, record: RunRecord, documents: Any) -> None:
        if self._content:
            record.span.set_attribute(gen_ai.GEN_AI_RETRIEVAL_DOCUMENTS, to_json(_documents(documents), self._limit))

    def _annotate_failure(self, record: RunRecord, error: BaseException) -> None:
        if record.agent is not None:
            agent_at_end(record, None, self._content, self._limit)
        span = record.span
        attributes: dict[str, Any] = {}
        record.add_stream_timing(attributes)
        if record.streamed_request:
            attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        stopped = stopped_by_caller(error)
        steering = None if stopped else control_flow_attributes(error)
        if stopped:
            # The consumer stopped reading (break, close(), aclose(), garbage collection), or
            # cancelled the task running the run (astream_events and LangGraph do that to their
            # workers when their own consumer stops; a timeout does it too): the run ends early,
            # but nothing failed.
            attributes[stopped] = True
        elif steering is not None:
            attributes.update(steering)
            if LANGGRAPH_INTERRUPTED in steering:
                mark_enclosing_runs_interrupted(self._registry, record, steering)
        else:
            # Python checks only __name__ is UTF-8; __qualname__ and __module__ may hold anything.
            error_type = encodable(type(error).__qualname__)
            message = bound_text(safe_str(error), self._limit)
            attributes[sc.ERROR_TYPE] = error_type
            attributes[ERROR_MARK] = True
            span.add_event(
                "exception",
                {
                    "exception.type": f"{encodable(str(type(error).__module__))}.{error_type}",
                    "exception.message": message,
                    "exception.stacktrace": bound_text(_safe_traceback(error), self._limit),
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"[:_MAX_STATUS_DESCRIPTION]))
        span.set_attributes(attributes)


def _documents(documents: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        listed = list(islice(documents, _MAX_DOCUMENTS)) if documents is not None else []
    except Exception:  # a payload that is not the documented list of Documents
        return out
    for document in listed:
        item: dict[str, Any] = {"id": getattr(document, "id", None)}
        metadata = getattr(document, "metadata", None)
        if isinstance(metadata, Mapping) and isinstance(metadata.get("score"), (int, float)):
            item["score"] = metadata["score"]
        content = getattr(document, "page_content", None)
        if isinstance(content, str):
            item["content"] = content
        out.append(item)
    return out


def _safe_traceback(error: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(error))
    except Exception:
        return ""
