"""Callback scoping made visible: which handlers saw each run, which missed it, and span
processors attached to one component (the callback-scoping issue)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, dispatch_custom_event
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import callscope

LOCAL, INHERITED = "callscope.handlers.local", "callscope.handlers.inherited"


class LoggingHandler(BaseCallbackHandler):
    """The seed document's handler: it records which events reach it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kwargs: Any) -> None:
        self.events.append("chat_model_start")

    def on_chain_start(self, serialized, inputs, **kwargs: Any) -> None:
        self.events.append(f"chain_start:{kwargs.get('name')}")


class AuditHandler(BaseCallbackHandler):
    pass


def local(span) -> tuple:
    return tuple(span.attributes.get(LOCAL, ()))


def inherited(span) -> tuple:
    return tuple(span.attributes.get(INHERITED, ()))


def seed_chain(handler: BaseCallbackHandler | None = None):
    model = FakeListChatModel(responses=["1 + 2 = 3"], callbacks=[handler] if handler else None)
    return ChatPromptTemplate.from_template("What is 1 + {number}?") | model


def test_seed_constructor_handler_is_local_to_the_model_and_misses_the_rest(spans):
    handler = LoggingHandler()
    seed_chain(handler).invoke({"number": "2"})
    assert handler.events == ["chat_model_start"]  # LangChain's own behaviour, as the seed says
    chat, prompt, sequence = spans.one("chat"), spans.one("ChatPromptTemplate"), spans.one("RunnableSequence")
    assert local(chat) == ("LoggingHandler",) and inherited(chat) == ()
    assert local(prompt) == inherited(prompt) == local(sequence) == inherited(sequence) == ()
    assert sequence.attributes["callscope.handlers.missed.LoggingHandler"] == ("RunnableSequence", "ChatPromptTemplate")
    assert sequence.attributes["callscope.handlers.missed"] == (
        "LoggingHandler saw 1 of 3 runs; scope: missed RunnableSequence, ChatPromptTemplate (a constructor callback"
        " of chat; fix: pass it at run time, config={'callbacks': [...]}, to see the whole chain)",
    )


def test_seed_runtime_handler_is_inherited_by_every_run(spans):
    handler = LoggingHandler()
    seed_chain().invoke({"number": "2"}, config={"callbacks": [handler]})
    assert handler.events == ["chain_start:RunnableSequence", "chain_start:ChatPromptTemplate", "chat_model_start"]
    for span in spans.all:
        assert inherited(span) == ("LoggingHandler",) and local(span) == ()
    assert not any(k.startswith("callscope.handlers.missed") for k in spans.one("RunnableSequence").attributes)


def test_same_handler_in_constructor_and_at_runtime_is_delivered_once(spans):
    handler = LoggingHandler()
    seed_chain(handler).invoke({"number": "2"}, config={"callbacks": [handler]})
    assert handler.events.count("chat_model_start") == 1
    assert inherited(spans.one("chat")) == ("LoggingHandler",) and local(spans.one("chat")) == ()


def test_with_config_callbacks_reach_that_subtree_only(spans):
    audit = AuditHandler()
    inner = (RunnableLambda(lambda v: v, name="a") | RunnableLambda(lambda v: v, name="b")).with_config(callbacks=[audit], run_name="sub")
    (RunnableLambda(lambda v: v, name="before") | inner).invoke(1)
    for name in ("sub", "a", "b"):
        assert inherited(spans.one(name)) == ("AuditHandler",), name
    for name in ("before", "RunnableSequence"):
        assert inherited(spans.one(name)) == (), name
    root = [s for s in spans.named("RunnableSequence") if s.parent is None][0]
    assert root.attributes["callscope.handlers.missed.AuditHandler"] == ("RunnableSequence", "before")


def test_constructor_model_inside_a_lambda_and_tool_with_its_own_handler(spans):
    model_handler, tool_handler = LoggingHandler(), AuditHandler()
    model = FakeListChatModel(responses=["r"], callbacks=[model_handler])
    inner_model = FakeListChatModel(responses=["inner"])

    @tool
    def search(query: str) -> str:
        """Search."""
        return inner_model.invoke(query).content

    search.callbacks = [tool_handler]
    chain = RunnableLambda(lambda v: model.invoke(v).content, name="ask") | RunnableLambda(lambda v: search.invoke(v), name="use_tool")
    chain.invoke("q")
    chats = {spans.parent_name(s): s for s in spans.named("chat")}
    assert local(chats["ask"]) == ("LoggingHandler",)
    assert local(spans.one("execute_tool search")) == ("AuditHandler",)
    # The tool's constructor handler does not see the model run inside the tool.
    assert local(chats["execute_tool search"]) == () and inherited(chats["execute_tool search"]) == ()
    assert local(spans.one("ask")) == ()


