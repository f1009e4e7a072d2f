"""Property-based tests: random callback-event sequences with hostile payloads.

Events go through LangChain's public callback manager (``CallbackManager.configure`` and the run
managers it returns), exactly as a chain would send them, plus direct calls to callscope's
handler for what LangChain itself never sends (unknown run ids, ends without starts, tokens
before the start). Whatever the sequence and payload:

- nothing raises into the caller, LangChain logs no "Error in … callback", and callscope never
  has to swallow an exception of its own (its fence logs one on the ``callscope`` logger);
- every exported attribute is a valid OpenTelemetry value (str, bool, int64, float, or a
  homogeneous sequence of them) and every string is at most ``max_attribute_length`` long;
- every span encodes with the SDK's OTLP protobuf encoder, attributes and all, although the
  strings LangChain hands over hold lone surrogates, control characters and very long text;
- no secret value appears anywhere in the exported spans;
- once every started run has ended, the in-flight registry is empty and every span has ended;
  runs that never end are evicted by the count and age limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

import callscope

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --- hostile payloads ---------------------------------------------------------------------------

SECRET_SHAPED = "sk-proj-abcdefghijklmnop1234"
SECRET_PLAIN = "plain-Secret-Zq8Xv2Lm9Wt"  # recognisable only by where it sits (key, SecretStr)
SECRET_GITHUB = "ghp_abcdefghijklmnopqrstuvwxyz0123"
SECRETS = (SECRET_SHAPED, SECRET_PLAIN, SECRET_GITHUB)


class _Huge(str):
    """A 1 MB string that prints short in Hypothesis' failure reports."""

    def __repr__(self) -> str:
        return "<1 MB str>"


HUGE = _Huge("x" * 1_000_000)
# Long non-ASCII text with lone surrogates before, at and far past every length limit: the halves
# of a split emoji, as a streamed chunk or a JSON decoder leaves them.
LONG_POISONED = _Huge("\ud83d" + "é" * 60 + "\ude00" + "模" * 8200 + "\ud83d\ude00" + "x" * 70_000 + "\udfff")

# Text as LangChain may hand it over: any code point, plus what the default alphabet leaves out
# (lone surrogates) or rarely draws (control characters).
_ALPHABET = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.characters(categories=["Cc"]))


def hostile_text(max_size: int) -> Any:
    return st.text(alphabet=_ALPHABET, max_size=max_size)

INT64 = (-(2**63), 2**63 - 1)


class EvilRepr:
    """An object whose repr and str raise (a half-initialised client, a broken proxy)."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


class EvilError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    __repr__ = __str__


class PoisonedError(Exception):
    """An exception class whose qualified name and module are not UTF-8 (both are plain
    attributes; only ``__name__`` is checked by Python)."""


PoisonedError.__qualname__ = "Poisoned\ud800Error"
PoisonedError.__module__ = "plugins.\udc00"


class EvilMapping(Mapping[str, Any]):
    """A mapping whose iteration raises."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iteration exploded")

    def __len__(self) -> int:
        return 3


def cyclic(value: Any) -> Any:
    outer: dict[Any, Any] = {"value": value}
    outer["self"] = outer
    outer["list"] = [outer, value]
    return outer


secret_strings = st.sampled_from(
    [
        SECRET_SHAPED,
        f"my key is {SECRET_SHAPED}, keep it safe",
        f"Authorization: Bearer {SECRET_SHAPED}",
        f"api_key={SECRET_PLAIN}",
        f"token: {SECRET_GITHUB}",
    ]
)
# A bare {"Authorization": value} inside an exception message is test_error_message_* below.
secret_holders = st.sampled_from(["api_key", "openai_api_key", "password", "client_secret", "x-api-key"]).map(
    lambda key: {key: SECRET_PLAIN}
) | st.just(SecretStr(SECRET_PLAIN)) | st.just({"headers": {"Authorization": f"Bearer {SECRET_PLAIN}"}})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text(max_size=40),
    st.binary(max_size=16),
    st.sampled_from([HUGE, LONG_POISONED, "", "\x00\ud800?", "\u202e rtl", "\ud83d\ude00 a pair in a str"]),
    secret_strings,
    st.builds(EvilRepr),
)
keys = st.one_of(
    hostile_text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats(), st.binary(max_size=4), st.tuples(st.integers()), st.builds(EvilRepr)
)


