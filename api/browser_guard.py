"""What keeps web pages the user visits away from the API: the Host check (DNS
rebinding) and the cross-site write check (CSRF).

- Host: a page on `attacker.example` whose name the attacker re-points at 127.0.0.1 talks
  to the local API as its own origin, and the browser lets it read the answers. Only the
  names in `UARNVC_ALLOWED_HOSTS` are served; unset, that is the loopback names when no
  API keys are configured, and any name with keys (a page holds no key, so the Host is
  not what protects a keyed service, and behind a proxy it may be any name). Probes
  (`/healthz`, `/readyz`) answer whatever the name: kubelets and load balancers use
  addresses.
- Cross-site writes: a page on any site can POST a form or a `fetch(..., {mode:
  "no-cors"})` to 127.0.0.1 without reading the answer. A request that is not GET, HEAD
  or OPTIONS is refused (403) when the browser says it comes from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`), or when its `Origin` is neither this
  server's own nor one of `UARNVC_CORS_ORIGINS`. `Sec-Fetch-Site: same-origin` / `none`
  (set by the browser, never by a page) and requests with neither header (curl, the
  Python client) pass.

Hand-rolled rather than Starlette's TrustedHostMiddleware: every refusal must be a
problem+json document, and the probes are exempt.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem_response

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/healthz", "/readyz"})


def host_name(host: str) -> str:
    """`Host` header -> lower-case name without port (`[::1]:8000` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host


def allowed_hosts(configured: list[str], keyed: bool) -> frozenset[str] | None:
    """The names to accept, or None for any."""
    if not configured:
        return None if keyed else frozenset(LOOPBACK_NAMES)
    if "*" in configured:
        return None
    return frozenset(host_name(h) for h in configured)


class BrowserGuardMiddleware:
    """Pure ASGI: it never buffers a streaming response."""

    def __init__(
        self, app: ASGIApp, hosts: frozenset[str] | None, origins: list[str] | tuple[str, ...]
    ) -> None:
        self.app, self.hosts = app, hosts
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name, value)
        host = headers.get(b"host", b"").decode("latin-1")
        if (
            self.hosts is not None
            and scope["path"] not in PROBES
            and host_name(host) not in self.hosts
        ):
            shown = host if len(host) <= 100 else host[:97] + "..."
            resp = problem_response(
                400,
                f"this server does not answer to the host name {shown!r}; allowed: "
                f"{', '.join(sorted(self.hosts))} (UARNVC_ALLOWED_HOSTS)",
                code="host-not-allowed",
                instance=scope["path"],
            )
            await resp(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS and self._cross_site(headers, host):
            resp = problem_response(
                403,
                "cross-site requests may not change anything here: this origin is not "
                "in UARNVC_CORS_ORIGINS",
                code="cross-site-request",
                instance=scope["path"],
            )
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _cross_site(self, headers: dict[bytes, bytes], host: str) -> bool:
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        raw_origin = headers.get(b"origin")
        origin = raw_origin.decode("latin-1").strip().rstrip("/").lower() if raw_origin else None
        if origin is not None and origin in self.origins:
            return False  # an origin the operator allowed (CORS)
        if site in ("same-origin", "none"):
            return False  # the browser's own word: this page, or typed by the user
        if site:
            return True  # cross-site, same-site (another port or subdomain), unknown
        if origin is None:
            return False  # not a browser (or one too old to send either header)
        # No Sec-Fetch-Site: the Origin must be this server itself.
        parts = urlsplit(origin)
        return origin == "null" or parts.netloc != host.strip().lower()


def install(app: FastAPI) -> None:
    s = app.state.settings
    app.add_middleware(
        BrowserGuardMiddleware,
        hosts=allowed_hosts(s.allowed_hosts, keyed=bool(s.api_keys)),
        origins=list(s.cors_origins),
    )