def test_two_instances_of_one_class_are_numbered_in_order_of_appearance(spans):
    first, second = AuditHandler(), AuditHandler()
    model = FakeListChatModel(responses=["r"], callbacks=[second])
    (RunnableLambda(lambda v: v, name="step") | model).invoke("q", config={"callbacks": [first]})
    assert inherited(spans.one("step")) == ("AuditHandler",)
    assert inherited(spans.one("chat")) == ("AuditHandler",) and local(spans.one("chat")) == ("AuditHandler#2",)
    assert spans.one("RunnableSequence").attributes["callscope.handlers.missed.AuditHandler#2"] == ("RunnableSequence", "step")


def test_labels_restart_in_each_trace(spans):
    a, b = AuditHandler(), AuditHandler()
    RunnableLambda(lambda v: v, name="one").invoke(1, config={"callbacks": [a]})
    RunnableLambda(lambda v: v, name="two").invoke(1, config={"callbacks": [b]})
    assert inherited(spans.one("one")) == inherited(spans.one("two")) == ("AuditHandler",)


def test_handlers_with_raise_error_or_run_inline_are_labelled_like_any_other(spans):
    class Strict(BaseCallbackHandler):
        raise_error = True
        run_inline = True

    seed_chain().invoke({"number": "2"}, config={"callbacks": [Strict()]})
    assert all(inherited(s) == ("Strict",) for s in spans.all)


def test_ignored_event_kinds_are_not_counted_as_seen(spans):
    class ModelsOnly(BaseCallbackHandler):
        ignore_chain = True

    seed_chain().invoke({"number": "2"}, config={"callbacks": [ModelsOnly()]})
    assert inherited(spans.one("chat")) == ("ModelsOnly",)
    assert inherited(spans.one("RunnableSequence")) == ()


MODES = ["invoke", "batch", "ainvoke", "stream", "astream", "astream_events"]


@pytest.mark.parametrize("mode", MODES)
def test_labels_are_identical_in_every_execution_mode(mode, spans):
    runtime, ctor = LoggingHandler(), AuditHandler()
    chain = seed_chain(ctor)
    config = {"callbacks": [runtime]}
    value = {"number": "2"}
    if mode == "invoke":
        chain.invoke(value, config)
    elif mode == "batch":
        chain.batch([value], config)
    elif mode == "stream":
        list(chain.stream(value, config))
    else:

        async def drive():
            if mode == "ainvoke":
                await chain.ainvoke(value, config)
            elif mode == "astream":
                return [c async for c in chain.astream(value, config)]
            else:
                return [e async for e in chain.astream_events(value, config, version="v2")]

        asyncio.run(drive())
    # stream/astream_events add LangChain's internal streaming handlers: never listed by default.
    assert {s.name: (local(s), inherited(s)) for s in spans.all} == {
        "RunnableSequence": ((), ("LoggingHandler",)),
        "ChatPromptTemplate": ((), ("LoggingHandler",)),
        "chat": (("AuditHandler",), ("LoggingHandler",)),
    }


def test_internal_handlers_listed_when_asked(tracer_provider, span_exporter):
    callscope.instrument(tracer_provider, include_internal_handlers=True)
    try:

        async def drive():
            return [e async for e in seed_chain().astream_events({"number": "2"}, version="v2")]

        asyncio.run(drive())
    finally:
        callscope.uninstrument()
    chat = [s for s in span_exporter.get_finished_spans() if s.name == "chat"][0]
    assert "_AstreamEventsCallbackHandler" in inherited(chat)


def test_langgraph_nodes_carry_inherited_labels(spans):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        n: int

    builder = StateGraph(State)
    builder.add_node("inc", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "inc")
    builder.add_edge("inc", END)
    builder.compile().invoke({"n": 1}, config={"callbacks": [AuditHandler()]})
    assert inherited(spans.one("inc")) == ("AuditHandler",)
    assert inherited(spans.one("LangGraph")) == ("AuditHandler",)


def test_current_handlers_and_custom_events_inside_a_step(spans):
    seen: list[tuple[str, ...]] = []

    def step(value: str) -> str:
        seen.append(callscope.current_handlers())
        dispatch_custom_event("checkpoint", {"at": 1})
        return value

    audit = AuditHandler()
    RunnableLambda(step, name="step").invoke("x", config={"callbacks": [audit, LoggingHandler()]})
    assert seen == [("AuditHandler", "LoggingHandler")]
    assert callscope.current_handlers() == ()
    (event,) = spans.one("step").events
    assert event.name == "checkpoint"
    assert tuple(event.attributes[INHERITED]) == ("AuditHandler", "LoggingHandler")


def test_current_handlers_is_empty_when_not_instrumented():
    assert RunnableLambda(lambda v: callscope.current_handlers()).invoke(1, config={"callbacks": [AuditHandler()]}) == ()


# --- span processors attached to one component --------------------------------------------


