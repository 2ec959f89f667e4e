"""Response headers every answer carries: no MIME sniffing, no framing, and the page's
Content-Security-Policy wherever the page or its files are served (`/` and `/web/...`).

The API's own answers get `frame-ancestors 'none'` only: a policy restricting scripts
would break the Swagger UI at `/docs`, which loads its assets from a CDN.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The page: everything from this origin, nothing from a CDN, never framed.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "frame-ancestors 'none'"
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/web/")


class SecurityHeadersMiddleware:
    """Pure ASGI: adds headers to `http.response.start`, never buffers a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (PAGE_CSP if is_page(scope["path"]) else API_CSP).encode()

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-security-policy", b"x-content-type-options")
                ]
                headers += [*COMMON, (b"content-security-policy", csp)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, _send)
