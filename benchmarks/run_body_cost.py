"""What making a model's span current for its own code costs (issue 11, point 1).

Two measurements, in one process, a few seconds on one core:

1. the wrappers alone, around do-nothing methods, so LangChain's own per-run work does not
   drown them: the run-manager wrapper (``_generate_with_cache``, ``_generate_helper``), the
   stream wrapper per run and per chunk, and the check every run start makes;
2. end to end, ``FakeListChatModel.invoke`` and ``.stream`` with callscope instrumented, with
   and without the wrappers installed, alternating in rounds (medians of per-round minimums).
   On a shared machine the end-to-end difference is within noise; (1) is the figure to read.

    python benchmarks/run_body_cost.py
"""

from __future__ import annotations

import statistics
import timeit
import uuid

from langchain_core.language_models import FakeListChatModel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import callscope
from callscope._bridge import run_bodies
from callscope._bridge.runs import RunRecord, RunRegistry
from callscope._bridge.scope import TraceScope


def per_call_ns(function, number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e9


def wrappers_alone() -> None:
    span = TracerProvider().get_tracer("bench").start_span("chat")
    registry = RunRegistry(max_runs=10_000, ttl_seconds=3600)
    run_id = uuid.uuid4()
    context = trace.set_span_in_context(span)
    registry.add(run_id, RunRecord(span=span, context=context, operation="chat", name="chat", scope=TraceScope()))

    class RunManager:
        pass

    manager = RunManager()
    manager.run_id = run_id

    def generate_with_cache(self, messages, stop=None, run_manager=None, **kwargs):
        return None

    wrapped = run_bodies._with_run_manager(registry, 3, "run_manager")(generate_with_cache)

    def stream(self, chunks):
        run_bodies.claim_run_body("chat", context)  # what the span handler does at the start
        yield from range(chunks)

    wrapped_stream = run_bodies._stream_started_inside(stream)
    n = 200_000
    plain, traced = per_call_ns(lambda: generate_with_cache(None, [], run_manager=manager), n), per_call_ns(lambda: wrapped(None, [], run_manager=manager), n)
    print(f"  run-manager wrapper (_generate_with_cache, _generate_helper): {traced - plain:6.0f} ns per run")
    print(f"  check at every run start outside a model call:               {per_call_ns(lambda: run_bodies.claim_run_body('chain', context), n):6.0f} ns")
    for chunks in (1, 10, 100):
        plain = per_call_ns(lambda: sum(1 for _ in stream(None, chunks)), n // chunks)
        traced = per_call_ns(lambda: sum(1 for _ in wrapped_stream(None, chunks)), n // chunks)
        print(f"  stream wrapper, {chunks:3d} chunks: {traced - plain:8.0f} ns per run, {(traced - plain) / chunks:5.0f} ns per chunk")


def end_to_end() -> None:
    instrumentor = callscope.CallscopeInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider())
    model = FakeListChatModel(responses=["a streamed answer of some length"])
    cases = {"invoke": lambda: model.invoke("hi"), "stream (33 chunks)": lambda: sum(1 for _ in model.stream("hi"))}
    try:
        for name, call in cases.items():
            with_wrappers, without = [], []
            for round_number in range(8):
                # Alternate which state goes first: the second measurement of a round is
                # systematically faster (warm caches), which would otherwise read as a cost.
                for installed in (True, False) if round_number % 2 else (False, True):
                    if not installed:
                        instrumentor._run_bodies.uninstall()
                    (with_wrappers if installed else without).append(per_call_ns(call, 200) / 1000)
                    if not installed:
                        instrumentor._run_bodies.install()
            on, off = statistics.median(with_wrappers), statistics.median(without)
            print(f"  {name:20s} {on:7.1f} µs with, {off:7.1f} µs without: {on - off:+6.1f} µs per run")
    finally:
        instrumentor.uninstrument()


if __name__ == "__main__":
    print("wrappers alone:")
    wrappers_alone()
    print("end to end (callscope instrumented, no exporter):")
    end_to_end()