def test_attached_processor_sees_exactly_the_components_own_spans(spans):
    own = InMemorySpanExporter()
    model = callscope.attach(FakeListChatModel(responses=["a", "b"]), SimpleSpanProcessor(own))
    chain = RunnableLambda(lambda v: v, name="prep") | model
    chain.invoke("q")
    chain.invoke("q", config={"callbacks": [AuditHandler()]})
    FakeListChatModel(responses=["other"]).invoke("not this model")
    assert [s.name for s in own.get_finished_spans()] == ["chat", "chat"]
    # the provider's own processors still see every span
    assert spans.names().count("chat") == 3 and "prep" in spans.names()
    # the carrier is callscope plumbing, never listed as a handler
    assert all(local(s) == () for s in spans.named("chat"))


def test_attached_processor_gets_start_and_end(spans):
    class Counting:
        def __init__(self):
            self.started, self.ended = [], []

        def on_start(self, span, parent_context=None):
            self.started.append(span.name)

        def on_end(self, span):
            self.ended.append((span.name, span.end_time is not None))

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    counter = Counting()

    @tool
    def ping(text: str) -> str:
        """Ping."""
        return text

    callscope.attach(ping, counter)
    RunnableLambda(lambda v: ping.invoke(v), name="caller").invoke("x")
    assert counter.started == ["execute_tool ping"] and counter.ended == [("execute_tool ping", True)]


def test_detach_stops_delivery_and_restores_callbacks(spans):
    own = InMemorySpanExporter()
    processor = SimpleSpanProcessor(own)
    handler = LoggingHandler()
    model = FakeListChatModel(responses=["a"], callbacks=[handler])
    callscope.attach(model, processor)
    callscope.detach(model, processor)
    model.invoke("q")
    assert own.get_finished_spans() == ()
    assert model.callbacks == [handler]


@pytest.mark.parametrize("component", [RunnableLambda(lambda v: v), seed_chain()], ids=["lambda", "sequence"])
def test_attach_to_a_component_without_constructor_callbacks_says_what_to_do(component):
    with pytest.raises(callscope.ConfigError, match="with_config"):
        callscope.attach(component, SimpleSpanProcessor(InMemorySpanExporter()))


def test_attach_rejects_things_that_are_not_processors():
    with pytest.raises(callscope.ConfigError, match="SimpleSpanProcessor"):
        callscope.attach(FakeListChatModel(responses=["a"]), InMemorySpanExporter())
    with pytest.raises(callscope.ConfigError, match="at least one"):
        callscope.attach(FakeListChatModel(responses=["a"]))


def test_an_attached_component_copies_and_keeps_its_attachment(spans):
    import copy

    own = InMemorySpanExporter()
    handler = LoggingHandler()
    model = callscope.attach(FakeListChatModel(responses=["a"], callbacks=[handler]), SimpleSpanProcessor(own))
    copies = [copy.deepcopy(model), model.model_copy(deep=True), copy.copy(model), model.model_copy()]
    for i, clone in enumerate(copies):
        clone.invoke(f"copy {i}")
    assert [s.name for s in own.get_finished_spans()] == ["chat"] * 4
    # A deep copy has its own attachment: detaching it leaves the original's alone.
    callscope.detach(copies[0])
    own.clear()
    copies[0].invoke("detached copy")
    model.invoke("original")
    assert len(own.get_finished_spans()) == 1
    assert all(local(s) == ("LoggingHandler",) for s in spans.named("chat"))


def test_an_attached_component_pickles_and_comes_back_without_the_attachment(spans):
    import pickle

    own = InMemorySpanExporter()
    model = callscope.attach(FakeListChatModel(responses=["a"]), SimpleSpanProcessor(own))
    restored = pickle.loads(pickle.dumps(model))
    assert restored.invoke("q").content == "a"
    assert own.get_finished_spans() == ()  # the processors stayed in the pickling process
    assert spans.names() == ["chat"]  # still traced by the provider
    callscope.attach(restored, SimpleSpanProcessor(own))
    restored.invoke("q")
    model.invoke("q")
    assert len(own.get_finished_spans()) == 2


# --- LangChain's internal tracers are not "your" handlers (issue 11, point 4) -----------------


def message_history_chain():
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.prompts import MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    histories: dict[str, InMemoryChatMessageHistory] = {}
    return RunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=["hi"]),
        lambda session_id: histories.setdefault(session_id, InMemoryChatMessageHistory()),
        input_messages_key="question",
        history_messages_key="history",
    )


INTERNAL_TRACER_CASES = {
    "with_listeners": (lambda: seed_chain().with_listeners(on_end=lambda run: None), {"number": "2"}, {}),
    "message history": (message_history_chain, {"question": "hello"}, {"configurable": {"session_id": "s1"}}),
}


