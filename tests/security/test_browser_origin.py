"""Finding 3: a keyless local service was open to any web page the user visited.

`Host: attacker.example` got 200 (DNS rebinding: a page on the attacker's name, resolved
to 127.0.0.1, reads the API as same-origin), and a cross-site multipart POST with
`Origin: https://evil.example` got 202 (a page on any site can submit jobs to
127.0.0.1). Before the fix this test failed on its first request (200, not 400).
"""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import (
    ALICE,
    TINY,
    Api,
    Servers,
    assert_problem,
    new_job,
    other_tenant_polls,
    submit,
)


def _count(c) -> int:
    return len(c.get("/v1/jobs?limit=100").json()["jobs"])


def test_foreign_host_names_refused_when_keyless(keyless: Api, video: Path) -> None:
    with keyless.client() as c:
        job = new_job(c, video)
        with other_tenant_polls(keyless, None, job) as codes:
            for host in ("attacker.example", f"attacker.example:{keyless.port}", "evil", "x"):
                for path in ("/", f"/v1/jobs/{job}", "/v1/jobs", "/web/app.js", "/metrics"):
                    r = c.get(path, headers={"Host": host})
                    assert_problem(r, 400, "host-not-allowed")
            r = submit(c, video, headers={"Host": "attacker.example"})
            assert_problem(r, 400, "host-not-allowed")
        assert set(codes) == {200}, codes
        port = keyless.port
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
            assert c.get(f"/v1/jobs/{job}", headers={"Host": host}).status_code == 200, host
        # Probes answer whatever the name (load balancers and kubelets use addresses).
        assert c.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_cross_site_writes_refused(keyless: Api, video: Path) -> None:
    with keyless.client() as c:
        job = new_job(c, video)
        n = _count(c)
        hostile = [
            {"Origin": "https://evil.example"},
            {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},  # another port or subdomain: not this origin
            {"Origin": "null"},  # sandboxed frames, file:// pages
            {"Origin": f"http://127.0.0.1:{keyless.port + 1}"},
        ]
        for h in hostile:
            assert_problem(submit(c, video, headers=h), 403, "cross-site-request")
            assert_problem(c.delete(f"/v1/jobs/{job}", headers=h), 403, "cross-site-request")
        assert _count(c) == n and c.get(f"/v1/jobs/{job}").status_code == 200
        # What the page itself and non-browser clients send is accepted.
        own = f"http://127.0.0.1:{keyless.port}"
        for h in (
            {},
            {"Origin": own},
            {"Origin": own, "Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "none"},  # typed in the address bar
            {"Origin": f"http://localhost:{keyless.port}", "Host": f"localhost:{keyless.port}"},
        ):
            assert submit(c, video, headers=h).status_code == 202, h
        # Reads stay readable cross-site only through CORS (closed): not refused here.
        r = c.get(f"/v1/jobs/{job}", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_configured_origin_and_hosts(servers: Servers, video: Path) -> None:
    api = servers.get(
        api_keys=ALICE,
        cors_origins="https://app.example",
        allowed_hosts="api.example,127.0.0.1",
    )
    with api.client(ALICE) as c:
        ok = submit(c, video, headers={"Origin": "https://app.example"})
        assert (
            ok.status_code == 202
            and ok.headers["access-control-allow-origin"] == "https://app.example"
        )
        assert_problem(submit(c, video, headers={"Origin": "https://evil.example"}), 403)
        assert c.get("/v1/jobs", headers={"Host": "api.example"}).status_code == 200
        assert_problem(c.get("/v1/jobs", headers={"Host": "localhost"}), 400, "host-not-allowed")


def test_keyed_service_answers_any_host_name_by_default(keyed: Api) -> None:
    """With keys the Host is not what protects it (a page has no key): behind a proxy or
    a Kubernetes Service it may be any name, so it is only checked when configured."""
    with keyed.client(ALICE) as c:
        assert c.get("/v1/jobs", headers={"Host": "uarnvc.internal:8000"}).status_code == 200
        r = c.post("/v1/jobs", data=TINY, headers={"Origin": "https://evil.example"})
        assert_problem(r, 403, "cross-site-request")
