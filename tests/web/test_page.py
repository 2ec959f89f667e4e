"""The web page in a real browser: headless Debian chromium (Playwright, no browser
download) against `uarnvc serve` with an API key.

The must-show: upload a real clip through the page, see the first clip arrive over SSE,
and see the `<video>` play decoded frames (MSE over /decode?format=mp4) while later clips
are still training; then the chart, the per-clip list and the download links; a
screenshot goes to bench/results/web_page.png for the README.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.servers import PENS, REPO, Processes, free_port, uarnvc_cmd, wait_http

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "web-test-key"
# pens.mp4 at 64 px wide, 6 clips of 4 frames: the first clip arrives in a few seconds
# and each later clip takes a few more, leaving time to see the video play mid-job.
OPTIONS = {
    "clip_length": "4",
    "frames": "24",
    "width": "64",
    "steps": "60",
    "params": "6000",
    "seed": "1",
}
SCREENSHOT = REPO / "bench" / "results" / "web_page.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`uarnvc serve` (API + one worker) with an API key, on a free port."""
    d = tmp_path_factory.mktemp("web")
    procs = Processes(d)
    port = free_port()
    proc = procs.start(
        "serve",
        uarnvc_cmd("serve", "--port", str(port), "--data-dir", str(d / "data")),
        env={"UARNVC_API_KEYS": KEY, "UARNVC_POLL_INTERVAL": "0.2", "UARNVC_TORCH_THREADS": "1"},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
        yield f"http://127.0.0.1:{port}"
    except BaseException:
        print(procs.dump())
        raise
    finally:
        procs.stop_all()
        if proc.returncode not in (0, -15, None):
            print(procs.dump())


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "requestfailed",
        lambda r: "ERR_ABORTED" not in (r.failure or "") and errors.append(f"{r.url}: {r.failure}"),
    )
    pg.goto(server + "/")
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def api(server: str) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def _enter_key(pg) -> None:
    pg.fill("#api-key", KEY)
    pg.click("#key-form button[type=submit]")
    pg.wait_for_function(
        "() => document.querySelector('#key-state').textContent.includes('key set')"
    )


def test_errors_are_readable(page, server: str) -> None:
    """Without a key the page says so (401 as a sentence); a bad option is a 422 that
    names the field; no job is created by either."""
    page.wait_for_selector("#error:not([hidden])")
    assert "401" in page.text_content("#error-text")
    assert "API key" in page.text_content("#error-text")
    page.click("#error-close")
    assert page.is_hidden("#error")
    _enter_key(page)
    # An option the server refuses (the browser's own checks pass): the field is named.
    page.set_input_files("#file", str(PENS) if PENS.exists() else __file__)
    page.fill("input[name=steps]", "2000000")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error-text")
    assert "422" in text and "steps" in text, text
    # Not a video at all.
    page.click("#error-close")
    page.fill("input[name=steps]", "")
    page.set_input_files("#file", __file__)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error-text")
    assert "422" in text and "video" in text, text
    with api(server) as c:
        assert c.get("/v1/jobs").json()["jobs"] == []


def test_upload_watch_and_play_while_encoding(page, server: str) -> None:
    if not PENS.exists():
        pytest.skip(f"{PENS} is absent (the shared data folder is not mounted)")
    assert page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42E01E\"')"), (
        "this chromium cannot play H.264 through MSE"
    )
    _enter_key(page)
    page.set_input_files("#file", str(PENS))
    for name, value in OPTIONS.items():
        page.fill(f"input[name={name}]", value)
    page.click("#submit")
    page.wait_for_function("() => /job=[0-9a-f]{32}/.test(location.hash)")
    job = page.evaluate("location.hash").split("=", 1)[1]
    page.wait_for_selector("#job-view:not([hidden])")

    with api(server) as c:
        # The first clip arrives over SSE and is listed as done.
        page.wait_for_selector("#clips li.done", timeout=120_000)
        # The job's ETA (from the estimate, then the measured clips) and its start.
        page.wait_for_function(
            "() => /^ETA \\d.*started /.test(document.querySelector('#job-eta').textContent)"
        )
        # The video plays decoded frames before the job ends.
        deadline = time.monotonic() + 60
        played = None
        while time.monotonic() < deadline:
            played = page.evaluate(
                """() => { const v = document.querySelector('#video');
                   const q = v.getVideoPlaybackQuality();
                   return {t: v.currentTime, frames: q.totalVideoFrames,
                           err: v.error && v.error.message}; }"""
            )
            status = c.get(f"/v1/jobs/{job}").json()
            assert played["err"] is None, played
            if played["t"] > 0 or played["frames"] > 0:
                break
            assert status["status"] not in ("succeeded", "failed", "cancelled"), (
                f"the job ended before the video played anything: {played}, {status['status']}"
            )
            time.sleep(0.2)
        else:
            pytest.fail(f"the video never played: {played}")
        print(f"played {played} with {status['clips_done']}/{status['clips_total']} clips done")
        assert status["status"] == "running", status["status"]
        assert status["clips_done"] < status["clips_total"]

        # Then the job finishes and the page shows all of it.
        page.wait_for_selector("#job-status.succeeded", timeout=120_000)
        n = status["clips_total"]
        page.wait_for_function(f"() => document.querySelectorAll('#clips li.done').length === {n}")
        hrefs = page.eval_on_selector_all(
            "#downloads a", "els => els.map(a => a.getAttribute('href'))"
        )
        assert f"/v1/jobs/{job}/bitstream" in hrefs
        assert all(f"/v1/jobs/{job}/clips/{k}" in hrefs for k in range(n))
        assert "dB" in page.text_content("#job-summary")
        # The chart has ink: some pixel of the canvas is PSNR-blue.
        assert page.evaluate(
            """() => { const c = document.querySelector('#chart');
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               for (let i = 0; i < d.length; i += 4)
                 if (d[i] === 31 && d[i+1] === 111 && d[i+2] === 235) return true;
               return false; }"""
        )
        # An authenticated download through the page (Bearer via fetch, not a bare link).
        with page.expect_download() as dl:
            page.click(f"#downloads a[href='/v1/jobs/{job}/clips/0']")
        data = Path(dl.value.path()).read_bytes()
        assert data == c.get(f"/v1/jobs/{job}/clips/0").content
        page.wait_for_timeout(500)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert not [e for e in page.errors if "favicon" not in e], page.errors


def test_static_assets_come_from_this_server_only(server: str) -> None:
    """No CDN: every script/style the page references is served here."""
    import re

    html = httpx.get(server + "/").text
    refs = [r for r in re.findall(r'(?:src|href)="([^"]+)"', html) if r != "data:,"]
    assert refs and all(r.startswith("/web/") for r in refs), refs
    for r in refs:
        assert httpx.get(server + r).status_code == 200
    for js in ("app.js", "api.js", "player.js", "chart.js"):
        body = httpx.get(f"{server}/web/{js}").text
        assert "http://" not in body and "https://" not in body, js
