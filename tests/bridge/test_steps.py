"""Point 2-5 of the core issue: parents come from the run tree, code inside a step sees the
step's span in every execution mode, and the caller's context is untouched afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from opentelemetry import trace

MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream", "astream_events"]


def run_mode(runnable: Any, value: Any, mode: str) -> None:
    """Drive ``runnable`` to completion in one of LangChain's execution modes."""
    if mode == "invoke":
        runnable.invoke(value)
    elif mode == "batch":
        runnable.batch([value, value])
    elif mode == "stream":
        for _ in runnable.stream(value):
            pass
    else:

        async def drive() -> None:
            if mode == "ainvoke":
                await runnable.ainvoke(value)
            elif mode == "abatch":
                await runnable.abatch([value, value])
            elif mode == "astream":
                async for _ in runnable.astream(value):
                    pass
            elif mode == "astream_events":
                async for _ in runnable.astream_events(value, version="v2"):
                    pass

        asyncio.run(drive())


def expected_runs(mode: str) -> int:
    return 2 if "batch" in mode else 1


@pytest.mark.parametrize("mode", MODES)
def test_user_span_inside_a_lambda_nests_under_the_step(mode, spans, user_tracer, no_detach_errors):
    def step(text: str) -> str:
        with user_tracer.start_as_current_span("user.work"):
            return text.upper()

    chain = ChatPromptTemplate.from_template("say {x}") | FakeListChatModel(responses=["ok"]) | StrOutputParser() | RunnableLambda(step)
    with user_tracer.start_as_current_span("caller") as caller:
        run_mode(chain, {"x": "hi"}, mode)
        assert trace.get_current_span() is caller

    work = spans.named("user.work")
    assert len(work) == expected_runs(mode)
    for span in work:
        assert spans.ancestors(span) == ["step", "RunnableSequence", "caller"]
    assert len(spans.trace_ids()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_every_run_is_one_span_parented_by_the_run_tree(mode, spans, user_tracer):
    chain = ChatPromptTemplate.from_template("say {x}") | FakeListChatModel(responses=["ok"]) | StrOutputParser()
    with user_tracer.start_as_current_span("caller"):
        run_mode(chain, {"x": "hi"}, mode)
    n = expected_runs(mode)
    assert len(spans.named("RunnableSequence")) == n
    for name in ("ChatPromptTemplate", "chat", "StrOutputParser"):
        found = spans.named(name)
        assert len(found) == n, (name, spans.names())
        assert all(spans.parent_name(s) == "RunnableSequence" for s in found)
    assert all(spans.parent_name(s) == "caller" for s in spans.named("RunnableSequence"))


@pytest.mark.parametrize("mode", MODES)
def test_parallel_branches_and_nested_chains_see_their_own_step(mode, spans, user_tracer, no_detach_errors):
    def branch(name: str):
        def body(value: Any) -> str:
            with user_tracer.start_as_current_span(f"user.{name}"):
                # A nested chain invoked inside the step without passing config still nests.
                return RunnableLambda(lambda v: f"{name}:{v}", name=f"inner_{name}").invoke(value)

        return RunnableLambda(body, name=f"branch_{name}")

    parallel = RunnableParallel(a=branch("a"), b=branch("b"))
    with user_tracer.start_as_current_span("caller") as caller:
        run_mode(parallel, "v", mode)
        assert trace.get_current_span() is caller

    for name in ("a", "b"):
        for span in spans.named(f"user.{name}"):
            assert spans.ancestors(span)[:2] == [f"branch_{name}", "RunnableParallel<a,b>"]
        for span in spans.named(f"inner_{name}"):
            assert spans.ancestors(span)[:2] == [f"user.{name}", f"branch_{name}"] or spans.parent_name(span) == f"branch_{name}"
        assert len(spans.named(f"inner_{name}")) == expected_runs(mode)


def test_nested_chain_with_config_is_parented_by_run_tree_not_by_ambient_span(spans, user_tracer):
    def step(value: str, config) -> str:
        with user_tracer.start_as_current_span("user.ambient"):
            return RunnableLambda(lambda v: v, name="nested").invoke(value, config)

    RunnableLambda(step, name="outer").invoke("x")
    # LangChain says the nested run's parent is "outer" (the config passed), even though another
    # span was current when its start callback fired.
    assert spans.parent_name(spans.one("nested")) == "outer"


def test_root_run_without_current_span_starts_a_new_trace(spans):
    RunnableLambda(lambda v: v, name="alone").invoke(1)
    RunnableLambda(lambda v: v, name="alone").invoke(2)
    alone = spans.named("alone")
    assert all(s.parent is None for s in alone)
    assert len(spans.trace_ids(alone)) == 2


def test_tool_body_and_langgraph_node_see_their_span(spans, user_tracer):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        with user_tracer.start_as_current_span("user.in_tool"):
            return query

    class State(TypedDict):
        text: str

    def node(state: State) -> State:
        with user_tracer.start_as_current_span("user.in_node"):
            return {"text": lookup.invoke({"query": state["text"]})}

    builder = StateGraph(State)
    builder.add_node("work", node)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    graph = builder.compile()

    with user_tracer.start_as_current_span("caller") as caller:
        graph.invoke({"text": "q"})
        asyncio.run(graph.ainvoke({"text": "q"}))
        assert trace.get_current_span() is caller

    for span in spans.named("user.in_node"):
        assert spans.ancestors(span)[:2] == ["work", "LangGraph"]
    for span in spans.named("user.in_tool"):
        # The tool run's parent is the node run (run tree), not the user's span around the call.
        assert spans.ancestors(span)[:3] == ["execute_tool lookup", "work", "LangGraph"]
    assert len(spans.named("user.in_tool")) == 2
    assert len(spans.trace_ids()) == 1


@pytest.mark.parametrize("how", ["break", "close"])
def test_sync_stream_broken_off_ends_spans_and_restores_context(how, spans, user_tracer, instrumented, no_detach_errors):
    chain = RunnableLambda(lambda x: x, name="first") | FakeListChatModel(responses=["a long answer"]) | StrOutputParser()
    with user_tracer.start_as_current_span("caller") as caller:
        stream = chain.stream("q")
        next(stream)
        if how == "close":
            stream.close()
        else:
            del stream
        assert trace.get_current_span() is caller
    assert len(instrumented.handler.registry) == 0
    # A sync RunnableSequence swallows GeneratorExit and reports a normal end with the partial
    # output, so nothing marks it abandoned; what matters is that every span ended cleanly.
    assert {"RunnableSequence", "first", "chat", "StrOutputParser"} <= set(spans.names())
    assert all(s.status.is_unset for s in spans.all)


@pytest.mark.parametrize("how", ["break", "aclose"])
def test_async_stream_broken_off_ends_spans_and_restores_context(how, spans, user_tracer, instrumented, no_detach_errors):
    chain = RunnableLambda(lambda x: x, name="first") | FakeListChatModel(responses=["a long answer"]) | StrOutputParser()

    async def drive() -> None:
        stream = chain.astream("q")
        async for _ in stream:
            break
        if how == "aclose":
            await stream.aclose()

    with user_tracer.start_as_current_span("caller") as caller:
        asyncio.run(drive())
        assert trace.get_current_span() is caller
    assert len(instrumented.handler.registry) == 0
    assert {"RunnableSequence", "first", "chat"} <= set(spans.names())
    # LangChain's async stream reports the consumer's exit as GeneratorExit: not an error.
    assert spans.one("chat").attributes["callscope.stream.abandoned"] is True
    assert spans.one("RunnableSequence").attributes["callscope.stream.abandoned"] is True
    assert all(s.status.is_unset for s in spans.all)


# --- LangChain's own parentage defects (point 5) -------------------------------------------


def test_with_fallbacks_children_nest_under_the_fallbacks_run(spans, user_tracer):
    def broken(_: str) -> str:
        raise ValueError("primary down")

    runnable = RunnableLambda(broken, name="primary").with_fallbacks([RunnableLambda(lambda v: v, name="backup")])
    with user_tracer.start_as_current_span("caller"):
        assert runnable.invoke("x") == "x"
    # langchain-ai/langchain#36072: LangChain reports both children with parent_run_id=None.
    # They still nest under the fallbacks span, because that span is current in their step.
    assert spans.parent_name(spans.one("primary")) == "RunnableWithFallbacks"
    assert spans.parent_name(spans.one("backup")) == "RunnableWithFallbacks"
    assert spans.one("primary").status.status_code.name == "ERROR"
    assert len(spans.trace_ids()) == 1


def test_with_fallbacks_inside_a_sequence(spans, user_tracer):
    def broken(_: str) -> str:
        raise ValueError("primary down")

    fallbacks = RunnableLambda(broken, name="primary").with_fallbacks([RunnableLambda(lambda v: v, name="backup")])
    chain = RunnableLambda(lambda v: v, name="before") | fallbacks
    with user_tracer.start_as_current_span("caller"):
        chain.invoke("x")
    assert spans.ancestors(spans.one("backup"))[:2] == ["RunnableWithFallbacks", "RunnableSequence"]
    assert len(spans.trace_ids()) == 1


def test_with_config_callbacks_runnable_invoked_without_config_stays_in_the_trace(spans, user_tracer):
    from langchain_core.callbacks import BaseCallbackHandler

    class Counter(BaseCallbackHandler):
        pass

    inner = RunnableLambda(lambda v: v, name="bound").with_config(callbacks=[Counter()])

    def step(value: str) -> str:
        return inner.invoke(value)  # no config: LangChain makes "bound" a new root run

    with user_tracer.start_as_current_span("caller"):
        RunnableLambda(step, name="outer").invoke("x")
    assert spans.parent_name(spans.one("bound")) == "outer"
    assert len(spans.trace_ids()) == 1


def test_retriever_inner_runs_are_siblings_unless_the_child_manager_is_passed(spans):
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Careless(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content=RunnableLambda(lambda q: q, name="careless_inner").invoke(query))]

    class Careful(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            inner = RunnableLambda(lambda q: q, name="careful_inner")
            return [Document(page_content=inner.invoke(query, {"callbacks": run_manager.get_child()}))]

    chain = RunnableParallel(a=Careless(), b=Careful())
    chain.invoke("q")
    # LangChain does not open a step context for a retriever body, so a run started there
    # without run_manager.get_child() is reported as the retriever's sibling. callscope follows
    # LangChain here (the information to do better does not exist); the fix is in user code.
    assert spans.parent_name(spans.one("careless_inner")) == "RunnableParallel<a,b>"
    assert spans.parent_name(spans.one("careful_inner")) == "retrieval"
