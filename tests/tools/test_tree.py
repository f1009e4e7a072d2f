"""The trace tree, drawn from spans of real LangChain runs traced by callscope."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from callscope._bridge.trace_file import to_otlp_json
from callscope._tools.otlp_json import SpanRecord, parse_document
from callscope._tools.tree import (
    HANDLERS_INHERITED,
    HANDLERS_LOCAL,
    Layout,
    _depth_first,
    build_traces,
    failure_lines,
    format_duration,
    handler_cell,
    outcome_of,
    render_legend,
    render_trace,
    select_rows,
)

# Colour SGR parameters: 30-37/90-97 foreground, 38 extended; bold (1) and dim (2) are not colour.
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colour_codes(text: str) -> list[str]:
    codes = []
    for params in _SGR.findall(text):
        for param in params.split(";"):
            if param and (30 <= int(param) <= 38 or 90 <= int(param) <= 97):
                codes.append(param)
    return codes


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs = 0

    def on_chain_start(self, *args, **kwargs) -> None:
        self.runs += 1


def _records(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    # Through the same OTLP/JSON encoding the file and Jaeger use, so the tree sees what they see.
    return parse_document(to_otlp_json(exporter.get_finished_spans())).spans


def _with_handlers(records: list[SpanRecord], handlers: dict[str, tuple[list[str], list[str]]]) -> list[SpanRecord]:
    """Set the handler attributes by span name, replacing whatever scoping wrote, so the
    renderer is tested on known labels."""
    out = []
    for record in records:
        attributes = {k: v for k, v in record.attributes.items() if not k.startswith("callscope.handlers.")}
        local, inherited = handlers.get(record.name, ([], ["Runtime"]))
        if local:
            attributes[HANDLERS_LOCAL] = local
        if inherited:
            attributes[HANDLERS_INHERITED] = inherited
        out.append(dataclasses.replace(record, attributes=attributes))
    return out


@pytest.fixture
def chain_records(span_exporter: InMemorySpanExporter, instrumented) -> list[SpanRecord]:
    model = FakeListChatModel(responses=["fine"], callbacks=[Recorder()])
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | model | RunnableLambda(lambda m: m.content, name="extract")
    chain.invoke({"q": "a"}, config={"callbacks": [Recorder()], "run_name": "first"})
    with pytest.raises(ZeroDivisionError):
        (chain | RunnableLambda(lambda _: 1 / 0, name="divide")).invoke({"q": "b"}, config={"run_name": "second"})
    return _records(span_exporter)


def test_traces_are_grouped_ordered_and_linked(chain_records: list[SpanRecord]) -> None:
    views = build_traces(chain_records)
    assert [v.roots[0].span.name for v in views] == ["first", "second"]
    first = views[0]
    assert first.span_count == 4 and len(first.roots) == 1
    children = [node.span.name for node in first.roots[0].children]
    assert children[0] == "ChatPromptTemplate" and children[-1] == "extract"
    starts = [node.span.start_ns for node in first.roots[0].children]
    assert starts == sorted(starts)
    assert [node.span.name for node, _ in first.walk()][0] == "first"


def test_handler_columns_are_the_union_in_order_of_first_appearance(chain_records: list[SpanRecord]) -> None:
    records = _with_handlers(chain_records, {"first": ([], ["Runtime"]), "chat": (["ModelLogger"], ["Runtime"])})
    first = build_traces(records)[0]
    assert first.handlers == ["Runtime", "ModelLogger"]
    cells = {node.span.name: [handler_cell(node.span, label) for label in first.handlers] for node, _ in first.walk()}
    chat_name = next(name for name in cells if name not in ("first", "ChatPromptTemplate", "extract"))
    assert cells[chat_name] == ["inherited", "local"]
    assert cells["first"] == ["inherited", "missed"]
    assert cells["extract"] == ["inherited", "missed"]


def test_a_callscope_span_without_handler_attributes_missed_them_all() -> None:
    span = SpanRecord("a" * 32, "b" * 16, None, "RunnableLambda", 0, 1, scope_name="callscope")
    assert handler_cell(span, "Runtime") == "missed"
    foreign = dataclasses.replace(span, scope_name="opentelemetry.instrumentation.httpx")
    assert handler_cell(foreign, "Runtime") == "·"


def test_plain_text_off_a_terminal(chain_records: list[SpanRecord]) -> None:
    records = _with_handlers(chain_records, {"chat": (["ModelLogger"], ["Runtime"])})
    out = io.StringIO()
    console = Console(file=out, width=200, no_color=None)
    for view in build_traces(records):
        render_trace(view, console)
    render_legend(console)
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    first_title = next(line for line in lines if line.startswith("trace "))
    assert re.fullmatch(r"trace [0-9a-f]{32}  unknown_service\S* · 4 spans · [0-9.]+ m?s", first_title.strip())
    header = next(line for line in lines if line.lstrip().startswith("span"))
    assert header.split() == ["span", "duration", "status", "Runtime", "ModelLogger"]
    chat_row = next(line for line in lines if "─ chat" in line)
    assert chat_row.split()[-2:] == ["inherited", "local"]
    assert any(line.startswith("└─ extract") for line in lines)
    divide_at = next(i for i, line in enumerate(lines) if "divide" in line)
    assert lines[divide_at].split()[-3:] == ["error", "inherited", "scope"]
    # The message has its own line under the span, indented past the tree's guides.
    assert lines[divide_at + 1] == "     ZeroDivisionError: division by zero"
    assert "scope: missed: others' constructor" in text
    assert next(line for line in lines if line.startswith("└─ extract")).split()[-2:] == ["inherited", "scope"]


def test_colour_on_a_terminal_and_none_under_no_color(
    chain_records: list[SpanRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _with_handlers(chain_records, {"chat": (["ModelLogger"], ["Runtime"])})
    view = build_traces(records)[1]

    def draw() -> str:
        out = io.StringIO()
        render_trace(view, Console(file=out, width=200, force_terminal=True, color_system="standard", no_color=None))
        return out.getvalue()

    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = draw()
    assert _colour_codes(coloured), "expected colour on a terminal"
    monkeypatch.setenv("NO_COLOR", "1")
    plain = draw()
    assert "\x1b[" not in plain  # no colour, and no bold or dim either
    assert plain == re.sub(r"\x1b\[[0-9;]*m", "", coloured)


def test_orphans_and_cycles_are_drawn_not_lost() -> None:
    t = "c" * 32
    spans = [
        SpanRecord(t, "0000000000000001", "00000000000000ff", "orphan", 10, 20),
        SpanRecord(t, "0000000000000002", "0000000000000003", "loop-a", 30, 40),
        SpanRecord(t, "0000000000000003", "0000000000000002", "loop-b", 31, 39),
    ]
    [view] = build_traces(spans)
    assert sorted(node.span.name for node, _ in view.walk()) == ["loop-a", "loop-b", "orphan"]
    out = io.StringIO()
    render_trace(view, Console(file=out, width=200))
    assert "orphan  (parent 00000000000000ff not in data)" in out.getvalue()


def test_ascii_guides_when_the_console_cannot_encode_box_drawing(chain_records: list[SpanRecord]) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    console = Console(file=out, width=200)
    render_trace(build_traces(chain_records)[0], console)
    out.flush()
    text = out.buffer.getvalue().decode("ascii")
    assert "`- extract" in text


@pytest.mark.parametrize(
    ("ns", "text"), [(420_000, "0.42 ms"), (12_345_678, "12.3 ms"), (1_250_000_000, "1.25 s"), (0, "0.00 ms")]
)
def test_format_duration(ns: int, text: str) -> None:
    assert format_duration(ns) == text


class LoggingHandler(BaseCallbackHandler):
    """The README's seed example handler: it only needs to exist."""


