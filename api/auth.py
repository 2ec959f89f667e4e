"""Bearer API keys. A key maps to an opaque owner id; a job is visible only to its owner.

Keys are compared in constant time against every configured key (no early exit), and
never logged or stored: job records carry `owner_id(key)`, a salted hash.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from api.problems import Problem
from core.jobs import owner_id


def current_owner(request: Request) -> str:
    """FastAPI dependency: the caller's owner id, or 401 when keys are configured and the
    request has none or a wrong one. With no keys configured everyone is `local`."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return owner_id(None)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    challenge = {"WWW-Authenticate": 'Bearer realm="uarnvc"'}
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401, "send `Authorization: Bearer <api key>`", code="unauthorized", headers=challenge
        )
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token.encode(), key.encode())
    if not ok:
        raise Problem(401, "the API key is not valid", code="unauthorized", headers=challenge)
    return owner_id(token)