def _hashable_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        try:
            out[key] = value
        except TypeError:  # EvilRepr is hashable; keep this for any unhashable key strategy
            pass
    return out


payloads = st.recursive(
    scalars | secret_holders,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.lists(st.tuples(keys, children), max_size=4).map(_hashable_keys),
        children.map(cyclic),
        st.just(EvilMapping()),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)
texts = st.one_of(hostile_text(max_size=30), secret_strings, st.just(HUGE), st.just(LONG_POISONED))


def _message_content() -> Any:
    return st.one_of(
        texts,
        st.lists(st.one_of(texts, st.fixed_dictionaries({"type": st.just("text"), "text": texts}), st.dictionaries(hostile_text(max_size=8), payloads, max_size=3)), max_size=3),
    )


messages = st.lists(
    st.one_of(
        st.builds(lambda c: HumanMessage.model_construct(content=c, additional_kwargs={}), _message_content()),
        st.builds(lambda c: SystemMessage.model_construct(content=c, additional_kwargs={}), _message_content()),
        st.builds(
            lambda c, args: AIMessage.model_construct(content=c, additional_kwargs={}, tool_calls=[{"id": "call-1", "name": "search", "args": args}]),
            _message_content(),
            payloads,
        ),
        st.builds(lambda c: ToolMessage.model_construct(content=c, additional_kwargs={}, tool_call_id="call-1"), payloads),
    ),
    max_size=4,
)
# Identity fields LangChain fills from the component (names, model ids). Odd but not secret or
# huge here; test_identity_fields_* below cover those cases.
names = st.one_of(st.none(), hostile_text(max_size=30), st.integers(), st.builds(EvilRepr))
serialized = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"name": names, "id": st.lists(names, max_size=3), "kwargs": payloads, "description": hostile_text(max_size=30)}),
)
# Request numbers within int64 and finite: NaN, infinities and huge floats are the subject of
# test_request_numbers_* below (known bugs).
numbers = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40), st.floats(min_value=-1e15, max_value=1e15), hostile_text(max_size=5)
)
invocation_params = st.fixed_dictionaries(
    {},
    optional={
        "model": names,
        "temperature": numbers,
        "max_tokens": numbers,
        "top_p": numbers,
        "stop": st.one_of(st.none(), hostile_text(max_size=10), st.lists(hostile_text(max_size=10), max_size=3), payloads),
        "stream": st.booleans(),
        "api_key": st.just(SECRET_PLAIN),
        "extra": payloads,
    },
)
metadata = st.fixed_dictionaries(
    {},
    optional={
        "ls_provider": names,
        "ls_model_name": names,
        "ls_vector_store_provider": names,
        "ls_temperature": numbers,
        "langgraph_node": st.one_of(hostile_text(max_size=20), payloads),
        "langgraph_step": st.one_of(st.integers(min_value=0, max_value=1000), payloads),
        "api_key": st.just(SECRET_PLAIN),
        "anything": payloads,
    },
)
tags = st.one_of(st.none(), st.lists(st.one_of(hostile_text(max_size=15), st.sampled_from(["retry:attempt:2", "seq:step:1", "retry:attempt:x"])), max_size=3))
errors = st.one_of(
    st.builds(ValueError, texts),
    st.builds(RuntimeError, payloads),
    st.just(EvilError()),
    st.sampled_from([PoisonedError("half an emoji \ud83d"), PoisonedError("plain")]),
    st.just(GeneratorExit()),
    st.just(asyncio.CancelledError()),
    st.builds(lambda: KeyError(SecretStr(SECRET_PLAIN))),
)