def _draw(view, width: int, **options) -> tuple[Layout | None, str]:
    out = io.StringIO()
    layout = render_trace(view, Console(file=out, width=width), **options)
    return layout, out.getvalue()


def test_the_root_runs_missed_summary_is_printed_under_the_trace(span_exporter, instrumented) -> None:
    model = FakeListChatModel(responses=["3"], callbacks=[LoggingHandler()])
    (ChatPromptTemplate.from_template("What is 1 + {number}?") | model).invoke({"number": "2"})
    [view] = build_traces(_records(span_exporter))
    _, text = _draw(view, 160)
    expected = (
        "missed: LoggingHandler saw 1 of 3 runs; scope: missed RunnableSequence, ChatPromptTemplate (a constructor"
        " callback of chat; fix: pass it at run time, config={'callbacks': [...]}, to see the whole chain)"
    )
    assert " ".join(text[text.index("missed: ") :].split()) == expected
    _, narrow = _draw(view, 40)
    summary = narrow[narrow.index("missed: ") :]
    assert all(len(line) <= 40 for line in summary.splitlines())
    assert " ".join(summary.split()) == expected


def _two_chains_in_one_request(span_exporter, user_tracer, first: str, second: str, width: int) -> str:
    """The tree of one trace: a request span around two runs of a chain with a constructor handler."""
    model = FakeListChatModel(responses=["3", "4"], callbacks=[LoggingHandler()])
    chain = ChatPromptTemplate.from_template("What is 1 + {number}?") | model
    with user_tracer.start_as_current_span("request"):
        chain.invoke({"number": "2"}, config={"run_name": first})
        chain.invoke({"number": "3"}, config={"run_name": second})
    [view] = build_traces(_records(span_exporter))
    return _draw(view, width)[1]


def test_each_langchain_root_under_an_app_span_has_its_summary(span_exporter, instrumented, user_tracer) -> None:
    text = _two_chains_in_one_request(span_exporter, user_tracer, "first", "second", 160)
    summaries = [line for line in text.splitlines() if line.startswith("missed (")]
    assert [line.split(":")[0] for line in summaries] == ["missed (first)", "missed (second)"]
    assert all("saw 1 of 3 runs" in line for line in summaries)


def test_roots_with_the_same_summary_share_one_line(span_exporter, instrumented, user_tracer) -> None:
    text = _two_chains_in_one_request(span_exporter, user_tracer, "answer", "answer", 200)
    summaries = [line for line in text.splitlines() if line.startswith(("missed", "failed"))]
    assert len(summaries) == 1, text
    assert summaries[0].startswith("missed (answer ×2): LoggingHandler saw 1 of 3 runs; scope: missed answer,")


def test_a_handler_that_missed_nothing_but_failed_is_headed_failed(span_exporter, instrumented) -> None:
    import logging

    failing, missing = FailsOnLLMEnd(), LoggingHandler()
    model = FakeListChatModel(responses=["3"], callbacks=[missing])
    logging.getLogger("langchain_core.callbacks.manager").disabled = True
    try:
        (ChatPromptTemplate.from_template("What is 1 + {number}?") | model).invoke({"number": "2"}, config={"callbacks": [failing]})
    finally:
        logging.getLogger("langchain_core.callbacks.manager").disabled = False
    [view] = build_traces(_records(span_exporter))
    _, text = _draw(view, 300)
    lines = text.splitlines()
    assert next(line for line in lines if "FailsOnLLMEnd saw" in line).startswith(
        "failed: FailsOnLLMEnd saw 3 of 3 runs; failed: raised in on_llm_end of chat"
    )
    assert next(line for line in lines if "LoggingHandler saw" in line).startswith("missed: LoggingHandler saw 1 of 3 runs")


def test_a_model_span_shows_its_model_and_token_counts(span_exporter, instrumented) -> None:
    reply = AIMessage(
        content="3",
        usage_metadata={"input_tokens": 1234, "output_tokens": 56, "total_tokens": 1290},
        response_metadata={"model_name": "fake-4o-2026-01-01"},
    )
    (ChatPromptTemplate.from_template("{q}") | GenericFakeChatModel(messages=iter([reply]))).invoke({"q": "1 + 2?"})
    [view] = build_traces(_records(span_exporter))
    layout, text = _draw(view, 160)
    assert layout is Layout.FULL
    model_row = next(line for line in text.splitlines() if "└─ chat" in line)
    assert "fake-4o-2026-01-01 · 1234→56 tokens" in model_row
    # Details are the first thing a narrow terminal gives up.
    _, narrow = _draw(view, 40)
    assert "tokens" not in narrow and "chat" in narrow


