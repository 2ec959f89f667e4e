"""RFC 9457 problem details: every error the API returns is `application/problem+json`,
including validation errors, unknown routes and unexpected failures (whose details are
logged, never sent)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.storage import InvalidKey, StoreError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        code: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.code = code
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    code: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:uarnvc:problem:{code}" if code else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(jsonable_encoder(extra))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def retry_later(
    status: int, detail: str, *, code: str, instance: str, seconds: int
) -> JSONResponse:
    """A 429/503 problem the client should retry after `seconds` (header and body)."""
    return problem_response(
        status,
        detail,
        code=code,
        instance=instance,
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
    )


RETRY_AFTER = 5

_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
# Declared on every operation (FastAPI(responses=...)), so the OpenAPI schema says what
# the API really answers: errors are problem+json (checked by schemathesis, tests/contract).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": HTTPStatus(code).phrase,
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
    }
    for code in (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503)
}


def unavailable(instance: str | None, detail: str) -> JSONResponse:
    """503 + Retry-After: a dependency is down, the request may succeed later."""
    return problem_response(
        503,
        detail,
        code="unavailable",
        instance=instance,
        headers={"Retry-After": str(RETRY_AFTER)},
        retry_after=RETRY_AFTER,
    )


def _is_broker_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError

    return isinstance(exc, OperationalError | ConnectionError | TimeoutError)


def _validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form")]
        out.append(
            {"field": ".".join(loc) or None, "message": e.get("msg", ""), "type": e.get("type")}
        )
    return out


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (several routes may share a path)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            code=exc.code,
            title=exc.title,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = None
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # Starlette names only the first matching route's
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            "the request is not valid",
            code="validation",
            instance=request.url.path,
            errors=_validation_errors(list(exc.errors())),
        )

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return problem_response(
            422,
            "invalid encode options",
            code="invalid-options",
            instance=request.url.path,
            errors=_validation_errors(list(exc.errors())),
        )

    @app.exception_handler(InvalidKey)
    async def _invalid_key(request: Request, exc: InvalidKey) -> JSONResponse:
        # A name built from the request that no store can hold: the request's fault
        # (the routes validate first; this is the net under them).
        log.info("refused an object name on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            404, "no such resource", code="not-found", instance=request.url.path
        )

    @app.exception_handler(StoreError)
    async def _store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return unavailable(request.url.path, "the object store is unavailable; retry later")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if _is_broker_error(exc):
            log.warning("broker unavailable on %s %s: %s", request.method, request.url.path, exc)
            return unavailable(request.url.path, "the task broker is unavailable; retry later")
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal error (logged)", instance=request.url.path)