def llm_results() -> Any:
    usage = st.one_of(
        st.none(),
        # token details as LangChain types them (a mapping or None); other shapes: test_usage_details_*
        st.fixed_dictionaries(
            {"input_tokens": numbers, "output_tokens": numbers},
            optional={"input_token_details": st.none() | st.dictionaries(st.sampled_from(["cache_read", "cache_creation", "x"]), numbers, max_size=2)},
        ),
        payloads,
    )
    generation = st.one_of(
        st.builds(
            lambda c, u, rm, gi: ChatGeneration.model_construct(
                message=AIMessage.model_construct(content=c, additional_kwargs={}, usage_metadata=u, response_metadata=rm, tool_calls=[]),
                generation_info=gi,
                text="",
            ),
            _message_content(),
            usage,
            st.one_of(st.none(), st.fixed_dictionaries({}, optional={"model_name": names, "finish_reason": names, "id": names})),
            st.one_of(st.none(), st.dictionaries(hostile_text(max_size=10), payloads, max_size=3)),
        ),
        st.builds(lambda t: Generation.model_construct(text=t, generation_info=None), texts),
    )
    return st.builds(
        lambda gens, out: LLMResult.model_construct(generations=gens, llm_output=out),
        st.lists(st.lists(generation, max_size=2), max_size=2),
        st.one_of(st.none(), st.fixed_dictionaries({}, optional={"token_usage": payloads, "model_name": names, "api_key": st.just(SECRET_PLAIN)})),
    )


documents = st.one_of(
    st.lists(st.builds(lambda c, m: Document.model_construct(page_content=c, metadata=m, id=None), texts, st.dictionaries(hostile_text(max_size=6), payloads, max_size=3)), max_size=3),
    st.lists(payloads, max_size=3),
    payloads,  # not a list at all: True, a raising mapping, ...
)


# --- instrumented backend -----------------------------------------------------------------------


class StartEndCounter(SpanProcessor):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: set[int] = set()
        self.ended: set[int] = set()

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        with self._lock:
            self.started.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended.add(span.context.span_id)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Traced:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exporter = InMemorySpanExporter()
        self.counter = StartEndCounter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.counter)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.langchain_log = Records()
        self.callscope_log = Records()

    @property
    def handler(self) -> Any:
        handler = callscope.CallscopeInstrumentor().handler
        assert handler is not None
        return handler

    def check_logs(self) -> None:
        failures = [r.getMessage() for r in self.langchain_log.records if "Error in" in r.getMessage()]
        assert not failures, failures[:3]
        swallowed = [f"{r.getMessage()} {r.exc_info[1]!r}" for r in self.callscope_log.records if r.levelno >= logging.ERROR]
        assert not swallowed, swallowed[:3]

    def check_spans(self) -> None:
        for span in self.exporter.get_finished_spans():
            where = f"span {span.name[:80]!r}"
            check_attributes(span.attributes, self.limit, where)
            for event in span.events:
                check_attributes(event.attributes, self.limit, f"{where} event {event.name!r}")
            check_encodes(span, where)
            text = span.to_json(indent=None)
            for secret in SECRETS:
                assert secret not in text, f"{where} exports a secret: …{text[max(0, text.find(secret) - 80) : text.find(secret) + 40]}…"

    def check_all_ended(self) -> None:
        assert len(self.handler.registry) == 0, f"{len(self.handler.registry)} runs left in the registry"
        open_spans = self.counter.started - self.counter.ended
        assert not open_spans, f"{len(open_spans)} spans never ended"


def check_encodes(span: ReadableSpan, where: str) -> None:
    """The span encodes with the OTLP protobuf encoder, losing nothing on the way: the encoder
    drops (and logs) an attribute it cannot encode, and fails the whole batch on a bad name."""
    (encoded,) = [s for r in encode_spans([span]).resource_spans for ss in r.scope_spans for s in ss.spans]
    assert len(encoded.attributes) == len(span.attributes or {}), f"{where}: attributes lost in encoding"
    assert [len(e.attributes) for e in encoded.events] == [len(e.attributes or {}) for e in span.events], f"{where}: event attributes lost"
    assert encoded.name == span.name
    assert encoded.status.message == (span.status.description or "")
    assert ExportTraceServiceRequest.FromString(encode_spans([span]).SerializeToString()) is not None


