"""The floor: the least any callback-based LangChain -> OpenTelemetry bridge can cost.

One bare span per run, started on ``on_*_start`` and ended on the matching end or error,
parented through ``parent_run_id``. No attributes, no context propagation, no bounds, no
safety nets. It is registered the same way callscope is (a LangChain configure hook), so both
pay the same LangChain dispatch cost and the difference between them is callscope's own work.
"""

from __future__ import annotations

import contextvars
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook
from opentelemetry.trace import Tracer, set_span_in_context


class FloorHandler(BaseCallbackHandler):
    run_inline = True

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._spans: dict[UUID, Any] = {}

    def _start(self, run_id: UUID, parent_run_id: UUID | None = None, **_: Any) -> None:
        parent = self._spans.get(parent_run_id) if parent_run_id is not None else None
        context = set_span_in_context(parent) if parent is not None else None
        self._spans[run_id] = self._tracer.start_span("run", context=context)

    def _end(self, *_: Any, run_id: UUID, **__: Any) -> None:
        span = self._spans.pop(run_id, None)
        if span is not None:
            span.end()

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self._start(**kwargs)

    on_chat_model_start = on_llm_start = on_tool_start = on_retriever_start = on_chain_start
    on_chain_end = on_chain_error = on_llm_end = on_llm_error = _end
    on_tool_end = on_tool_error = on_retriever_end = on_retriever_error = _end


class NoopHandler(BaseCallbackHandler):
    """Receives every callback and does nothing: what LangChain's own dispatch costs."""

    run_inline = True


def install(tracer: Tracer) -> FloorHandler:
    return _register(FloorHandler(tracer))


def install_noop() -> NoopHandler:
    return _register(NoopHandler())


def _register(handler: Any) -> Any:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("benchmark_handler", default=handler)
    register_configure_hook(var, True)
    return handler
