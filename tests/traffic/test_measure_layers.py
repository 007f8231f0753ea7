"""The measures in three layers: `PhaseBin` (pure), `MeasureRow` (a `signal_measures` row)
and `MeasureOut` (the API's answer). Each declares its fields on purpose (the row adds
the controller, a real time and the flagged events; the answer a subset with Berlin time);
the copies between them go by field name, so these tests keep the names in step."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

from cityops.api.traffic import MeasureOut
from cityops.traffic.measures import PhaseBin
from cityops.traffic.repository import MeasureRow


def test_a_row_has_every_measure_with_its_type() -> None:
    row = {f.name: f.type for f in fields(MeasureRow)}
    for f in fields(PhaseBin):
        if f.name != "bin_start":  # a float in the pure code, a timestamptz when stored
            assert row.get(f.name) == f.type, f.name


def test_the_answer_copies_only_fields_the_row_has() -> None:
    row = {f.name for f in fields(MeasureRow)}
    own = {"bin_start_local"}
    assert set(MeasureOut.model_fields) - own <= row


def _row() -> MeasureRow:
    values: dict[str, object] = {}
    for i, f in enumerate(fields(MeasureRow)):
        if f.name == "controller_id":
            values[f.name] = "X1"
        elif f.name == "bin_start":
            values[f.name] = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)  # 01:45 -> 02:45 CET/CEST
        elif "int" in str(f.type) and "float" not in str(f.type):
            values[f.name] = i + 1
        else:
            values[f.name] = i + 0.5
    return MeasureRow(**values)  # type: ignore[arg-type]


def test_from_row_serves_each_field_as_stored() -> None:
    row = _row()
    out = MeasureOut.from_row(row)
    for name in set(MeasureOut.model_fields) - {"bin_start", "bin_start_local"}:
        assert getattr(out, name) == getattr(row, name), name
    assert out.bin_start == row.bin_start
    assert out.bin_start_local == "2026-03-29T01:45:00+01:00"
    assert row.phase_bin().pct_aog == row.pct_aog
