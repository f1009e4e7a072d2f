"""The four ways a test runs a runnable: invoke, ainvoke, stream and astream."""

from __future__ import annotations

import asyncio
from typing import Any

MODES = ("invoke", "ainvoke", "stream", "astream")


def outputs(runnable: Any, mode: str, value: Any, **kwargs: Any) -> list[Any]:
    """``[output]`` for invoke and ainvoke; the chunks, as yielded, for stream and astream."""
    if mode == "invoke":
        return [runnable.invoke(value, **kwargs)]
    if mode == "ainvoke":
        return [asyncio.run(runnable.ainvoke(value, **kwargs))]
    if mode == "stream":
        return list(runnable.stream(value, **kwargs))
    if mode == "astream":

        async def collect() -> list[Any]:
            return [chunk async for chunk in runnable.astream(value, **kwargs)]

        return asyncio.run(collect())
    raise ValueError(mode)


def drive(runnable: Any, mode: str, value: Any, **kwargs: Any) -> Any:
    """Run ``runnable`` in ``mode`` and return one output: a stream's chunks are added up, as
    LangChain's own aggregation does."""
    results = outputs(runnable, mode, value, **kwargs)
    if mode in ("invoke", "ainvoke"):
        return results[0]
    assert results, "the stream yielded nothing"
    total = results[0]
    for chunk in results[1:]:
        total = total + chunk
    return total