def check_attributes(attributes: Any, limit: int, where: str) -> None:
    for key, value in (attributes or {}).items():
        assert isinstance(key, str) and key, f"{where}: attribute key {key!r}"
        values = value if isinstance(value, tuple) else (value,)
        assert not isinstance(value, (list, dict, bytes)), f"{where}: {key} has type {type(value).__name__}"
        kinds = {type(v) for v in values}
        assert len(kinds) <= 1, f"{where}: {key} mixes {kinds}"
        for item in values:
            assert isinstance(item, (str, bool, int, float)), f"{where}: {key} holds {type(item).__name__}"
            if isinstance(item, int) and not isinstance(item, bool):
                assert INT64[0] <= item <= INT64[1], f"{where}: {key}={item} does not fit in int64"
            if isinstance(item, str):
                assert len(item) <= limit, f"{where}: {key} is {len(item)} characters, limit {limit}"


@contextmanager
def traced(*, capture_content: bool, limit: int, max_runs: int | None = None, ttl: float | None = None) -> Iterator[Traced]:
    t = Traced(limit)
    lc_logger, cs_logger = logging.getLogger("langchain_core"), logging.getLogger("callscope")
    lc_logger.addHandler(t.langchain_log)
    cs_logger.addHandler(t.callscope_log)
    levels = lc_logger.level, cs_logger.level
    lc_logger.setLevel(logging.WARNING)
    cs_logger.setLevel(logging.WARNING)
    callscope.instrument(
        t.provider, capture_content=capture_content, max_attribute_length=limit, max_in_flight_runs=max_runs, run_ttl_seconds=ttl
    )
    try:
        yield t
    finally:
        callscope.uninstrument()
        lc_logger.removeHandler(t.langchain_log)
        cs_logger.removeHandler(t.callscope_log)
        lc_logger.setLevel(levels[0])
        cs_logger.setLevel(levels[1])
        t.provider.shutdown()


# --- driving events through LangChain's callback manager ----------------------------------------


class Run:
    def __init__(self, kind: str, manager: Any) -> None:
        self.kind, self.manager, self.ended = kind, manager, False


