"""FastAPI's TestClient, imported without Starlette's httpx deprecation warning.

Starlette >= 1.x prefers httpx2 for its test client and warns once, on import, when only
httpx is installed (the dev extra pins httpx); either works for these tests, and pytest
turns warnings into errors.
"""

from __future__ import annotations

import warnings

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]