def _failing_tree() -> list[SpanRecord]:
    t = "d" * 32
    handlers = {HANDLERS_INHERITED: ["RuntimeLogger"]}
    return [
        SpanRecord(t, "0000000000000001", None, "agent", 0, 100, "ERROR", "ValueError: weather service down", handlers),
        SpanRecord(t, "0000000000000002", "0000000000000001", "plan", 1, 10, attributes=handlers),
        SpanRecord(t, "0000000000000003", "0000000000000002", "prompt", 2, 3, attributes=handlers),
        SpanRecord(t, "0000000000000004", "0000000000000001", "weather", 20, 90, "ERROR", "ValueError: weather service down", handlers),
        SpanRecord(t, "0000000000000005", "0000000000000004", "http GET", 21, 80, "ERROR", "timeout"),
        SpanRecord(t, "0000000000000006", "0000000000000001", "answer", 91, 99, attributes=handlers),
    ]


def test_errors_only_keeps_the_failing_spans_and_their_ancestors() -> None:
    [view] = build_traces(_failing_tree())
    rows = select_rows(view, errors_only=True)
    assert [row.node.span.name for row in rows] == ["agent", "weather", "http GET"]
    assert [row.lasts for row in rows] == [(True,), (True, True), (True, True, True)]
    healthy = [span for span in _failing_tree() if span.status_code != "ERROR" and span.parent_id]
    assert select_rows(build_traces(healthy)[0], errors_only=True) == []


def test_depth_stops_the_tree_and_counts_what_it_left_out() -> None:
    [view] = build_traces(_failing_tree())
    assert [(row.node.span.name, row.hidden) for row in select_rows(view, max_depth=1)] == [("agent", 5)]
    rows = select_rows(view, max_depth=2)
    assert [(row.node.span.name, row.hidden) for row in rows] == [("agent", 0), ("plan", 1), ("weather", 1), ("answer", 0)]
    _, text = _draw(view, 160, max_depth=2)
    assert "├─ plan (+1 below)" in text and "prompt" not in text


