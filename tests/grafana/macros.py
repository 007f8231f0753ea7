"""Expand the Grafana PostgreSQL macros and template variables the way Grafana 11 does, so
panel SQL can run against the test database without a Grafana server."""

from __future__ import annotations

import re
from datetime import datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(interval: str) -> int:
    m = re.fullmatch(r"(\d+)([smhd])", interval)
    assert m, f"unsupported interval {interval!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "5m",
    variables: dict[str, list[str] | str] | None = None,
) -> str:
    """`sql` with $__timeFilter, $__timeGroupAlias, $__timeGroup, $__timeFrom(), $__timeTo(),
    $__interval(_ms) and $var / ${var} replaced; multi-value variables become 'a','b'."""
    frm = f"'{time_from.isoformat()}'::timestamptz"
    to = f"'{time_to.isoformat()}'::timestamptz"
    sec = interval_seconds(interval)

    def group(m: re.Match[str], alias: bool) -> str:
        col, arg = (s.strip() for s in m.group(1).split(",", 1))
        arg = arg.strip("'")
        step = sec if arg == "$__interval" else interval_seconds(arg)
        expr = f"floor(extract(epoch from {col})/{step})*{step}"
        return f'{expr} AS "time"' if alias else expr

    between = f" BETWEEN {frm} AND {to}"
    out = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: m.group(1) + between, sql)
    out = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: group(m, True), out)
    out = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: group(m, False), out)
    out = out.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    out = out.replace("$__interval_ms", str(sec * 1000)).replace("$__interval", f"'{interval}'")
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        values = [value] if isinstance(value, str) else value
        rendered = ",".join(quote(v) for v in values)
        if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
            rendered = value
        out = out.replace("${" + name + "}", rendered).replace("$" + name, rendered)
    assert "$" not in out.replace("$$", ""), f"unexpanded macro or variable in:\n{out}"
    return out