def every_label(spans) -> set[str]:
    labels: set[str] = set()
    for span in spans.all:
        labels.update(local(span) + inherited(span))
        labels.update(key.removeprefix("callscope.handlers.missed.") for key in span.attributes if key.startswith("callscope.handlers.missed."))
        labels.update(line.split(" saw ")[0] for line in span.attributes.get("callscope.handlers.missed", ()))
    return labels


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream_events"])
@pytest.mark.parametrize("case", list(INTERNAL_TRACER_CASES))
def test_listener_tracers_are_hidden_and_the_users_handler_is_still_listed(case, mode, spans):
    make, value, config = INTERNAL_TRACER_CASES[case]
    config = {**config, "callbacks": [LoggingHandler()]}
    runnable = make()
    if mode == "invoke":
        runnable.invoke(value, config)
    elif mode == "stream":
        list(runnable.stream(value, config))
    else:

        async def drive():
            if mode == "ainvoke":
                return await runnable.ainvoke(value, config)
            return [e async for e in runnable.astream_events(value, config, version="v2")]

        asyncio.run(drive())
    assert every_label(spans) == {"LoggingHandler"}
    assert all(inherited(span) == ("LoggingHandler",) for span in spans.all)


def test_langgraph_message_streaming_and_log_streams_are_hidden(spans):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        answer: str

    model = FakeListChatModel(responses=["streamed answer"])
    builder = StateGraph(State)
    builder.add_node("answer", lambda state: {"answer": model.invoke("q").content})
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
    list(graph.stream({"answer": ""}, {"callbacks": [AuditHandler()]}, stream_mode="messages"))

    async def log() -> None:
        async for _ in seed_chain().astream_log({"number": "2"}, {"callbacks": [AuditHandler()]}):
            pass

    asyncio.run(log())
    assert every_label(spans) == {"AuditHandler"}


def test_listener_tracers_listed_when_asked(tracer_provider, span_exporter):
    callscope.instrument(tracer_provider, include_internal_handlers=True)
    try:
        seed_chain().with_listeners(on_end=lambda run: None).invoke({"number": "2"})
    finally:
        callscope.uninstrument()
    assert all("RootListenersTracer" in inherited(s) for s in span_exporter.get_finished_spans())


# --- labels and "missed" summaries per OpenTelemetry trace (issue 11, point 5) -----------------


class RequestLogger(BaseCallbackHandler):
    pass


def answer_chain(logger: BaseCallbackHandler):
    return ChatPromptTemplate.from_template("q {x}") | FakeListChatModel(responses=["a"], callbacks=[logger])


def test_two_chains_in_one_request_number_their_handlers_together(spans, user_tracer):
    with user_tracer.start_as_current_span("POST /ask"):
        answer_chain(RequestLogger()).invoke({"x": "1"})
        answer_chain(RequestLogger()).invoke({"x": "2"})
    first, second = sorted(spans.named("chat"), key=lambda s: s.start_time)
    assert local(first) == ("RequestLogger",) and local(second) == ("RequestLogger#2",)
    # One summary per LangChain root, about that root's own runs and the handlers they reached.
    roots = sorted(spans.named("RunnableSequence"), key=lambda s: s.start_time)
    for root, label in zip(roots, ("RequestLogger", "RequestLogger#2"), strict=True):
        (summary,) = root.attributes["callscope.handlers.missed"]
        assert summary.startswith(f"{label} saw 1 of 3 runs; scope: missed RunnableSequence, ChatPromptTemplate (")
    assert len(spans.trace_ids()) == 1


def test_labels_restart_in_each_request(spans, user_tracer):
    for path in ("POST /ask", "POST /again"):
        with user_tracer.start_as_current_span(path):
            answer_chain(RequestLogger()).invoke({"x": "1"})
    assert [local(s) for s in spans.named("chat")] == [("RequestLogger",), ("RequestLogger",)]


def test_a_chain_run_inside_a_models_provider_code_shares_the_models_labels(spans):
    from langchain_core.language_models import FakeListChatModel as Base

    class Delegating(Base):
        """A provider integration that runs a chain of its own inside _generate, without config."""

        def _call(self, messages, stop=None, run_manager=None, **kwargs):
            RunnableLambda(lambda v: v, name="inner").invoke(1, config={"callbacks": [RequestLogger()]})
            return super()._call(messages, stop, run_manager, **kwargs)

    Delegating(responses=["a"], callbacks=[RequestLogger()]).invoke("q")
    assert spans.parent_name(spans.one("inner")) == "chat"
    assert local(spans.one("chat")) == ("RequestLogger",)
    assert inherited(spans.one("inner")) == ("RequestLogger#2",)


# --- why a handler missed a run -------------------------------------------------------------

FILTERED, DROPPED, DROPPED_IN = "callscope.handlers.filtered", "callscope.handlers.dropped", "callscope.handlers.dropped_in"


