"""The semantic-conventions files under tests/data are the official registry's, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

VENDORED = Path(__file__).parent / "data" / "semconv" / "v1.41.1"
#: The research notes' copy of the registry, beside the repository on a development machine.
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "semconv" / "v1.41.1"


def test_the_vendored_registry_files_equal_the_source_registry() -> None:
    files = sorted(path.relative_to(VENDORED) for path in VENDORED.rglob("*") if path.is_file())
    assert {"LICENSE", "model/gen-ai/spans.yaml", "model/gen-ai/metrics.yaml"} <= {str(f) for f in files}
    if not SOURCE.is_dir():
        pytest.skip(f"no registry at {SOURCE} to compare the copy with (a clone without the research notes beside it)")
    for relative in files:
        assert (VENDORED / relative).read_bytes() == (SOURCE / relative).read_bytes(), relative
