"""Finding 9: hardening.

`/web/index.html` served the page without the CSP or `frame-ancestors` (a site could
frame it and click for the user); no response had `X-Content-Type-Options: nosniff`;
`/docs` and `/openapi.json` were public with no way to turn them off. Before the fix
this test failed on the first assertion.
"""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import ALICE, Api, Servers, assert_problem, new_job

PAGES = ["/", "/web/index.html", "/web/app.js", "/web/style.css"]


def test_page_has_csp_wherever_it_is_served(keyed: Api) -> None:
    with keyed.client() as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 200, path
            csp = r.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (path, csp)
            assert r.headers["x-content-type-options"] == "nosniff", path


def test_nosniff_and_no_framing_on_every_response(keyed: Api, video: Path) -> None:
    with keyed.client(ALICE) as alice:
        job = new_job(alice, video)
        for r in (
            alice.get("/v1/jobs"),
            alice.get(f"/v1/jobs/{job}"),
            alice.get(f"/v1/jobs/{job}/clips/0"),  # 404 problem
            alice.get("/healthz"),
            alice.get("/metrics"),
            alice.get("/nope"),
            alice.get("/openapi.json"),
            keyed.client().get("/v1/jobs"),  # 401
        ):
            assert r.headers.get("x-content-type-options") == "nosniff", r.url
            assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), r.url


def test_docs_can_be_turned_off(servers: Servers) -> None:
    api = servers.get(public_docs="false")
    with api.client() as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert_problem(c.get(path), 404)
        assert c.get("/v1/jobs").status_code == 200 and c.get("/").status_code == 200
