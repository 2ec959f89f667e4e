"""Observability: /metrics covers jobs, clips, queues, storage and HTTP; the Grafana
dashboard only queries metrics that exist; JSON logs carry job and clip ids."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from core.logs import ContextFilter, JsonFormatter, bind, log_context
from tests.api.conftest import post_video, run_inline

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "uarnvc.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def test_metrics_follow_a_job(make_client, small_video) -> None:
    client = make_client(metrics_scan_seconds=0)
    m0 = _samples(client.get("/metrics").text)
    assert _value(m0, "uarnvc_jobs", state="queued") == 0
    assert _value(m0, "uarnvc_queue_depth", queue="cpu") == 0

    job = post_video(client, small_video).json()["id"]
    m1 = _samples(client.get("/metrics").text)
    assert _value(m1, "uarnvc_jobs", state="queued") == 1
    assert _value(m1, "uarnvc_queue_depth", queue="cpu") == 1  # split waits in the broker
    assert _value(m1, "uarnvc_store_bytes", kind="source") == small_video.stat().st_size

    run_inline(client, job)
    st = client.get(f"/v1/jobs/{job}").json()
    assert st["status"] == "succeeded"
    m2 = _samples(client.get("/metrics").text)
    n = st["clips_total"]
    assert _value(m2, "uarnvc_jobs", state="succeeded") == 1
    assert _value(m2, "uarnvc_jobs", state="queued") == 0
    assert _value(m2, "uarnvc_clips", state="done") == n
    assert _value(m2, "uarnvc_clip_train_seconds_count") == n
    assert _value(m2, "uarnvc_clip_train_seconds_sum") > 0
    assert _value(m2, "uarnvc_clip_bytes_total") == st["bytes"]
    assert _value(m2, "uarnvc_store_bytes", kind="clips") > st["bytes"]  # chunks + metrics
    assert _value(m2, "uarnvc_store_up") == 1
    # Request latency histogram, by route template (not by raw path: bounded labels).
    assert _value(m2, "uarnvc_http_request_seconds_count", route="/v1/jobs/{job_id}") >= 1
    assert not any(job in str(lab) for lab, _ in m2["uarnvc_http_request_seconds_count"])

    # A second scan does not count the same clips again; a cancelled job moves state.
    client.delete(f"/v1/jobs/{job}")
    m3 = _samples(client.get("/metrics").text)
    assert _value(m3, "uarnvc_clip_train_seconds_count") == n
    assert _value(m3, "uarnvc_jobs", state="cancelled") == 1


def test_metrics_scan_is_cached(make_client, small_video) -> None:
    client = make_client(metrics_scan_seconds=3600)
    client.get("/metrics")
    post_video(client, small_video)
    m = _samples(client.get("/metrics").text)
    assert _value(m, "uarnvc_jobs", state="queued") == 0  # the scan is reused, not redone
    client.app.state.metrics.service.refresh(force=True)
    assert _value(_samples(client.get("/metrics").text), "uarnvc_jobs", state="queued") == 1


def test_dashboard_queries_only_exported_metrics(client) -> None:
    """Every metric name in every Grafana expression is exported by /metrics (TYPE lines
    are there even before a labelled metric has its first sample)."""
    client.get("/healthz")
    text = client.get("/metrics").text
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    exported = families | {f + s for f in families for s in SUFFIXES}
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = {name for e in exprs for name in re.findall(r"\b(uarnvc_[a-z_]+)", e)}
    assert used, exprs
    missing = sorted(used - exported)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"
    wanted = {
        "uarnvc_jobs",
        "uarnvc_queue_depth",
        "uarnvc_store_bytes",
        "uarnvc_clip_train_seconds_bucket",
        "uarnvc_http_request_seconds_bucket",
    }
    assert wanted <= used, wanted - used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def _json_logger() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("uarnvc.test.json")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, buf


def test_json_logs_carry_job_and_clip_ids() -> None:
    logger, buf = _json_logger()
    logger.info("outside")
    with log_context(job_id="ab" * 16, clip=3):
        logger.info("clip %d done", 3, extra={"psnr": 31.5})
        with log_context(task="encode_clip"):
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
    logger.info("after")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["outside", "clip 3 done", "failed", "after"]
    assert "job_id" not in lines[0] and "job_id" not in lines[3]
    assert lines[1]["job_id"] == "ab" * 16 and lines[1]["clip"] == 3 and lines[1]["psnr"] == 31.5
    assert lines[2]["task"] == "encode_clip" and lines[2]["clip"] == 3
    assert "ValueError: boom" in lines[2]["exc"]
    assert lines[1]["level"] == "INFO" and lines[1]["logger"] == "uarnvc.test.json"
    assert lines[1]["ts"].endswith("+00:00")


def test_bind_adds_to_the_current_context() -> None:
    logger, buf = _json_logger()
    with log_context(request="r1"):
        bind(job_id="cd" * 16)
        logger.info("x")
    logger.info("y")
    a, b = (json.loads(line) for line in buf.getvalue().splitlines())
    assert a["job_id"] == "cd" * 16 and a["request"] == "r1"
    assert "job_id" not in b


def test_log_json_setting(monkeypatch) -> None:
    from core.settings import Settings

    monkeypatch.setenv("UARNVC_LOG_JSON", "1")
    assert Settings().log_json is True
    monkeypatch.setenv("UARNVC_LOG_JSON", "0")
    assert Settings().log_json is False
