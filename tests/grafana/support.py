from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }
