"""Bearer tokens: verifying JWTs into a `Principal`, and signing development tokens.

Two kinds of token are accepted, chosen by the token's `alg` header and never mixed:

* HS256, signed with `CITYOPS_AUTH_JWT_SECRET`: the standalone install (tokens made by
  `cityops auth token`).
* RS256/ES256 (`CITYOPS_AUTH_ALGORITHMS`), verified against the OIDC provider's JWKS
  (`CITYOPS_AUTH_JWKS_URL`) or a configured public key: a city's Keycloak or Active
  Directory. Roles, organisation and truck id are read from configurable claims, e.g.
  Keycloak's `realm_access.roles`.

Issuer, audience and expiry are always checked. Verification failures raise
`UnauthenticatedError` (401 with `WWW-Authenticate`); an unreachable JWKS endpoint raises
`AuthProviderUnavailableError` (503), since the caller is not at fault.

`install_security` sets an app up: authentication (tokens and API keys), the public rate
limit, the body size limit and CORS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import jwt
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from jwt import PyJWKClient

from cityops.api.auth import LOGIN_ROLES, Principal
from cityops.api.credentials import Authenticator
from cityops.api.errors import AuthProviderUnavailableError, UnauthenticatedError
from cityops.api.limits import BodySizeLimit, TokenBucketLimiter, parse_networks
from cityops.ingest.config import Settings

__all__ = ["AuthConfig", "TokenVerifier", "install_security", "issue_token"]

logger = logging.getLogger(__name__)

HS256: Final = "HS256"
_ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)
@dataclass(frozen=True)
class AuthConfig:
    """What token verification needs, taken from `Settings`."""

    secret: bytes | None
    jwks_url: str | None
    public_key: str | None
    algorithms: tuple[str, ...]
    issuer: str
    audience: str
    roles_claim: str
    role_prefix: str = ""
    organisation_claim: str = "organisation"
    truck_claim: str = "truck_id"
    leeway_s: float = 30.0
    max_lifetime_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        unknown = set(self.algorithms) - _ASYMMETRIC
        if unknown:
            raise ValueError(
                f"CITYOPS_AUTH_ALGORITHMS: {', '.join(sorted(unknown))} not accepted; "
                f"choose among {', '.join(sorted(_ASYMMETRIC))} (HS256 uses the secret)"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthConfig:
        secret = settings.auth_jwt_secret
        key = settings.auth_public_key
        if key and not key.lstrip().startswith("-----BEGIN"):
            path = Path(key)
            if not path.is_file():
                raise ValueError(f"CITYOPS_AUTH_PUBLIC_KEY: neither a PEM key nor a file: {key}")
            key = path.read_text(encoding="utf-8")
        return cls(
            secret=secret.get_secret_value().encode() if secret is not None else None,
            jwks_url=settings.auth_jwks_url,
            public_key=key or None,
            algorithms=tuple(a.strip() for a in settings.auth_algorithms.split(",") if a.strip()),
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            roles_claim=settings.auth_roles_claim,
            role_prefix=settings.auth_role_prefix,
            organisation_claim=settings.auth_organisation_claim,
            max_lifetime_s=settings.auth_max_token_lifetime_s,
            truck_claim=settings.auth_truck_claim,
            leeway_s=settings.auth_leeway_s,
        )

    @property
    def accepts_tokens(self) -> bool:
        return bool(self.secret or self.jwks_url or self.public_key)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted claim path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _put(claims: dict[str, Any], path: str, value: object) -> None:
    """Set the claim at a dotted path (`a.b` -> `{"a": {"b": value}}`), keeping siblings."""
    node = claims
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def roles_of(raw: object, prefix: str = "") -> frozenset[str]:
    """The cityops roles in a roles claim: a list or a space-separated string; names are
    stripped of `prefix` and those cityops does not know are ignored."""
    if isinstance(raw, str):
        names: Iterable[object] = raw.split()
    elif isinstance(raw, list | tuple):
        names = raw
    else:
        return frozenset()
    out = set()
    for name in names:
        if not isinstance(name, str):
            continue
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name.removeprefix(prefix)
        if name in LOGIN_ROLES:
            out.add(name)
    return frozenset(out)


class TokenVerifier:
    """Verifies bearer tokens against the configured secret, JWKS or public key."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._jwks = (
            PyJWKClient(config.jwks_url, cache_keys=True, lifespan=600, timeout=5)
            if config.jwks_url
            else None
        )
        self._public: Any = None
        if config.public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                self._public = load_pem_public_key(config.public_key.encode())
            except ValueError as exc:
                raise ValueError(f"CITYOPS_AUTH_PUBLIC_KEY is not a PEM public key: {exc}") from exc

    def verify(self, token: str) -> Principal:
        """The principal the token stands for; raises `UnauthenticatedError` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthenticatedError("malformed bearer token", invalid=True) from None
        alg = header.get("alg")
        key = self._key(token, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired", invalid=True) from None
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError("token signature does not verify", invalid=True) from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError(
                f"token is not for this API (audience must be {self.config.audience!r})",
                invalid=True,
            ) from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError(
                f"token from an unknown issuer (expected {self.config.issuer!r})", invalid=True
            ) from None
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"invalid token: {exc}", invalid=True) from None
        # A token that is valid for years is a leaked password: refuse one whose expiry is
        # further away than the longest lifetime this API issues or accepts.
        remaining = float(claims["exp"]) - time.time()
        if remaining > self.config.max_lifetime_s + self.config.leeway_s:
            raise UnauthenticatedError(
                f"token expires too far ahead (at most {self.config.max_lifetime_s:.0f} s "
                "from now are accepted; CITYOPS_AUTH_MAX_TOKEN_LIFETIME_S)",
                invalid=True,
            )
        return self.principal(claims)

    def _key(self, token: str, alg: object) -> Any:
        if alg == HS256:
            if self.config.secret is None:
                raise UnauthenticatedError(
                    "HS256 tokens are not accepted here (no CITYOPS_AUTH_JWT_SECRET)", invalid=True
                )
            return self.config.secret
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise UnauthenticatedError(f"token algorithm {alg!r} not accepted", invalid=True)
        if self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError as exc:
                logger.warning("JWKS %s unreachable: %s", self.config.jwks_url, exc)
                raise AuthProviderUnavailableError(
                    "the identity provider's keys cannot be fetched; try again"
                ) from None
            except jwt.PyJWTError as exc:
                raise UnauthenticatedError(f"no key for this token: {exc}", invalid=True) from None
        if self._public is not None:
            return self._public
        raise UnauthenticatedError(
            f"{alg} tokens are not accepted here (no JWKS URL or public key)", invalid=True
        )

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        c = self.config
        organisation = _claim(claims, c.organisation_claim)
        truck = _claim(claims, c.truck_claim)
        return Principal(
            subject=str(claims["sub"]),
            roles=roles_of(_claim(claims, c.roles_claim), c.role_prefix),
            truck_id=truck if isinstance(truck, str) and truck else None,
            organisation=organisation if isinstance(organisation, str) and organisation else None,
        )


def issue_token(
    config: AuthConfig,
    subject: str,
    roles: Sequence[str],
    *,
    ttl: timedelta = timedelta(hours=1),
    organisation: str | None = None,
    truck_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """An HS256 token signed with the configured secret (development and the standalone
    install); claims are placed where `config` reads them."""
    if config.secret is None:
        raise ValueError("no CITYOPS_AUTH_JWT_SECRET: set one to sign tokens")
    unknown = set(roles) - set(LOGIN_ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be among {', '.join(LOGIN_ROLES)}, got {list(roles)}")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    if ttl.total_seconds() > config.max_lifetime_s:
        raise ValueError(
            f"ttl is longer than the {config.max_lifetime_s:.0f} s this API accepts "
            "(CITYOPS_AUTH_MAX_TOKEN_LIFETIME_S)"
        )
    if "truck" in roles and not truck_id:
        raise ValueError("a truck token must name its truck (--truck)")
    if "roadworks_editor" in roles and not organisation:
        raise ValueError("a roadworks_editor token must name its organisation (--organisation)")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
    }
    _put(claims, config.roles_claim, [config.role_prefix + r for r in roles])
    if organisation:
        _put(claims, config.organisation_claim, organisation)
    if truck_id:
        _put(claims, config.truck_claim, truck_id)
    return jwt.encode(claims, config.secret, algorithm=HS256)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Authentication, the public rate limit, the body size limit and CORS.

    Raises ValueError (refusing to start) for an unusable auth configuration; weak JWT
    secrets are already refused when the settings are read.
    """
    config = AuthConfig.from_settings(settings)
    app.state.authenticator = Authenticator(TokenVerifier(config))
    app.state.stream_recheck_s = settings.api_stream_recheck_s
    if not config.accepts_tokens:
        logger.warning(
            "no CITYOPS_AUTH_JWT_SECRET, CITYOPS_AUTH_JWKS_URL or CITYOPS_AUTH_PUBLIC_KEY: "
            "bearer tokens are refused, only API keys authenticate"
        )
    app.state.rate_limiter = TokenBucketLimiter(
        settings.api_rate_limit_per_s,
        settings.api_rate_limit_burst,
        parse_networks(settings.api_rate_limit_exempt),
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # credentials travel in headers, never cookies
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Last-Event-ID",
            ],
            expose_headers=["ETag", "Location", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