class Driver:
    """Draws and performs one random callback event at a time."""

    KINDS = ("chain", "llm", "chat", "tool", "retriever")

    def __init__(self, data: st.DataObject, handler: Any) -> None:
        self.data, self.handler = data, handler
        self.runs: list[Run] = []
        self.pending_ids: list[uuid.UUID] = []  # ids that saw events before their start

    def draw(self, strategy: Any) -> Any:
        return self.data.draw(strategy)

    def start(self) -> None:
        kind = self.draw(st.sampled_from(self.KINDS))
        parents = [r for r in self.runs if r.kind in ("chain", "tool", "retriever")]
        parent = self.draw(st.none() | st.sampled_from(parents)) if parents else None
        manager = parent.manager.get_child(self.draw(st.none() | hostile_text(max_size=10))) if parent is not None else CallbackManager.configure(
            inheritable_tags=self.draw(tags), inheritable_metadata=self.draw(metadata), local_metadata=self.draw(metadata)
        )
        run_id = self.pending_ids.pop() if self.pending_ids and self.draw(st.booleans()) else None
        if run_id is None and self.runs and self.draw(st.integers(0, 19)) == 0:
            run_id = self.draw(st.sampled_from(self.runs)).manager.run_id  # a reused run id
        common: dict[str, Any] = {"run_id": run_id}
        if kind == "chain":
            common["name"] = self.draw(names)
            started = [manager.on_chain_start(self.draw(serialized), self.draw(payloads), run_type=self.draw(st.none() | names), **common)]
        elif kind == "llm":
            prompts = self.draw(st.lists(texts, min_size=1, max_size=2))
            started = manager.on_llm_start(self.draw(serialized), prompts, invocation_params=self.draw(invocation_params), **common)
        elif kind == "chat":
            conversations = self.draw(st.lists(messages, min_size=1, max_size=2))
            started = manager.on_chat_model_start(self.draw(serialized), conversations, invocation_params=self.draw(invocation_params), **common)
        elif kind == "tool":
            started = [
                manager.on_tool_start(
                    self.draw(serialized), self.draw(texts), inputs=self.draw(st.none() | payloads), name=self.draw(names), tool_call_id=self.draw(names), **common
                )
            ]
        else:
            started = [manager.on_retriever_start(self.draw(serialized), self.draw(texts | payloads), name=self.draw(names), **common)]
        self.runs.extend(Run(kind, m) for m in started)

    def finish(self, run: Run, *, fail: bool | None = None) -> None:
        fail = self.draw(st.integers(0, 3)) == 0 if fail is None else fail
        manager = run.manager
        if fail:
            error = self.draw(errors)
            method = {"chain": "on_chain_error", "tool": "on_tool_error", "retriever": "on_retriever_error"}.get(run.kind, "on_llm_error")
            getattr(manager, method)(error)
        elif run.kind == "chain":
            manager.on_chain_end(self.draw(payloads))
        elif run.kind in ("llm", "chat"):
            manager.on_llm_end(self.draw(llm_results()))
        elif run.kind == "tool":
            manager.on_tool_end(self.draw(payloads))
        else:
            manager.on_retriever_end(self.draw(documents))
        run.ended = True

    def step(self) -> None:
        action = self.draw(st.sampled_from(("start", "start", "end", "end", "token", "direct", "event")))
        if action == "start" or not self.runs:
            self.start()
        elif action == "end":
            self.finish(self.draw(st.sampled_from(self.runs)))  # may be a duplicate end
        elif action == "token":
            run = self.draw(st.sampled_from(self.runs))
            if run.kind in ("llm", "chat"):
                run.manager.on_llm_new_token(self.draw(texts | st.lists(st.one_of(texts, st.dictionaries(hostile_text(max_size=5), payloads, max_size=2)), max_size=2)))
            else:
                run.manager.on_text(self.draw(texts))
        elif action == "event":
            run = self.draw(st.sampled_from(self.runs))
            self.handler.on_custom_event(self.draw(names | texts), self.draw(payloads), run_id=run.manager.run_id)
            self.handler.on_retry(self.draw(st.none() | payloads | st.builds(EvilRepr)), run_id=run.manager.run_id)
        else:
            self.direct()

    def direct(self) -> None:
        """What LangChain itself would not send: events for ids callscope never saw start."""
        unknown = uuid.uuid4()
        choice = self.draw(st.integers(0, 5))
        if choice == 0:
            self.handler.on_chain_end(self.draw(payloads), run_id=unknown)
        elif choice == 1:
            self.handler.on_llm_end(self.draw(llm_results()), run_id=unknown)
        elif choice == 2:
            self.handler.on_tool_error(self.draw(errors), run_id=unknown)
        elif choice == 3:
            self.handler.on_retriever_end(self.draw(documents), run_id=unknown)
        elif choice == 4:  # a token before its run starts; the run may start later with this id
            self.handler.on_llm_new_token(self.draw(texts), run_id=unknown)
            self.pending_ids.append(unknown)
        else:
            self.handler.on_chain_error(self.draw(errors), run_id=unknown, parent_run_id=uuid.uuid4())

    def end_everything(self) -> None:
        for run in reversed(self.runs):
            if not run.ended:
                self.finish(run)


@FUZZ
@given(data=st.data(), capture_content=st.booleans(), limit=st.sampled_from([64, 300, 8192]))
def test_random_event_sequences_are_safe_bounded_and_leave_nothing_behind(data: st.DataObject, capture_content: bool, limit: int) -> None:
    with traced(capture_content=capture_content, limit=limit) as t:
        driver = Driver(data, t.handler)
        for _ in range(data.draw(st.integers(1, 20), label="events")):
            driver.step()
        driver.end_everything()
        t.check_logs()
        t.check_all_ended()
    t.check_spans()


