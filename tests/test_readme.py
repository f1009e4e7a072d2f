"""What the README promises a new user, checked against the repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_one_build_time_for_the_go_tools() -> None:
    """The set-up section points at the one place that says how long the Go builds take."""
    assert len(re.findall(r"\d+–\d+ minutes", README)) == 1


def test_the_test_command_is_what_ci_runs_and_every_skip_says_why() -> None:
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
    assert f"    {command}\n" in README
    assert command in (ROOT / ".ci" / "run").read_text()
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-rs" in options["addopts"].split()


def test_no_test_reads_files_outside_the_repository() -> None:
    """A fresh clone has no ../shared: tests read their registry copy under tests/data."""
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name in ("test_vendored_semconv.py", "test_readme.py"):
            continue  # the one that compares the copy with the source when it is there, and this one
        assert '"shared" /' not in path.read_text(), path
