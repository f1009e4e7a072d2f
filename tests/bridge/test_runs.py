"""The in-flight registry stays bounded: runs whose end never arrives are ended, not kept."""

from __future__ import annotations

import time
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, set_span_in_context

from callscope._attributes import ERROR_MARK, RUN_EVICTED
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.scope import TraceScope


def make_record(tracer, name: str, started: float | None = None) -> RunRecord:
    span = tracer.start_span(name)
    record = RunRecord(span=span, context=set_span_in_context(span), operation="chain", name=name, scope=TraceScope())
    if started is not None:
        record.started_monotonic = started
    return record


def setup(**limits):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RunRegistry(**limits), provider.get_tracer("t"), exporter


def test_count_limit_ends_the_oldest_run_as_evicted():
    registry, tracer, exporter = setup(max_runs=3, ttl_seconds=0)
    ids = [uuid.uuid4() for _ in range(5)]
    for i, run_id in enumerate(ids):
        registry.add(run_id, make_record(tracer, f"run{i}"))
    assert len(registry) == 3
    assert registry.get(ids[0]) is None and registry.get(ids[4]) is not None
    evicted = exporter.get_finished_spans()
    assert [s.name for s in evicted] == ["run0", "run1"]
    assert all(s.attributes[RUN_EVICTED] is True and s.status.status_code == StatusCode.ERROR for s in evicted)
    # Status ERROR, so also the marker an exact-match search for errors finds.
    assert all(s.attributes[ERROR_MARK] is True for s in evicted)
    assert "never arrived" in evicted[0].status.description
    assert registry.evicted == 2


def test_age_limit_ends_stale_runs_on_a_later_start():
    registry, tracer, exporter = setup(max_runs=1000, ttl_seconds=10)
    stale = uuid.uuid4()
    registry.add(stale, make_record(tracer, "stale", started=time.monotonic() - 60))
    for _ in range(64):
        run_id = uuid.uuid4()
        registry.add(run_id, make_record(tracer, "fresh"))
        registry.pop(run_id).span.end()
    assert registry.get(stale) is None
    assert [s.name for s in exporter.get_finished_spans() if s.attributes.get(RUN_EVICTED)] == ["stale"]


def test_memory_is_flat_over_many_runs(caplog):
    registry, tracer, _ = setup(max_runs=100, ttl_seconds=3600)
    for i in range(10_000):
        run_id = uuid.uuid4()
        registry.add(run_id, make_record(tracer, "r"))
        if i % 10:  # one run in ten never ends
            registry.pop(run_id).span.end()
    assert len(registry) <= 100
    assert registry.evicted == 1000 - len(registry)
    assert len([r for r in caplog.records if "never arrived" in r.getMessage()]) == 1


def test_reused_run_id_ends_the_older_span():
    registry, tracer, exporter = setup(max_runs=10, ttl_seconds=0)
    run_id = uuid.uuid4()
    registry.add(run_id, make_record(tracer, "first"))
    registry.add(run_id, make_record(tracer, "second"))
    assert [s.name for s in exporter.get_finished_spans()] == ["first"]
    assert len(registry) == 1


def test_clear_ends_everything():
    registry, tracer, exporter = setup(max_runs=10, ttl_seconds=0)
    for _ in range(3):
        registry.add(uuid.uuid4(), make_record(tracer, "open"))
    registry.clear()
    assert len(registry) == 0 and len(exporter.get_finished_spans()) == 3


def test_pop_descendants_takes_every_open_run_below_a_stopped_run_and_nothing_else():
    registry, tracer, _ = setup(max_runs=100, ttl_seconds=0)
    stopped_id, child, grandchild, ended, sibling = (uuid.uuid4() for _ in range(5))
    stopped, root = make_record(tracer, "stopped"), make_record(tracer, "root")
    records = {run_id: make_record(tracer, name) for run_id, name in ((child, "child"), (grandchild, "grandchild"), (ended, "ended"), (sibling, "sibling"))}
    for run_id, record in records.items():
        registry.add(run_id, record)
    for parent, run_id in ((stopped, child), (records[child], grandchild), (stopped, ended), (root, sibling)):
        registry.adopt(parent, run_id)
    registry.pop(ended)  # ended normally before the stop
    assert sorted(r.name for r in registry.pop_descendants(stopped)) == ["child", "grandchild"]
    assert registry.get(sibling) is not None and len(registry) == 1


def test_adopted_children_lists_stay_about_the_size_of_the_open_children():
    registry, tracer, _ = setup(max_runs=10_000, ttl_seconds=0)
    parent = make_record(tracer, "graph")
    for i in range(5000):  # a long-running graph: thousands of node runs, one open at a time
        run_id = uuid.uuid4()
        registry.add(run_id, make_record(tracer, f"node{i}"))
        registry.adopt(parent, run_id)
        registry.pop(run_id)
    assert len(parent.children) < 64


def _frozen_clocks():
    import datetime

    import freezegun
    import time_machine

    return [
        ("freezegun", lambda: freezegun.freeze_time("2020-01-01")),
        ("freezegun, ticking", lambda: freezegun.freeze_time("2031-06-01", tick=True)),
        ("time-machine", lambda: time_machine.travel(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), tick=False)),
    ]



@pytest.mark.parametrize("clock", [name for name, _ in _frozen_clocks()])
def test_a_frozen_or_moved_clock_does_not_make_open_runs_stale(clock, spans):
    """Test suites freeze the clock (freezegun, time-machine): runs that started on the real clock
    must not look old to the age check, and their timing must stay sane."""
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.runnables import RunnableLambda

    from callscope._bridge.instrumentor import CallscopeInstrumentor

    freeze = dict(_frozen_clocks())[clock]
    model = FakeListChatModel(responses=["streamed answer"])

    def inside(x):
        with freeze():
            # Enough starts for the registry's age check to run while the clock is frozen.
            for _ in range(70):
                RunnableLambda(lambda y: y, name="inner").invoke(x)
            return "".join(chunk.content for chunk in model.stream(x))

    assert RunnableLambda(inside, name="outer").invoke("q") == "streamed answer"
    assert CallscopeInstrumentor().handler.registry.evicted == 0
    outer = spans.one("outer")
    assert RUN_EVICTED not in outer.attributes and outer.status.status_code is not StatusCode.ERROR
    chat = next(s for s in spans.all if s.name.startswith("chat"))
    assert 0 <= chat.attributes["gen_ai.response.time_to_first_chunk"] < 60
