"""Lifecycle and public surface: instrument/uninstrument, zero-code entry point, runs outside
any chain, suppression, invalid settings."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry.instrumentation.utils import suppress_instrumentation

import callscope
from callscope._bridge.handler import SpanHandler


def handlers_of_a_fresh_manager() -> list:
    return list(CallbackManager.configure().handlers)


def test_public_names_are_sorted_and_complete():
    assert callscope.__all__ == sorted(callscope.__all__, key=str.lower)
    for name in callscope.__all__:
        assert hasattr(callscope, name)


def test_entry_point_loads_the_instrumentor():
    (point,) = [p for p in entry_points(group="opentelemetry_instrumentor") if p.name == "callscope"]
    assert point.load() is callscope.CallscopeInstrumentor


def test_bare_model_and_tool_calls_are_traced(spans):
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    FakeListChatModel(responses=["x"]).invoke("hi")
    echo.invoke({"text": "t"})
    assert spans.names() == ["chat", "execute_tool echo"]
    assert all(s.parent is None for s in spans.all)


def test_uninstrument_leaves_langchain_exactly_as_before(tracer_provider, span_exporter):
    from langchain_core.runnables import config as lc_config
    from langchain_core.tracers import context as lc_context

    hooks_before = list(lc_context._configure_hooks)
    opener_before = lc_config._set_config_context
    model_methods_before = {name: BaseChatModel.__dict__[name] for name in ("stream", "astream", "_generate_with_cache")}
    assert not any(isinstance(h, SpanHandler) for h in handlers_of_a_fresh_manager())

    callscope.instrument(tracer_provider)
    assert any(isinstance(h, SpanHandler) for h in handlers_of_a_fresh_manager())
    assert lc_config._set_config_context is not opener_before
    callscope.uninstrument()

    assert lc_context._configure_hooks == hooks_before
    assert lc_config._set_config_context is opener_before
    assert {name: BaseChatModel.__dict__[name] for name in model_methods_before} == model_methods_before
    assert not any(isinstance(h, SpanHandler) for h in handlers_of_a_fresh_manager())
    RunnableLambda(lambda v: v).invoke(1)
    assert span_exporter.get_finished_spans() == ()


def test_instrument_twice_and_uninstrument_twice_are_harmless(tracer_provider, span_exporter, caplog):
    callscope.instrument(tracer_provider)
    callscope.instrument(tracer_provider)
    try:
        assert sum(isinstance(h, SpanHandler) for h in handlers_of_a_fresh_manager()) == 1
        RunnableLambda(lambda v: v, name="once").invoke(1)
        assert [s.name for s in span_exporter.get_finished_spans()] == ["once"]
    finally:
        callscope.uninstrument()
        callscope.uninstrument()


def test_uninstrument_with_a_run_in_flight_ends_its_span(tracer_provider, span_exporter):
    callscope.instrument(tracer_provider)
    manager = CallbackManager.configure()
    run = manager.on_chain_start(None, {}, name="in_flight")
    callscope.uninstrument()
    run.on_chain_end({})  # arrives after uninstrument: nothing raises, nothing is duplicated
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "in_flight" and span.attributes["callscope.run.evicted"] is True


def test_suppressed_instrumentation_makes_no_spans(spans):
    with suppress_instrumentation():
        RunnableLambda(lambda v: v).invoke(1)
    assert spans.all == []


def test_sampled_out_runs_still_nest_and_record_nothing(span_exporter):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    callscope.instrument(provider)
    try:
        (RunnableLambda(lambda v: v) | RunnableLambda(lambda v: v)).invoke(1)
        assert len(callscope.CallscopeInstrumentor().handler.registry) == 0
    finally:
        callscope.uninstrument()
    assert span_exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_in_flight_runs", 0), ("max_in_flight_runs", "10"), ("run_ttl_seconds", -1), ("max_attribute_length", 10), ("capture_content", "yes")],
)
def test_invalid_arguments_raise_a_config_error_naming_the_option(option, value, tracer_provider):
    with pytest.raises(callscope.ConfigError, match=option):
        callscope.instrument(tracer_provider, **{option: value})
    assert callscope.CallscopeInstrumentor().handler is None


def test_invalid_environment_values_warn_and_fall_back(monkeypatch, caplog, tracer_provider):
    monkeypatch.setenv("CALLSCOPE_MAX_IN_FLIGHT_RUNS", "lots")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe")
    caplog.set_level(logging.WARNING, logger="callscope")
    callscope.instrument(tracer_provider)
    try:
        handler = callscope.CallscopeInstrumentor().handler
        assert handler._settings.max_in_flight_runs == 10_000
        assert handler._settings.capture_content.on_spans is False
    finally:
        callscope.uninstrument()
    text = caplog.text
    assert "CALLSCOPE_MAX_IN_FLIGHT_RUNS" in text and "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in text


def test_a_second_instrument_with_other_arguments_warns_and_names_the_fix(tracer_provider, span_exporter, caplog):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    other_exporter = InMemorySpanExporter()
    other = TracerProvider()
    other.add_span_processor(SimpleSpanProcessor(other_exporter))
    caplog.set_level(logging.WARNING)
    callscope.instrument(tracer_provider)
    try:
        callscope.instrument(tracer_provider)  # the same again: nothing to say
        callscope.instrument()  # a plain call after the zero-code path: nothing to say either
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        callscope.instrument(tracer_provider=other, capture_content=True)
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.startswith("callscope is already instrumented, so instrument(capture_content=…, tracer_provider=…) changed nothing")
        assert "Call callscope.uninstrument() first" in warning
        RunnableLambda(lambda v: v, name="still_first").invoke(1)
        assert [s.name for s in span_exporter.get_finished_spans()] == ["still_first"]
        assert other_exporter.get_finished_spans() == ()
    finally:
        callscope.uninstrument()
    callscope.instrument(tracer_provider=other)  # after uninstrument(), new arguments apply
    try:
        RunnableLambda(lambda v: v, name="now_other").invoke(1)
        assert [s.name for s in other_exporter.get_finished_spans()] == ["now_other"]
    finally:
        callscope.uninstrument()
        other.shutdown()