@settings(FUZZ, max_examples=100)
@given(data=st.data(), capture_content=st.booleans())
def test_runs_that_never_end_are_evicted_by_count(data: st.DataObject, capture_content: bool) -> None:
    max_runs = 4
    with traced(capture_content=capture_content, limit=300, max_runs=max_runs, ttl=0) as t:
        driver = Driver(data, t.handler)
        for _ in range(data.draw(st.integers(1, 30), label="events")):
            driver.step()
            assert len(t.handler.registry) <= max_runs
        # Never end the rest: only the bound keeps them from staying forever.
        t.check_logs_ok = True
        assert len(t.handler.registry) <= max_runs
        for run in driver.runs:
            if not run.ended:
                driver.finish(run)  # an end arriving after eviction is ignored quietly
        assert len(t.handler.registry) == 0
        assert not [r for r in t.langchain_log.records if "Error in" in r.getMessage()]
    assert t.counter.started == t.counter.ended
    t.check_spans()


def test_runs_that_never_end_are_evicted_by_age() -> None:
    with traced(capture_content=False, limit=300, ttl=0.05) as t:
        manager = CallbackManager.configure()
        for i in range(10):
            manager.on_chain_start(None, {"i": i}, name="never-ends")
        assert len(t.handler.registry) == 10
        time.sleep(0.1)
        for i in range(128):  # the age check runs every few dozen starts
            manager.on_chain_start(None, {"i": i}, name="ends").on_chain_end({})
        assert len(t.handler.registry) == 0
        evicted = [s for s in t.exporter.get_finished_spans() if s.name == "never-ends"]
        assert len(evicted) == 10
        assert all(s.attributes.get("callscope.run.evicted") is True for s in evicted)
    assert t.counter.started == t.counter.ended


# --- regressions: callscope bugs the fuzz above found (now fixed) ---------------------------


def _chat_run(t: Traced, **invocation_params: Any) -> Any:
    manager = CallbackManager.configure()
    chain = manager.on_chain_start(None, {}, name="parent")
    (llm,) = chain.get_child().on_chat_model_start({"name": "FakeChat"}, [[HumanMessage("hi")]], invocation_params=invocation_params)
    return chain, llm


def test_request_numbers_huge_float_max_tokens_is_not_exported_as_a_bigint() -> None:
    with traced(capture_content=False, limit=300) as t:
        chain, llm = _chat_run(t, max_tokens=1e300)
        llm.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]]))
        chain.on_chain_end({})
        t.check_logs()
    t.check_spans()


def test_request_numbers_nan_max_tokens_still_gives_the_model_run_a_span() -> None:
    with traced(capture_content=False, limit=300) as t:
        chain, llm = _chat_run(t, max_tokens=float("nan"))
        llm.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]]))
        chain.on_chain_end({})
        assert sorted(s.name for s in t.exporter.get_finished_spans()) == ["chat", "parent"]
        t.check_logs()


def test_usage_details_of_the_wrong_shape_do_not_lose_the_span() -> None:
    with traced(capture_content=False, limit=300) as t:
        chain, llm = _chat_run(t)
        message = AIMessage.model_construct(
            content="ok", additional_kwargs={}, response_metadata={}, tool_calls=[],
            usage_metadata={"input_tokens": 1, "output_tokens": 1, "input_token_details": [{"cache_read": 3}]},
        )
        llm.on_llm_end(LLMResult.model_construct(generations=[[ChatGeneration.model_construct(message=message, text="ok")]], llm_output=None))
        chain.on_chain_end({})
        t.check_logs()
        t.check_all_ended()


def test_error_message_with_an_authorization_header_is_scrubbed() -> None:
    with traced(capture_content=False, limit=300) as t:
        run = CallbackManager.configure().on_chain_start(None, {}, name="call")
        run.on_chain_error(RuntimeError(str({"headers": {"Authorization": f"Basic {SECRET_PLAIN}"}})))
        t.check_logs()
    t.check_spans()


def test_retriever_end_with_a_non_list_result_still_ends_the_span() -> None:
    with traced(capture_content=True, limit=300) as t:
        run = CallbackManager.configure().on_retriever_start(None, "query", name="docs")
        run.on_retriever_end(True)  # type: ignore[arg-type]
        t.check_logs()
        t.check_all_ended()
