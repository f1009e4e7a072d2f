"""One replica of a LangChain service for the collector-tier fleet test (test_pipeline.py): real
langchain-core chains, callscope, and the OpenTelemetry SDK's OTLP gRPC exporter, as a user runs
them. Two roles:

    python fleet_app.py client ENDPOINT SERVER_URL TRACES SEED MANIFEST
    python fleet_app.py server ENDPOINT PORT_FILE

A client runs TRACES traces, a fixed mix of kinds (``KINDS``), and writes MANIFEST: for each
trace id its kind and the number of spans this process ended in it. Its ``remote-*`` traces call
the server over HTTP with a W3C ``traceparent`` from inside a chain step, so the trace's spans
come from two processes sending to two different load balancers. The server writes the port it
listens on to PORT_FILE and answers ``GET /manifest`` with its own span counts per trace id.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

import callscope

#: One cycle of kinds, repeated; ``plain`` and ``remote-plain`` and ``missed-unnamed`` are the
#: ones only the share policy keeps, the others every sampler must keep.
KINDS = (
    ["plain"] * 10
    + ["failed", "failed", "dropped", "dropped", "error", "error"]
    + ["missed-named", "missed-unnamed", "remote-plain", "remote-error"]
)
#: The handler label the test names in CALLSCOPE_KEEP_MISSED_BY.
NAMED = "AuditLogger"
KEPT_ALWAYS = {"failed", "dropped", "error", "missed-named", "remote-error"}


class Recorder(BaseCallbackHandler):
    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        pass


class FlakyLogger(Recorder):
    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics backend unreachable")


class AuditLogger(Recorder):
    """Passed at call time with ``ignore_chain``: misses every chain run, which callscope
    summarises on the root as ``callscope.handlers.missed.AuditLogger``."""

    @property
    def ignore_chain(self) -> bool:
        return True


class ChatOnlyLogger(AuditLogger):
    """The same miss under a label the samplers are not told to keep."""


class SpanCounter(SpanProcessor):
    """Spans this process ended, per trace id: what the pipeline must deliver."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.counts[format(span.context.trace_id, "032x")] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _provider(endpoint: str, counter: SpanCounter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(counter)
    # A queue that holds a whole run: the test counts what was sent, so nothing may be dropped here.
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            max_queue_size=200_000, max_export_batch_size=512, schedule_delay_millis=200,
        )
    )  # fmt: skip
    return provider


def _instrument(endpoint: str, counter: SpanCounter) -> tuple[TracerProvider, MeterProvider]:
    provider = _provider(endpoint, counter)
    # The GenAI metrics go to the load balancer too, which serves them for Prometheus.
    meters = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True), 1000)])
    callscope.instrument(tracer_provider=provider, meter_provider=meters)
    return provider, meters


def _chain(fail: bool = False) -> Runnable:
    prompt = ChatPromptTemplate.from_template("Tell me about {topic}")
    model = FakeListChatModel(responses=["Spans nest like runs do."])
    chain = prompt | model | StrOutputParser()
    if fail:
        chain = chain | RunnableLambda(_refuse, name="strict_parse")
    return chain


def _refuse(text: str) -> str:
    raise ValueError(f"expected JSON, got {text[:12]!r}")


def run_client(endpoint: str, server_url: str, traces: int, seed: int, manifest: Path) -> None:
    counter = SpanCounter()
    provider, meters = _instrument(endpoint, counter)
    # The OTel context goes into worker threads, as `opentelemetry-instrument` carries it;
    # LangChain's config does not: the classic dropped config.
    ThreadingInstrumentor().instrument()
    pool = ThreadPoolExecutor(max_workers=1)
    plain, failing = _chain(), _chain(fail=True)
    inner = _chain().with_config(run_name="rank_sources")
    dropped = RunnableLambda(lambda x: pool.submit(inner.invoke, x).result(), name="sources")

    def call_server(fail: bool) -> Any:
        def step(question: dict[str, str]) -> str:
            headers = {"Content-Type": "application/json"}
            propagate.inject(headers)  # this step's span is the current one: the server's parent
            body = json.dumps({"fail": fail, **question}).encode()
            request = urllib.request.Request(server_url + "/run", data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.read().decode()
            except urllib.error.HTTPError as error:
                # The error is the server's to report; this side goes on, so a sampler can only
                # keep the trace for the server's spans.
                return f"server said {error.code}"

        return RunnableLambda(step, name="ask_server") | StrOutputParser()

    remote = {False: call_server(False), True: call_server(True)}
    kinds: dict[str, str] = {}
    # One root per trace: the app's own request span, as a web framework's instrumentation opens.
    tracer = provider.get_tracer("fleet-app")
    for index in range(traces):
        kind = KINDS[(index + seed) % len(KINDS)]
        question = {"topic": f"topic {seed}-{index}"}
        with tracer.start_as_current_span("request") as root:
            kinds[format(root.get_span_context().trace_id, "032x")] = kind
            try:
                if kind in ("plain",):
                    plain.invoke(question, config={"callbacks": [Recorder()]})
                elif kind == "failed":
                    plain.invoke(question, config={"callbacks": [FlakyLogger()]})
                elif kind == "dropped":
                    dropped.invoke(question, config={"callbacks": [Recorder()]})
                elif kind == "error":
                    failing.invoke(question)
                elif kind == "missed-named":
                    plain.invoke(question, config={"callbacks": [AuditLogger()]})
                elif kind == "missed-unnamed":
                    plain.invoke(question, config={"callbacks": [ChatOnlyLogger()]})
                else:
                    remote[kind == "remote-error"].invoke(question)
            except ValueError:
                pass  # the error kind's own exception: its span says ERROR
    callscope.uninstrument()
    if not provider.force_flush(timeout_millis=60_000):
        sys.exit("fleet app: spans still unsent after 60 s")
    provider.shutdown()
    meters.shutdown()
    rows = {trace_id: {"kind": kind, "spans": counter.counts[trace_id]} for trace_id, kind in kinds.items()}
    manifest.write_text(json.dumps(rows))


def run_server(endpoint: str, port_file: Path) -> None:
    counter = SpanCounter()
    provider, _ = _instrument(endpoint, counter)
    plain, failing = _chain(), _chain(fail=True)
    tracer = provider.get_tracer("fleet-server")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            question = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parent = propagate.extract(self.headers)  # a Message: header names in any case
            status, answer = 200, ""
            with tracer.start_as_current_span("POST /run", context=parent, kind=SpanKind.SERVER):
                try:
                    answer = (failing if question["fail"] else plain).invoke({"topic": question["topic"]})
                except ValueError as error:
                    status, answer = 500, str(error)
            self._answer(status, answer.encode())

        def do_GET(self) -> None:
            provider.force_flush(timeout_millis=30_000)
            self._answer(200, json.dumps(counter.snapshot()).encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    # LangChain logs every FlakyLogger failure; thousands of those lines say nothing here.
    logging.getLogger("langchain_core").setLevel(logging.CRITICAL)
    role, endpoint, *rest = sys.argv[1:]
    if role == "client":
        server_url, traces, seed, manifest = rest
        run_client(endpoint, server_url, int(traces), int(seed), Path(manifest))
    else:
        run_server(endpoint, Path(rest[0]))