def run_in(mode: str, runnable, value, config):
    """Run ``runnable`` in one execution mode, as an application would."""
    if mode == "invoke":
        return runnable.invoke(value, config)
    if mode == "batch":
        return runnable.batch([value], config)[0]
    if mode == "stream":
        return list(runnable.stream(value, config))

    async def drive():
        if mode == "ainvoke":
            return await runnable.ainvoke(value, config)
        if mode == "abatch":
            return (await runnable.abatch([value], config))[0]
        if mode == "astream":
            return [c async for c in runnable.astream(value, config)]
        return [e async for e in runnable.astream_events(value, config, version="v2")]

    return asyncio.run(drive())


def summary_of(spans, label: str, root: str = "RunnableSequence") -> str:
    roots = [s for s in spans.named(root) if "callscope.handlers.missed" in s.attributes]
    assert len(roots) == 1, [s.name for s in spans.all]
    lines = [line for line in roots[0].attributes["callscope.handlers.missed"] if line.startswith(f"{label} saw ")]
    assert len(lines) == 1, roots[0].attributes["callscope.handlers.missed"]
    return lines[0]


REASON_MODES = ["invoke", "batch", "ainvoke", "abatch", "stream", "astream", "astream_events"]


@pytest.mark.parametrize("mode", REASON_MODES)
def test_scope_a_constructor_handler_misses_the_runs_of_other_components(mode, spans):
    handler = LoggingHandler()
    run_in(mode, seed_chain(handler), {"number": "2"}, {})
    assert summary_of(spans, "LoggingHandler") == (
        "LoggingHandler saw 1 of 3 runs; scope: missed RunnableSequence, ChatPromptTemplate (a constructor callback"
        " of chat; fix: pass it at run time, config={'callbacks': [...]}, to see the whole chain)"
    )


@pytest.mark.parametrize("mode", REASON_MODES)
def test_subtree_a_with_config_handler_misses_the_runs_outside_its_subtree(mode, spans):
    audit = AuditHandler()
    sub = (RunnableLambda(lambda v: v, name="a") | RunnableLambda(lambda v: v, name="b")).with_config(callbacks=[audit], run_name="sub")
    run_in(mode, RunnableLambda(lambda v: v, name="before") | sub, 1, {})
    assert summary_of(spans, "AuditHandler") == (
        "AuditHandler saw 3 of 5 runs; subtree: missed RunnableSequence, before (passed down from sub only;"
        " fix: pass it to the outermost call, config={'callbacks': [...]}, to see the whole chain)"
    )


def test_subtree_a_runtime_handler_given_to_a_nested_call(spans):
    """``config={"callbacks": [h]}`` on a nested call replaces the step's callbacks: ``h`` is
    inherited in the nested call only (subtree), and the outer runtime handler loses it
    (dropped)."""
    audit, runtime = AuditHandler(), LoggingHandler()
    inner = RunnableLambda(lambda v: v, name="inner_a") | RunnableLambda(lambda v: v, name="inner_b")
    outer = RunnableLambda(lambda v: v, name="first") | RunnableLambda(lambda v: inner.invoke(v, {"callbacks": [audit]}), name="nest")
    outer.invoke(1, {"callbacks": [runtime]})
    assert summary_of(spans, "AuditHandler").startswith(
        "AuditHandler saw 3 of 6 runs; subtree: missed RunnableSequence, first, nest (passed down from RunnableSequence only;"
    )
    assert summary_of(spans, "LoggingHandler").startswith(
        "LoggingHandler saw 3 of 6 runs; dropped: missed RunnableSequence, inner_a, inner_b (started in nest without its config;"
    )


@pytest.mark.parametrize("mode", REASON_MODES)
def test_filtered_an_ignore_flag_keeps_the_runs_of_its_type_from_the_handler(mode, spans):
    class ModelsOnly(BaseCallbackHandler):
        ignore_chain = True

    run_in(mode, seed_chain(), {"number": "2"}, {"callbacks": [ModelsOnly()]})
    assert inherited(spans.one("chat")) == ("ModelsOnly",)
    for name in ("RunnableSequence", "ChatPromptTemplate"):
        assert tuple(spans.one(name).attributes[FILTERED]) == ("ModelsOnly",), name
        assert inherited(spans.one(name)) == (), name
    assert FILTERED not in spans.one("chat").attributes
    assert summary_of(spans, "ModelsOnly") == (
        "ModelsOnly saw 1 of 3 runs; filtered: missed RunnableSequence, ChatPromptTemplate (ignore_chain=True on the"
        " handler; fix: unset the flag to receive these runs)"
    )


def test_filtered_names_the_flag_of_each_run_type(spans):
    class NoModels(BaseCallbackHandler):
        ignore_chat_model = True

    seed_chain().invoke({"number": "2"}, {"callbacks": [NoModels()]})
    assert tuple(spans.one("chat").attributes[FILTERED]) == ("NoModels",)
    assert "filtered: missed chat (ignore_chat_model=True on the handler;" in summary_of(spans, "NoModels")


