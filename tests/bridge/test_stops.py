"""Runs stopped or steered without failing: LangGraph's control flow is told apart from failures."""

from __future__ import annotations

from callscope._bridge.stops import control_flow_attributes


def test_langgraph_control_flow_is_recognised_by_its_class_hierarchy():
    from langgraph.errors import GraphBubbleUp, GraphDrained, GraphInterrupt, GraphRecursionError, NodeTimeoutError, ParentCommand
    from langgraph.types import Command, Interrupt, Send

    assert control_flow_attributes(GraphInterrupt([Interrupt(value="secret question", id="i-1")])) == {
        "callscope.langgraph.control_flow": "GraphInterrupt",
        "callscope.langgraph.interrupted": True,
        "callscope.langgraph.interrupt.ids": ("i-1",),
    }
    handoff = ParentCommand(Command(graph=Command.PARENT, goto=[Send("billing", {"card": "4111"}), "audit"]))
    assert control_flow_attributes(handoff)["callscope.langgraph.goto"] == ("billing", "audit")
    assert control_flow_attributes(GraphDrained("sigterm"))["callscope.langgraph.drain_reason"] == "sigterm"

    class FutureSteering(GraphBubbleUp):  # one LangGraph may add later
        pass

    assert control_flow_attributes(FutureSteering()) == {"callscope.langgraph.control_flow": "FutureSteering"}
    for failure in (GraphRecursionError("limit"), NodeTimeoutError("n", 1.0, kind="run", run_timeout=1.0), ValueError("x")):
        assert control_flow_attributes(failure) is None
