"""callscope.testing, run the way a user runs it: pytest (through pytester) on test files that
use the callscope_runs fixture on real LangChain chains."""

from __future__ import annotations

import textwrap

import pytest

SEED = '''
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate


class CostTracker(BaseCallbackHandler):
    def on_llm_end(self, response, **kwargs):
        pass


def build(callbacks=None):
    model = FakeListChatModel(responses=["ok"] * 8, callbacks=callbacks)
    return ChatPromptTemplate.from_template("What is 1 + {number}?") | model | StrOutputParser()
'''


def _write(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(seed=SEED, test_chain="from seed import *\nimport pytest\n" + textwrap.dedent(body))


def test_a_constructor_handler_is_proven_to_miss_the_chain_runs(pytester: pytest.Pytester):
    _write(
        pytester,
        """
        def test_constructor_handler(callscope_runs):
            tracker = CostTracker()
            build(callbacks=[tracker]).invoke({"number": "2"})
            assert [run.name for run in callscope_runs.seen_by(tracker)] == ["chat"]
            missed = callscope_runs.missed_by(tracker)
            assert [(m.run.name, m.reason) for m in missed] == [
                ("RunnableSequence", "scope"), ("ChatPromptTemplate", "scope"), ("StrOutputParser", "scope")
            ]
            assert "config={'callbacks': [...]}" in missed[0].fix
            callscope_runs.assert_saw_all(tracker, operation="chat")  # every model run: yes
            with pytest.raises(AssertionError) as failed:
                callscope_runs.assert_saw_all(tracker)
            message = str(failed.value)
            assert "saw 1 of 4 runs; it missed:" in message
            assert "RunnableSequence (scope; fix: pass it at run time" in message

        def test_runtime_handler_sees_everything(callscope_runs):
            tracker = CostTracker()
            build().invoke({"number": "2"}, config={"callbacks": [tracker]})
            callscope_runs.assert_saw_all(tracker)
            assert len(callscope_runs.runs) == 4
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_failing_assertion_says_why_and_the_tree_is_in_the_report(pytester: pytest.Pytester):
    _write(
        pytester,
        """
        def test_cost_tracker_sees_every_run(callscope_runs):
            tracker = CostTracker()
            build(callbacks=[tracker]).invoke({"number": "2"})
            callscope_runs.assert_saw_all(tracker)
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--callscope-tree")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"E +callscope\.testing\.CallbackCoverageError: CostTracker \(id 0x[0-9a-f]+\) saw 1 of 4 runs; it missed:",
            r"E +RunnableSequence \(scope; fix: pass it at run time, config=\{'callbacks': \[\.\.\.\]\}, to see the whole chain\)",
            r".*callscope trace tree.*",
            r"RunnableSequence .* scope",
            r".*chat .* local",
        ]
    )
    assert "def assert_saw_all" not in result.stdout.str()  # the failure points at the test's own line
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert "callscope trace tree" not in without.stdout.str()