def _nested_answer():
    return (ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["inner"])).with_config(run_name="inner")


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "stream", "astream"])
def test_dropped_a_with_config_chain_invoked_in_a_step_without_config(mode, spans):
    """LangChain's with_config(callbacks=...) overwrites the step's callbacks when the bound
    runnable is invoked without config (the notes' K1): a new LangChain root inside the step."""
    runtime, audit = LoggingHandler(), AuditHandler()
    inner = _nested_answer().with_config(callbacks=[audit])

    async def anest(value):
        return (await inner.ainvoke({"q": value})).content

    nest = RunnableLambda(lambda value: inner.invoke({"q": value}).content, afunc=anest, name="nest")
    run_in(mode, RunnableLambda(lambda v: v, name="first") | nest, "q", {"callbacks": [runtime]})
    assert runtime.events.count("chat_model_start") == 0  # LangChain's own behaviour: it never sees the nested model
    inner_span = spans.one("inner")
    assert inner_span.attributes[DROPPED_IN] == "nest"
    for span in [inner_span, spans.one("chat"), *[s for s in spans.named("ChatPromptTemplate")]]:
        assert tuple(span.attributes[DROPPED]) == ("LoggingHandler",), span.name
        assert inherited(span) == ("AuditHandler",), span.name
    assert DROPPED not in spans.one("nest").attributes
    assert summary_of(spans, "LoggingHandler") == (
        "LoggingHandler saw 3 of 6 runs; dropped: missed inner, ChatPromptTemplate, chat (started in nest without its"
        " config; fix: pass `config` to the nested `invoke` (into the thread, too))"
    )


def _carrying_otel_context(work):
    """What OpenTelemetry's threading instrumentation does for a pool's task: the submitter's
    OTel context is attached in the worker thread; LangChain's config context is not carried."""
    from opentelemetry import context as otel_context

    captured = otel_context.get_current()

    def run():
        token = otel_context.attach(captured)
        try:
            return work()
        finally:
            otel_context.detach(token)

    return run


def test_dropped_a_chain_run_in_a_worker_thread_under_otel_thread_propagation(spans):
    from concurrent.futures import ThreadPoolExecutor

    runtime = LoggingHandler()
    inner = _nested_answer()
    with ThreadPoolExecutor(2) as pool:

        def fetch(value):
            futures = [pool.submit(_carrying_otel_context(lambda: inner.invoke({"q": value}).content)) for _ in range(2)]
            return [f.result() for f in futures]

        (RunnableLambda(lambda v: v, name="first") | RunnableLambda(fetch, name="fetch")).invoke("q", {"callbacks": [runtime]})
    assert len(spans.trace_ids()) == 1
    for inner_span in spans.named("inner"):
        assert spans.parent_name(inner_span) == "fetch"
        assert inner_span.attributes[DROPPED_IN] == "fetch"
    assert all(tuple(s.attributes[DROPPED]) == ("LoggingHandler",) for s in spans.named("chat"))
    assert summary_of(spans, "LoggingHandler") == (
        "LoggingHandler saw 3 of 9 runs; dropped: missed inner ×2, ChatPromptTemplate ×2, chat ×2 (started in fetch"
        " without its config; fix: pass `config` to the nested `invoke` (into the thread, too))"
    )


def test_a_worker_thread_root_that_got_the_config_drops_nothing(spans):
    from concurrent.futures import ThreadPoolExecutor

    runtime = LoggingHandler()
    inner = _nested_answer()
    with ThreadPoolExecutor(1) as pool:

        def fetch(value, config):
            return pool.submit(_carrying_otel_context(lambda: inner.invoke({"q": value}, {"callbacks": config["callbacks"]}).content)).result()

        (RunnableLambda(lambda v: v, name="first") | RunnableLambda(fetch, name="fetch")).invoke("q", {"callbacks": [runtime]})
    assert runtime.events.count("chat_model_start") == 1
    assert not any(DROPPED in s.attributes for s in spans.all)
    assert "callscope.handlers.missed" not in spans.one("RunnableSequence").attributes


def test_dropped_in_a_langgraph_node_that_runs_a_chain_in_a_thread(spans):
    from concurrent.futures import ThreadPoolExecutor
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        q: str

    inner = _nested_answer()
    pool = ThreadPoolExecutor(1)

    def research(state: State) -> State:
        return {"q": pool.submit(_carrying_otel_context(lambda: inner.invoke({"q": state["q"]}).content)).result()}

    builder = StateGraph(State)
    builder.add_node("research", research)
    builder.add_edge(START, "research")
    builder.add_edge("research", END)
    try:
        builder.compile().invoke({"q": "x"}, {"callbacks": [LoggingHandler()]})
    finally:
        pool.shutdown()
    assert spans.one("inner").attributes[DROPPED_IN] == "research"
    assert tuple(spans.one("chat").attributes[DROPPED]) == ("LoggingHandler",)
    assert "dropped: missed inner, ChatPromptTemplate, chat (started in research without its config;" in summary_of(
        spans, "LoggingHandler", root="LangGraph"
    )


