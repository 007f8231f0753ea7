"""Credentials for API tests: settings with a test JWT secret, and tokens signed with it.

Tests authenticate for real, with the same verification as production: a token made here
passes through `TokenVerifier` exactly like one made by `cityops auth token`.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from cityops.api.security import AuthConfig, issue_token
from cityops.ingest.config import Settings

__all__ = ["TEST_SECRET", "bearer", "operator_headers", "token", "with_auth"]

# 48 random characters, generated once for the tests (never used anywhere else).
TEST_SECRET = "qV7mZ2rK9xT4bN8wL3cF6hJ1pD5sG0yA-uE7iO2kR9nM4vB"


def with_auth(settings: Settings, **overrides: object) -> Settings:
    """`settings` with the test secret and, unless overridden, no public rate limit (the
    tests' client address is not loopback, and a test may make many requests at once)."""
    values: dict[str, object] = {
        "auth_jwt_secret": SecretStr(TEST_SECRET),
        "api_rate_limit_per_s": 0.0,
    }
    values.update(overrides)
    return Settings(**{**settings.model_dump(), **values})


def token(
    settings: Settings,
    *roles: str,
    sub: str = "tester",
    organisation: str | None = None,
    truck: str | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> str:
    return issue_token(
        AuthConfig.from_settings(settings),
        sub,
        roles,
        ttl=ttl,
        organisation=organisation,
        truck_id=truck,
    )


def bearer(settings: Settings, *roles: str, **kwargs: object) -> dict[str, str]:
    """`Authorization` header with a token for `roles` (see `token` for the keywords)."""
    return {"Authorization": f"Bearer {token(settings, *roles, **kwargs)}"}  # type: ignore[arg-type]


def operator_headers(settings: Settings) -> dict[str, str]:
    """What the tests' default client sends: city staff (dispatcher and admin)."""
    return bearer(settings, "dispatcher", "admin", sub="operator")