def test_two_instances_of_one_class_are_told_apart(pytester: pytest.Pytester):
    _write(
        pytester,
        """
        def test_each_instance(callscope_runs):
            constructor, runtime = CostTracker(), CostTracker()
            build(callbacks=[constructor]).invoke({"number": "2"}, config={"callbacks": [runtime]})
            callscope_runs.assert_saw_all(runtime)
            assert [r.name for r in callscope_runs.seen_by(constructor)] == ["chat"]
            assert {r.name for r in callscope_runs.seen_by("CostTracker")} | {r.name for r in callscope_runs.seen_by("CostTracker#2")} >= {"chat"}
            assert callscope_runs.seen_by(CostTracker()) == []  # never used: no runs either way
            with pytest.raises(AssertionError, match="saw none of the test's 4 runs"):
                callscope_runs.assert_saw_all(CostTracker())
        """,
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_streams_async_and_langgraph_and_nothing_left_behind(pytester: pytest.Pytester):
    _write(
        pytester,
        """
        import asyncio
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph


        class State(TypedDict):
            text: str


        def test_stream_and_astream(callscope_runs):
            tracker = CostTracker()
            chain = build(callbacks=[tracker])
            assert "".join(chain.stream({"number": "1"})) == "ok"

            async def consume():
                return "".join([part async for part in chain.astream({"number": "2"})])

            assert asyncio.run(consume()) == "ok"
            assert [r.name for r in callscope_runs.seen_by(tracker)] == ["chat", "chat"]


        def test_langgraph_nodes(callscope_runs):
            tracker = CostTracker()
            model = build()
            graph = StateGraph(State)
            graph.add_node("ask", lambda s: {"text": model.invoke({"number": s["text"]})})
            graph.add_edge(START, "ask")
            graph.add_edge("ask", END)
            graph.compile().invoke({"text": "3"}, config={"callbacks": [tracker]})
            callscope_runs.assert_saw_all(tracker)
            assert {"LangGraph", "ask", "chat"} <= {r.name for r in callscope_runs.runs}


        def test_no_instrumentation_is_left_behind():
            from callscope._bridge.instrumentor import CallscopeInstrumentor

            assert not CallscopeInstrumentor().is_instrumented_by_opentelemetry
        """,
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly").assert_outcomes(passed=3)


def test_with_xdist_workers(pytester: pytest.Pytester):
    pytest.importorskip("xdist", reason="install pytest-xdist (the test extra has it) to run the fixture under xdist")
    _write(
        pytester,
        """
        @pytest.mark.parametrize("n", range(4))
        def test_each(callscope_runs, n):
            tracker = CostTracker()
            build().invoke({"number": str(n)}, config={"callbacks": [tracker]})
            callscope_runs.assert_saw_all(tracker)
            assert len(callscope_runs.runs) == 4

        def test_fails_with_tree(callscope_runs):
            tracker = CostTracker()
            build(callbacks=[tracker]).invoke({"number": "9"})
            callscope_runs.assert_saw_all(tracker)
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--callscope-tree")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*callscope trace tree*"])


def test_the_plugin_is_inert_unless_used(pytester: pytest.Pytester):
    """Loaded by every pytest run where callscope is installed: it may import callscope's own
    light modules, nothing else (no LangChain, no OpenTelemetry), and instrument nothing."""
    pytester.makepyfile(
        """
        def test_plain():
            assert True

        def test_nothing_instrumented():
            import callscope._bridge.instrumentor as instrumentor
            assert not instrumentor.CallscopeInstrumentor().is_instrumented_by_opentelemetry
        """
    )
    pytester.makeconftest(
        """
        import json, sys

        def pytest_collection_finish(session):
            with open("modules.json", "w") as out:
                json.dump(sorted(sys.modules), out)
        """
    )
    import json

    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    with_plugin = set(json.loads((pytester.path / "modules.json").read_text()))
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:callscope").assert_outcomes(passed=2)
    without = set(json.loads((pytester.path / "modules.json").read_text()))
    added = with_plugin - without
    assert "callscope.testing" in added
    assert {name for name in added if name.split(".")[0] != "callscope"} == set()
    assert not {"callscope._bridge.instrumentor", "langchain_core"} & added


def test_an_already_instrumented_process_is_told_what_to_do(pytester: pytest.Pytester):
    _write(
        pytester,
        """
        import callscope
        from opentelemetry.sdk.trace import TracerProvider

        def test_uses_fixture(request):
            callscope.instrument(TracerProvider())
            try:
                with pytest.raises(pytest.UsageError, match="already instrumented"):
                    request.getfixturevalue("callscope_runs")
            finally:
                callscope.uninstrument()
        """,
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_readme_section_runs_as_written(pytester: pytest.Pytester):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Test your callbacks: `callscope.testing`") :]
    code = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python\n"))]
    pytester.makepyfile(test_readme=code)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    broken = code.replace('config={"callbacks": [tracker]}', "")  # the runtime handler never passed
    broken = broken.replace("chain = ChatPromptTemplate.from_template(\"What is 1 + {number}?\") | FakeListChatModel(", "chain = ChatPromptTemplate.from_template(\"What is 1 + {number}?\") | FakeListChatModel(callbacks=[tracker], ")
    pytester.makepyfile(test_readme=broken)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r"E +callscope\.testing\.CallbackCoverageError: CostTracker \(id 0x[0-9a-f]+\) saw 1 of 3 runs; it missed:"])