# --- the markers an exact-match search finds (Jaeger tags, tail sampling) --------------------

MARKERS = ("callscope.config.dropped", "callscope.missed_by.", "callscope.error", "callscope.handler.failed")


def marked(spans, key: str) -> list[tuple[str, object]]:
    """(span name, value) of each span with attribute ``key``, or with a key under it if it ends in "."."""
    return sorted(
        (s.name, value) for s in spans.all for name, value in s.attributes.items() if name == key or (key.endswith(".") and name.startswith(key))
    )


def test_config_dropped_marks_exactly_the_runs_that_started_without_their_steps_config(spans):
    from concurrent.futures import ThreadPoolExecutor

    audited = _nested_answer().with_config(callbacks=[AuditHandler()])
    threaded = _nested_answer().with_config(run_name="threaded")
    with ThreadPoolExecutor(2) as pool:

        def fetch(value):
            futures = [pool.submit(_carrying_otel_context(lambda: threaded.invoke({"q": value}).content)) for _ in range(2)]
            return [f.result() for f in futures]

        chain = RunnableLambda(lambda v: audited.invoke({"q": v}).content, name="nest") | RunnableLambda(fetch, name="fetch")
        chain.invoke("q", {"callbacks": [LoggingHandler()]})
    dropped_in = sorted(s.name for s in spans.all if DROPPED_IN in s.attributes)
    assert dropped_in == ["inner", "threaded", "threaded"]
    assert marked(spans, "callscope.config.dropped") == [(name, True) for name in dropped_in]
    # The runs under them lack the handlers too (callscope.handlers.dropped), but are not marked.
    assert {s.name for s in spans.all if DROPPED in s.attributes} == {"inner", "threaded", "ChatPromptTemplate", "chat"}


def test_missed_by_marks_the_root_once_for_each_handler_that_missed_runs(spans):
    class ModelsOnly(BaseCallbackHandler):
        ignore_chain = True

    seed_chain(LoggingHandler()).invoke({"number": "2"}, {"callbacks": [AuditHandler(), ModelsOnly()]})
    # LoggingHandler (the model's own) and ModelsOnly (ignore_chain) missed runs; AuditHandler saw all.
    assert marked(spans, "callscope.missed_by.") == [("RunnableSequence", True)] * 2
    root = spans.one("RunnableSequence")
    missed_by = {key.removeprefix("callscope.missed_by.") for key in root.attributes if key.startswith("callscope.missed_by.")}
    listed = {key.removeprefix("callscope.handlers.missed.") for key in root.attributes if key.startswith("callscope.handlers.missed.")}
    assert missed_by == listed == {"LoggingHandler", "ModelsOnly"}


@pytest.mark.parametrize("mode", REASON_MODES)
def test_an_ordinary_run_carries_no_marker(mode, spans):
    run_in(mode, seed_chain(), {"number": "2"}, {"callbacks": [LoggingHandler()]})
    assert len(spans.all) == 3
    assert [marked(spans, key) for key in MARKERS] == [[], [], [], []]


def test_reason_summaries_stay_bounded_however_long_the_trace(spans):
    from callscope._bridge import scope as _scope

    class ModelsOnly(BaseCallbackHandler):
        ignore_chain = True

    steps = RunnableLambda(lambda v: v, name="s0")
    for i in range(1, _scope._MAX_TRACKED_RUNS + 50):
        steps = steps | RunnableLambda(lambda v: v, name=f"s{i}")
    steps.invoke(1, {"callbacks": [ModelsOnly()]})
    root = spans.one("RunnableSequence")
    assert len(root.attributes["callscope.handlers.missed.ModelsOnly"]) == _scope._MAX_LISTED_MISSES + 1
    (line, untracked) = root.attributes["callscope.handlers.missed"]
    assert len(line) < 4000 and untracked == "(51 further runs not tracked)"
    assert "s30, … 968 more (ignore_chain=True" in line


