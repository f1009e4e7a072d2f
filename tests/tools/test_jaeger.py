"""The Jaeger query client's own rules; its answers from a live Jaeger are tested in
tests/integration/test_jaeger.py, and through the CLI against recorded answers in test_cli.py."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from callscope._tools.jaeger import Jaeger, _rfc3339, _span_text, search_depth


def test_a_search_asks_for_more_traces_than_it_shows() -> None:
    assert [search_depth(n) for n in (1, 5, 6, 99, 100, 101, 1000, 5000)] == [50, 50, 60, 990, 1000, 1000, 1000, 5000]
    assert all(search_depth(n) >= n for n in range(1, 3000, 7))


def test_times_are_rfc3339_in_utc_as_go_parses_them() -> None:
    # Go's time.RFC3339Nano wants a zone ("Z" or an offset); a naive ISO time is refused.
    moment = datetime(2026, 11, 30, 13, 5, 7, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert _rfc3339(moment) == "2026-11-30T11:05:07.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", _rfc3339(datetime.now(timezone.utc)))


def test_windows_are_named_as_the_user_wrote_them() -> None:
    assert [_span_text(timedelta(seconds=s)) for s in (1, 90, 900, 7200, 86400 * 7)] == ["1s", "90s", "15m", "2h", "7d"]


@pytest.mark.parametrize("url", ["localhost:16686", "ftp://localhost", "http://", ""])
def test_only_http_urls_are_taken(url: str) -> None:
    with pytest.raises(ValueError):
        Jaeger(url)


def test_the_base_url_loses_its_trailing_slash() -> None:
    assert Jaeger("http://127.0.0.1:16686/").base_url == "http://127.0.0.1:16686"
