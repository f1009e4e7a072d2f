"""``callscope tree --jaeger URL --service NAME`` with its trace filters, against a real Jaeger v2:
one trace of each kind, exported by callscope from real LangChain chains, and each filter finding
exactly its traces through Jaeger's own tag search."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import callscope
from tests.integration.conftest import JaegerServer
from tests.integration.test_jaeger import callscope as run_callscope

pytestmark = pytest.mark.integration


class Audit(BaseCallbackHandler):
    """A runtime handler: it sees every run it is passed down to."""


class ModelLogger(BaseCallbackHandler):
    """A model's constructor handler: it sees that model's runs only."""


class InnerAudit(BaseCallbackHandler):
    """Bound to a nested chain with ``with_config(callbacks=…)``."""


class Flaky(BaseCallbackHandler):
    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit store down")


def _answer(model_callbacks: list[BaseCallbackHandler] | None = None):
    return ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["42"], callbacks=model_callbacks)


def _explode(_: str) -> str:
    raise KeyError("missing")


def _run_each_kind() -> None:
    """One chain per kind, each its own trace, named after its kind (its root's run name)."""
    audited = {"callbacks": [Audit()]}
    _answer().with_config(run_name="plain").invoke({"q": "x"}, audited)
    with pytest.raises(KeyError):
        (RunnableLambda(lambda v: v, name="ok") | RunnableLambda(_explode, name="explode")).with_config(run_name="error").invoke("x", audited)
    _answer().with_config(run_name="handler_failed").invoke({"q": "x"}, {"callbacks": [Flaky()]})
    # A chain bound to its own callbacks, run in a step without the step's config: LangChain
    # replaces the step's handlers with its own, and Audit never reaches it.
    inner = _answer().with_config(run_name="inner", callbacks=[InnerAudit()])
    nest = RunnableLambda(lambda v: inner.invoke({"q": v}).content, name="nest")
    (RunnableLambda(lambda v: v, name="first") | nest).with_config(run_name="config_dropped").invoke("x", audited)
    _answer([ModelLogger()]).with_config(run_name="missed").invoke({"q": "x"}, audited)


@pytest.fixture(scope="module")
def exported(jaeger: JaegerServer) -> tuple[str, dict[str, str]]:
    """A fresh service in Jaeger holding one trace of each kind: the service, and each kind's trace id."""
    service = f"callscope-filters-{uuid.uuid4().hex[:8]}"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_grpc, insecure=True)))
    callscope.instrument(tracer_provider=provider)
    try:
        _run_each_kind()
    finally:
        callscope.uninstrument()
    assert provider.force_flush(10_000)
    provider.shutdown()
    spans = memory.get_finished_spans()
    kinds = {format(s.context.trace_id, "032x"): s.name for s in spans if s.parent is None}
    assert sorted(kinds.values()) == ["config_dropped", "error", "handler_failed", "missed", "plain"]
    counts = Counter(format(s.context.trace_id, "032x") for s in spans)
    for trace_id, count in counts.items():
        jaeger.wait_for_trace(trace_id, count)
    return service, {kind: trace_id for trace_id, kind in kinds.items()}


def _found(jaeger: JaegerServer, service: str, flags: list[str], cwd: Path) -> set[str]:
    done = run_callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--since", "15m", *flags, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return {line.split()[1] for line in done.stdout.splitlines() if line.startswith("trace ")}


@pytest.mark.parametrize(
    ("flags", "kinds"),
    [
        (["--errors"], {"error"}),
        (["--handler-failed"], {"handler_failed"}),
        (["--handler-failed", "Flaky"], {"handler_failed"}),
        (["--config-dropped"], {"config_dropped"}),
        (["--missed-by", "ModelLogger"], {"missed"}),
        # A dropped config is also a miss: the handler it kept away missed those runs.
        (["--missed-by", "Audit"], {"config_dropped"}),
        # On different spans (the run that started without its config, the root): still one trace.
        (["--config-dropped", "--missed-by", "Audit"], {"config_dropped"}),
    ],
)
def test_each_filter_finds_exactly_its_traces(
    jaeger: JaegerServer, exported: tuple[str, dict[str, str]], tmp_path: Path, flags: list[str], kinds: set[str]
) -> None:
    service, trace_ids = exported
    assert _found(jaeger, service, flags, tmp_path) == {trace_ids[kind] for kind in kinds}


def test_a_filtered_trace_is_the_tree_its_id_shows(jaeger: JaegerServer, exported: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    service, trace_ids = exported
    unfiltered = _found(jaeger, service, [], tmp_path)
    assert unfiltered == set(trace_ids.values())  # the plain trace is there: the filters leave it out
    shown = run_callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--missed-by", "Audit", cwd=tmp_path)
    by_id = run_callscope("tree", "--jaeger", jaeger.query_url, "--trace", trace_ids["config_dropped"], cwd=tmp_path)
    # The same tree as the trace read by its id: filtered traces are read whole, from /api/v3.
    assert shown.returncode == by_id.returncode == 0 and shown.stdout == by_id.stdout


@pytest.mark.parametrize(
    "flags",
    [
        ["--handler-failed", "Audit"],  # Audit never failed
        ["--missed-by", "Flaky"],  # Flaky saw every run it was given, and failed
        ["--config-dropped", "--missed-by", "ModelLogger"],  # each true of some trace, never of one
    ],
)
def test_a_filter_that_matches_no_trace_says_what_it_searched(
    jaeger: JaegerServer, exported: tuple[str, dict[str, str]], tmp_path: Path, flags: list[str]
) -> None:
    service, _ = exported
    done = run_callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--since", "15m", *flags, cwd=tmp_path)
    assert done.returncode == 3
    [line] = done.stderr.splitlines()
    assert line.startswith(f"callscope: error: no traces of {service!r} with callscope.")
    assert line.endswith(f"started in the last 15m in Jaeger at {jaeger.query_url}; widen the window with --since, e.g. --since 24h")
    assert done.stdout == ""


def test_a_filter_keeps_to_the_window(jaeger: JaegerServer, exported: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    service, trace_ids = exported
    assert _found(jaeger, service, ["--errors"], tmp_path) == {trace_ids["error"]}
    time.sleep(2.1)  # every trace of the service now started more than a second ago
    done = run_callscope("tree", "--jaeger", jaeger.query_url, "--service", service, "--errors", "--since", "1s", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"callscope: error: no traces of {service!r} with callscope.error=true started in the last 1s in Jaeger at "
        f"{jaeger.query_url}; widen the window with --since, e.g. --since 24h"
    ]
