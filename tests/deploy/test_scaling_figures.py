"""docs/scaling.md sizes the platform from measured figures: each row of its table of
measured figures names a benchmark command of docs/performance.md, and every number in the
table is one that docs/performance.md reports (a figure that is re-measured there has to be
carried over, not kept from an older run)."""

from __future__ import annotations

import re

from tests.deploy.support import REPO

SCALING = REPO / "docs" / "scaling.md"
PERFORMANCE = REPO / "docs" / "performance.md"


def measured_rows() -> list[list[str]]:
    """The cells of the rows of "Measured per-process figures" (header left out)."""
    section = SCALING.read_text().split("\n## Measured per-process figures\n", 1)[1]
    table = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table[2:]]


def test_every_row_names_a_benchmark_of_performance_md() -> None:
    performance = PERFORMANCE.read_text()
    rows = measured_rows()
    assert len(rows) >= 8
    for component, _figure, source in rows:
        scripts = re.findall(r"bench/[a-z_/]+\.py|make bench-[a-z]+", source)
        assert scripts, f"{component}: no benchmark command"
        for script in scripts:
            assert script in performance, f"{component}: {script} is not in performance.md"
        sections = re.findall(r'\["([^"]+)"', source)
        assert sections, f"{component}: no section of performance.md named"
        for name in sections:
            first = name.split(" / ")[-1].split(" (")[0].rstrip(". ")
            assert first in performance, f"{component}: no section {name!r}"


def test_every_number_of_the_table_is_in_performance_md() -> None:
    performance = PERFORMANCE.read_text()
    missing = sorted(
        {
            n
            for _component, figure, _source in measured_rows()
            for n in re.findall(r"\d[\d,]*(?:\.\d+)?", figure)
            if n not in performance
        }
    )
    assert not missing, f"not in docs/performance.md: {missing}"