@pytest.mark.parametrize("width", [40, 60, 80, 160])
def test_every_width_shows_each_name_failure_and_scope(width: int) -> None:
    records = _failing_tree()
    records[1] = dataclasses.replace(
        records[1], name="a_very_long_runnable_name_that_cannot_fit_in_forty_columns_at_all"
    )
    records[2] = dataclasses.replace(records[2], attributes={HANDLERS_LOCAL: ["PromptLogger"], **records[2].attributes})
    [view] = build_traces(records)
    layout, text = _draw(view, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    # Each line's text without the tree guides and the columns after the name.
    joined = "".join(re.sub(r"\s{2,}.*$", "", line.lstrip(" │├└─✗")) for line in lines)
    for span in records:
        assert span.name in joined, span.name
    prompt_row = next(line for line in lines if "prompt" in line)
    weather_at = next(i for i, line in enumerate(lines) if "weather" in line and "ValueError" not in line)
    assert lines[weather_at + 1].strip(" │") == "ValueError: weather service down"
    if layout is Layout.FULL:
        assert width == 160
        assert prompt_row.split()[-3:] == ["unset", "inherited", "local"]
        assert lines[weather_at].split()[-3:] == ["error", "inherited", "scope"]
    else:
        assert "handlers: 1 RuntimeLogger 2 PromptLogger" in " ".join(text.split())
        assert prompt_row.split()[-2:] == ["I", "L"]
        assert "✗ weather" in lines[weather_at] and lines[weather_at].split()[-2:] == ["I", "S"]
        assert "✗ http GET" in text
    if width == 40:
        assert layout is Layout.NARROW and "duration" not in text  # the duration column went last


def test_legend_explains_the_layouts_used() -> None:
    out = io.StringIO()
    render_legend(Console(file=out, width=200), [Layout.COMPACT])
    legend = out.getvalue()
    assert "local (L): " in legend and "scope (S): " in legend and "✗ before a name: the run failed" in legend
    assert "local: the component's" not in legend


def _without_durations(text: str) -> list[str]:
    return [re.sub(r"\s+[0-9.]+ m?s\s+", "  <duration>  ", line).rstrip() for line in text.strip().splitlines()]


def test_the_readme_seed_example_is_what_the_tree_prints(span_exporter, instrumented) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    shown = readme[readme.index("`callscope tree` shows which runs the handler saw") :]
    expected = shown[shown.index("```\n") + 4 : shown.index("\n```", shown.index("```\n") + 4)]
    model = FakeListChatModel(responses=["3"], callbacks=[LoggingHandler()])
    (ChatPromptTemplate.from_template("What is 1 + {number}?") | model).invoke({"number": "2"})
    [view] = build_traces(_records(span_exporter))
    _, text = _draw(view, 100)
    assert _without_durations(text)[1:] == _without_durations(expected)  # the title line is not in the README


# --- why a handler missed a run, and failures under their span ------------------------------


class Audit(BaseCallbackHandler):
    pass


class ModelsOnly(BaseCallbackHandler):
    ignore_chain = True


class FailsOnLLMEnd(BaseCallbackHandler):
    def on_llm_end(self, *args, **kwargs) -> None:
        raise RuntimeError("store down")


def test_cells_say_why_each_handler_missed_each_run(span_exporter, instrumented):
    inner = (ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["in"])).with_config(callbacks=[Audit()], run_name="inner")
    model = FakeListChatModel(responses=["a"], callbacks=[FailsOnLLMEnd()])
    chain = (
        ChatPromptTemplate.from_template("{q}")
        | model
        | RunnableLambda(lambda m: m.content, name="unwrap")
        | RunnableLambda(lambda v: inner.invoke({"q": v}).content, name="nest")
    )
    chain.invoke({"q": "x"}, {"callbacks": [Recorder(), ModelsOnly()]})
    (view,) = build_traces(_records(span_exporter))
    cells = {
        node.span.name + (f"<{len(lasts)}" if node.span.name in ("chat", "ChatPromptTemplate") else ""): {
            label: handler_cell(node.span, label, view) for label in view.handlers
        }
        for node, lasts in view.walk()
    }
    assert cells["RunnableSequence"] == {"Recorder": "inherited", "ModelsOnly": "filtered", "FailsOnLLMEnd": "scope", "Audit": "subtree"}
    assert cells["chat<2"] == {"Recorder": "inherited", "ModelsOnly": "inherited", "FailsOnLLMEnd": "failed", "Audit": "subtree"}
    assert cells["inner"] == {"Recorder": "dropped", "ModelsOnly": "dropped", "FailsOnLLMEnd": "scope", "Audit": "inherited"}
    assert cells["chat<4"]["Recorder"] == "dropped"
    # The failure was recorded on the parent (the model's span had ended first) and is drawn
    # under the model's span.
    out = io.StringIO()
    render_trace(view, Console(file=out, width=200, color_system=None))
    lines = out.getvalue().splitlines()
    chat_row = next(i for i, line in enumerate(lines) if line.startswith("├─ chat"))
    assert lines[chat_row + 1].split()[:4] == ["│", "✗", "FailsOnLLMEnd.on_llm_end", "raised"]
    assert "RuntimeError: store down" in lines[chat_row + 1]


def test_legend_gives_every_cell_its_mark_and_meaning():
    out = io.StringIO()
    render_legend(Console(file=out, width=400, color_system=None), [Layout.FULL, Layout.COMPACT])
    text = out.getvalue()
    for cell, mark in [("local", "L"), ("inherited", "I"), ("failed", "X"), ("filtered", "F"), ("dropped", "D"), ("subtree", "T"), ("scope", "S")]:
        assert f"{cell} ({mark}): " in text


def test_a_failure_whose_run_name_is_ambiguous_stays_on_the_parent_and_names_the_run(span_exporter, instrumented):
    from langchain_core.runnables import RunnableParallel

    model = FakeListChatModel(responses=["a"], callbacks=[FailsOnLLMEnd()])
    RunnableParallel(first=model, second=model).invoke("q")
    (view,) = build_traces(_records(span_exporter))
    (parallel,) = [node for node, _ in view.walk() if node.span.name.startswith("RunnableParallel")]
    assert [line.split(" raised ")[0] for line in failure_lines(view, parallel.span)] == ["FailsOnLLMEnd.on_llm_end of chat"] * 2
    assert all(not failure_lines(view, child.span) for child in parallel.children)


# --- how runs ended, the conversation, handler failures under --errors-only ---------------------


