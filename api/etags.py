"""The API's optimistic concurrency: a record's version is its ETag (`"v3"`), sent back as
`If-Match` to change it. One parser for every route that takes `If-Match`."""

from __future__ import annotations

import re

from cityops.api.errors import InvalidParameterError

__all__ = ["etag", "if_match_version"]

# "v3" as sent, also without quotes or the v, or weak (W/"v3"): what clients send back
_ETAG_RE = re.compile(r'^\s*(?:W/)?"?v?(\d{1,9})"?\s*$')


def etag(version: int) -> str:
    return f'"v{version}"'


def if_match_version(if_match: str | None, what: str = "record") -> int | None:
    """The version an `If-Match` names; None when absent or `*`. A 422 naming the header
    when it is no ETag of ours."""
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG_RE.match(if_match)
    if m is None:
        raise InvalidParameterError(
            "If-Match", f'expected the ETag of the {what}, such as "v3", got {if_match[:40]!r}',
            location="header")
    return int(m[1])
