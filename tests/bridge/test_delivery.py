"""Delivery to the collector: a collector counts as down only when its address refuses connections."""

from __future__ import annotations

import socket

import pytest

from opentelemetry.sdk.trace.export import SpanExportResult

from callscope._bridge.delivery import refuses_connections


def test_only_a_refused_connection_counts_as_a_collector_that_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "GRPC_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        assert not refuses_connections(f"http://127.0.0.1:{port}")
        assert not refuses_connections(f"127.0.0.1:{port}")  # gRPC's scheme-less form
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # bound, never listening: connections are refused
        assert refuses_connections(f"http://127.0.0.1:{dead}/v1/traces")
        assert refuses_connections(f"127.0.0.1:{dead}")
        assert not refuses_connections("http://127.0.0.1")  # no explicit port: not guessed
        assert not refuses_connections("unix:///tmp/otel.sock")
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
        assert not refuses_connections(f"http://127.0.0.1:{dead}")  # a proxy may reach it


def test_a_pipeline_callscope_did_not_build_gives_up_at_exit_only_when_the_endpoint_refuses(caplog) -> None:
    """The exit check for opentelemetry-instrument's (or an app's) own BatchSpanProcessor."""
    import socket
    import weakref

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from callscope._bridge.delivery import _give_up_if_refused

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
        with provider.get_tracer("t").start_as_current_span("kept"):
            pass
        _give_up_if_refused(weakref.ref(provider), f"http://127.0.0.1:{port}")
        assert "export" not in vars(exporter)  # something listens: the exporter is left alone
    # Now nothing listens there: connections are refused.
    _give_up_if_refused(weakref.ref(provider), f"http://127.0.0.1:{port}")
    assert exporter.export([]) is SpanExportResult.FAILURE  # at once, no retries
    assert "callscope: 1 span(s) were not exported: not sent because the collector refused connections" in caplog.text
    provider.shutdown()