def test_interrupted_resumed_cancelled_and_abandoned_runs_are_marked(span_exporter, instrumented) -> None:
    import asyncio
    import time
    from typing import TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    class State(TypedDict):
        answer: str

    graph = StateGraph(State)
    graph.add_node("ask_human", lambda s: {"answer": interrupt("approve?")})
    graph.add_edge(START, "ask_human")
    graph.add_edge("ask_human", END)
    app = graph.compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t-42"}}
    app.invoke({"answer": ""}, config=thread)
    app.invoke(Command(resume="yes"), config=thread)

    stream = (RunnableLambda(lambda x: x, name="source") | FakeListChatModel(responses=["a long answer"])).stream("q")
    next(stream)
    stream.close()

    async def cancelled() -> None:
        task = asyncio.ensure_future(RunnableLambda(lambda x: time.sleep(0.5), name="slow_step").ainvoke(1))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    views = build_traces(_records(span_exporter))
    words = {(node.span.name, outcome_of(node.span)) for view in views for node in _depth_first(view.roots) if outcome_of(node.span)}
    assert ("LangGraph", "interrupted") in words and ("LangGraph", "resumed") in words
    assert ("chat", "abandoned") in words
    assert ("slow_step", "cancelled") in words

    out = io.StringIO()
    console = Console(file=out, width=200)
    shown: set[str] = set()
    for view in views:
        render_trace(view, console, outcomes=shown)
    assert shown == {"interrupted", "resumed", "abandoned", "cancelled"}
    render_legend(console, [Layout.FULL], shown)
    text = out.getvalue()
    assert re.search(r"LangGraph +[0-9.]+ m?s +interrupted", text), text
    assert re.search(r"slow_step +[0-9.]+ m?s +cancelled", text), text
    assert "· conversation t-42" in text  # the thread, in the title of both of its traces
    assert text.count("conversation t-42") == 2
    for meaning in ("interrupted: LangGraph paused it at an interrupt", "resumed: a LangGraph Command(resume=…) continued it",
                    "cancelled: its task was cancelled", "abandoned: its stream's reader stopped early"):  # fmt: skip
        assert meaning in text

    narrow = io.StringIO()
    for view in views:
        render_trace(view, Console(file=narrow, width=26))
    assert "‖ LangGraph" in narrow.getvalue() and "⊘ slow_step" in narrow.getvalue()


def test_errors_only_keeps_a_trace_where_only_a_handler_failed(span_exporter, instrumented) -> None:
    import logging

    logging.getLogger("langchain_core.callbacks.manager").disabled = True
    try:
        (ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["ok"])).invoke({"q": "x"}, config={"callbacks": [FailsOnLLMEnd()]})
    finally:
        logging.getLogger("langchain_core.callbacks.manager").disabled = False
    [view] = build_traces(_records(span_exporter))
    assert all(node.span.status_code != "ERROR" for node in _depth_first(view.roots))
    _, text = _draw(view, 160, errors_only=True)
    assert "chat" in text and "✗ FailsOnLLMEnd.on_llm_end raised RuntimeError: store down" in text
    assert "ChatPromptTemplate" not in text  # only the run with the failure and its ancestors


@pytest.mark.parametrize(
    ("name", "room", "pieces"),
    [
        ("ChatPromptTemplate", 14, ["ChatPrompt", "Template"]),
        ("RunnableParallel<topic,facts,sources>", 24, ["RunnableParallel<topic,", "facts,sources>"]),
        ("fetch_documents_from_store", 12, ["fetch_", "documents_", "from_store"]),
        ("HTTPServerStep", 10, ["HTTPServer", "Step"]),
        ("abcdefghijklmnop", 6, ["abcdef", "ghijkl", "mnop"]),  # no word inside: cut at the edge
    ],
)
def test_long_names_break_where_their_words_do(name, room, pieces) -> None:
    from callscope._tools.tree import _chop

    assert _chop(name, room, room) == pieces


def test_the_narrowest_demo_tree_breaks_no_name_mid_word(tmp_path: Path) -> None:
    from callscope._tools.demo import run_demo

    output = tmp_path / "demo.jsonl"
    run_demo(output, on_file_written=lambda result: None)
    from callscope._tools.otlp_json import read_spans_file

    out = io.StringIO()
    for view in build_traces(read_spans_file(output).spans):
        render_trace(view, Console(file=out, width=40))
    text = out.getvalue()
    assert "ChatPrompt" in text
    assert not re.search(r"ChatPromptTemp\b|ChatPromptT\b|RunnableParallel<topic,fac\b", text), text
    for line in text.splitlines():
        assert len(line) <= 40
