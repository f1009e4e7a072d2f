"""GenAI client metrics exported to a real OTLP receiver (rotel) over gRPC and HTTP/protobuf:
from a meter provider built as configure() builds it, from configure() itself, and from the
zero-code path. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.trace import TracerProvider

import callscope
from callscope._bridge.export import build_meter_provider, otlp_metric_exporter_from_env
from callscope._bridge.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from tests.integration.conftest import Receiver
from tests.models import chat_model

pytestmark = pytest.mark.integration

DURATION = "gen_ai.client.operation.duration"
TOKENS = "gen_ai.client.token.usage"
FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
PER_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
ALL = {DURATION, TOKENS, FIRST_CHUNK, PER_CHUNK}


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "CALLSCOPE_METRICS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "callscope-metrics-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    yield monkeypatch


def _last(rows: list[dict], name: str, **attributes: str) -> dict:
    """The newest point of a metric with these attributes (a cumulative point grows per export)."""
    matching = [r for r in rows if r["name"] == name and all(r["attributes"].get(k.replace("__", ".")) == v for k, v in attributes.items())]
    assert matching, (name, attributes, rows)
    return matching[-1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_metrics_arrive_intact(rotel_receiver: Receiver, otlp_env: pytest.MonkeyPatch, protocol: str) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rotel_receiver.grpc_endpoint if protocol == "grpc" else rotel_receiver.http_base)
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    exporter = otlp_metric_exporter_from_env()
    assert exporter is not None
    meter_provider = build_meter_provider(service_name="ignored-because-env-wins", exporter=exporter)
    callscope.instrument(TracerProvider(), meter_provider=meter_provider)
    try:
        chain = ChatPromptTemplate.from_template("Capital of {country}?") | chat_model()
        chain.batch([{"country": "France"}, {"country": "Peru"}])
        pieces = list(chain.stream({"country": "Chile"}))
    finally:
        callscope.uninstrument()
        meter_provider.shutdown()  # the periodic reader's last collection, exported now
    rows = rotel_receiver.wait_for_metrics(ALL)
    assert {r["service"] for r in rows} == {"callscope-metrics-test"}
    assert {r["scope"] for r in rows} == {"callscope"}
    assert {r["kind"] for r in rows} == {"Histogram"}
    assert {r["name"]: r["unit"] for r in rows} == {DURATION: "s", TOKENS: "{token}", FIRST_CHUNK: "s", PER_CHUNK: "s"}
    invoked = _last(rows, DURATION, gen_ai__response__model="gpt-test-2026")
    assert invoked["count"] == 2 and invoked["explicit_bounds"] == list(DURATION_BUCKETS)
    assert invoked["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-2026",
    }
    tokens = _last(rows, TOKENS, gen_ai__token__type="input")
    assert tokens["sum"] == 22 and tokens["explicit_bounds"] == [float(b) for b in TOKEN_BUCKETS]
    assert _last(rows, TOKENS, gen_ai__token__type="output")["sum"] == 10
    assert _last(rows, FIRST_CHUNK)["count"] == 1
    assert _last(rows, PER_CHUNK)["count"] == len(pieces) - 1


APP = textwrap.dedent(
    """
    from langchain_core.prompts import ChatPromptTemplate
    from tests.models import chat_model
    {setup}
    chain = ChatPromptTemplate.from_template("Capital of {{country}}?") | chat_model()
    print("RESULT", chain.invoke({{"country": "France"}}).content)
    """
)


def _run_app(tmp_path: Path, setup: str, env: dict[str, str], command: list[str]) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(setup=setup))
    done = subprocess.run(
        [*command, sys.executable, str(app)],
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "RESULT Paris is the capital." in done.stdout
    assert "Error in" not in done.stderr


def test_configure_exports_metrics_with_no_other_code(rotel_receiver: Receiver, tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": rotel_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "configured-app",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # only the exit-time flush can deliver them
    }
    setup = "import callscope\ncallscope.configure()\ncallscope.instrument()"
    _run_app(tmp_path, setup, env, [])
    rows = rotel_receiver.wait_for_metrics({DURATION, TOKENS})
    assert _last(rows, DURATION)["service"] == "configured-app"
    assert _last(rows, TOKENS, gen_ai__token__type="output")["sum"] == 5


def test_the_zero_code_path_exports_metrics(rotel_receiver: Receiver, tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": rotel_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code-app",
    }
    _run_app(tmp_path, "", env, [str(Path(sys.executable).with_name("opentelemetry-instrument"))])
    rows = rotel_receiver.wait_for_metrics({DURATION, TOKENS})
    duration = _last(rows, DURATION, gen_ai__operation__name="chat")
    assert duration["service"] == "zero-code-app" and duration["count"] == 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_against_a_refusing_collector_returns_at_once(
    dead_port: int, otlp_env: pytest.MonkeyPatch, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{dead_port}")
    otlp_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    otlp_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
    meter_provider = build_meter_provider(exporter=otlp_metric_exporter_from_env())
    meter_provider.get_meter("tests").create_histogram("h").record(1.0)
    started = time.monotonic()
    meter_provider.shutdown()
    elapsed = time.monotonic() - started
    # The SDK's own reader spends the exporter's retries here: about 7 s.
    assert elapsed < 1.0, f"shutdown took {elapsed:.2f}s"
    assert "the last metrics were not sent because the collector refused connections" in caplog.text