def _readme_dropped_config_example() -> dict[str, Any]:
    """The README's dropped-config example, its code exactly as printed there, ready to run."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("A dropped config — a step that runs another chain") :]
    code = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python\n"))]
    names: dict[str, Any] = {
        "ChatPromptTemplate": ChatPromptTemplate,
        "RunnableLambda": RunnableLambda,
        "LoggingHandler": LoggingHandler,
        "model": FakeListChatModel(responses=["short"]),
        "prompt": ChatPromptTemplate.from_template("What is 1 + {number}?"),
    }
    return {"code": code, "names": names}


def test_readme_dropped_config_example_on_a_plain_install(spans):
    """No threading instrumentation: the thread's chain is a trace of its own, without handlers."""
    example = _readme_dropped_config_example()
    exec(example["code"], example["names"])
    example["names"]["pool"].shutdown()
    roots = {s.name: s for s in spans.all if s.parent is None}
    assert set(roots) == {"RunnableSequence", "summarize"}
    inner = [s for s in spans.all if s.context.trace_id == roots["summarize"].context.trace_id]
    assert {s.name for s in inner} == {"summarize", "ChatPromptTemplate", "chat"}
    assert not any(DROPPED in s.attributes or "callscope.handlers.inherited" in s.attributes for s in inner)


def test_readme_dropped_config_example_with_threading_instrumentation_and_its_fix(spans):
    """README's dropped-config example, as written there, and the fix it gives."""
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    example = _readme_dropped_config_example()
    ThreadingInstrumentor().instrument()
    try:
        exec(example["code"], example["names"])
        assert summary_of(spans, "LoggingHandler") == (
            "LoggingHandler saw 3 of 6 runs; dropped: missed summarize, ChatPromptTemplate, chat (started in fetch without"
            " its config; fix: pass `config` to the nested `invoke` (into the thread, too))"
        )
        cells = {(s.name, spans.parent_name(s)): tuple(s.attributes.get(DROPPED, ())) for s in spans.all}
        assert cells[("summarize", "fetch")] == cells[("chat", "summarize")] == cells[("ChatPromptTemplate", "summarize")] == ("LoggingHandler",)
        spans.clear()
        names, pool = example["names"], example["names"]["pool"]

        def fixed(question, config):
            return pool.submit(lambda: names["summarize"].invoke({"q": question}, config)).result()

        handler = LoggingHandler()
        (names["prompt"] | RunnableLambda(fixed, name="fetch")).invoke({"number": "2"}, config={"callbacks": [handler]})
        pool.shutdown()
    finally:
        ThreadingInstrumentor().uninstrument()
    assert handler.events.count("chat_model_start") == 1
    assert not any(DROPPED in s.attributes for s in spans.all)
    assert "callscope.handlers.missed" not in spans.one("RunnableSequence").attributes


def test_a_custom_event_names_the_handlers_its_ignore_flag_kept_it_from(spans):
    class NoCustom(BaseCallbackHandler):
        ignore_custom_event = True

    def step(value: str) -> str:
        dispatch_custom_event("checkpoint", {"at": 1})
        return value

    RunnableLambda(step, name="step").invoke("x", config={"callbacks": [AuditHandler(), NoCustom()]})
    (event,) = spans.one("step").events
    assert tuple(event.attributes[INHERITED]) == ("AuditHandler",)
    assert tuple(event.attributes[FILTERED]) == ("NoCustom",)


def test_dropped_langchain_s_fallbacks_stream_loses_the_runtime_handlers_of_a_with_config_fallback(spans):
    """Found by the harness's dropped guard: RunnableWithFallbacks.stream calls the fallback's
    stream without its config, so a with_config(callbacks=...) fallback replaces the callbacks."""
    from langchain_core.language_models import FakeListLLM

    class Seen(BaseCallbackHandler):
        def __init__(self) -> None:
            self.llm_starts = 0

        def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
            self.llm_starts += 1

    def refuse(_: Any) -> str:
        raise ValueError("primary is down")

    runtime = Seen()
    chain = RunnableLambda(refuse).with_fallbacks([FakeListLLM(responses=["four"]).with_config(callbacks=[AuditHandler()])])
    assert list(chain.stream("hi", {"callbacks": [runtime]})) == ["four"]
    assert runtime.llm_starts == 0  # LangChain's behaviour, with or without callscope
    completion = spans.one("text_completion")
    assert completion.attributes[DROPPED_IN] == "RunnableWithFallbacks"
    assert tuple(completion.attributes[DROPPED]) == ("Seen",)


def test_labels_of_a_trace_its_own_root_started_are_dropped_when_that_root_ends(spans, instrumented, user_tracer):
    # Nothing can start in such a trace once its root has ended, so nothing is kept per trace
    # (a service running a chain per request would otherwise fill the bounded map for nothing).
    by_trace = instrumented.handler.labels_by_trace._by_trace
    for _ in range(20):
        seed_chain().invoke({"number": "2"}, config={"callbacks": [LoggingHandler()]})
    assert by_trace == {}
    # Under an application's span the application may still run another chain in that trace.
    with user_tracer.start_as_current_span("POST /ask") as request:
        seed_chain().invoke({"number": "2"}, config={"callbacks": [LoggingHandler()]})
    assert list(by_trace) == [request.get_span_context().trace_id]
