"""Job records: ids, object keys, owners, options, listing, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.jobs import (
    JobOptions,
    Keys,
    list_jobs,
    new_job_id,
    owner_id,
    planned_clips,
    valid_job_id,
)
from core.settings import Settings
from core.storage import LocalStore
from tests.core.jobs_helpers import make_job


def test_ids_keys_and_owners() -> None:
    a, b = new_job_id(), new_job_id()
    assert a != b and valid_job_id(a)
    for bad in ["", "../etc", "A" * 32, a + "0", a[:-1] + "/"]:
        assert not valid_job_id(bad)
        with pytest.raises(ValueError):
            Keys(bad)
    assert owner_id(None) == "local"
    assert owner_id("k1") != owner_id("k2") and "k1" not in owner_id("k1")


def test_planned_clips_cover_every_frame() -> None:
    clips = planned_clips(10, 4)
    assert [(c.first_frame, c.frames) for c in clips] == [(0, 4), (4, 4), (8, 2)]
    assert len(planned_clips(3, 16)) == 1


def test_options_alias_and_strictness() -> None:
    opts = JobOptions.model_validate({"lambda": "0.01", "clip_length": "8"})
    assert opts.lam == 0.01 and opts.clip_length == 8
    assert opts.model_dump(exclude_none=True, by_alias=True) == {"lambda": 0.01, "clip_length": 8}
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"clip_length": 0})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"mode": "magic"})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"bogus": 1})


def test_list_jobs_pages_per_owner(store: LocalStore) -> None:
    mine = [make_job(store, "me").id for _ in range(5)]
    make_job(store, "someone-else")
    ids, cursor = list_jobs(store, "me", limit=2)
    got = list(ids)
    while cursor:
        ids, cursor = list_jobs(store, "me", limit=2, cursor=cursor)
        got += ids
    assert sorted(got) == sorted(mine) and len(got) == 5


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UARNVC_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("UARNVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UARNVC_MAX_UPLOAD_BYTES", "1234")
    s = Settings()
    assert s.api_keys == ["k1", "k2"] and s.max_upload_bytes == 1234
    assert s.effective_broker_url == "filesystem://"
    assert s.effective_store_url == (tmp_path / "store").resolve().as_uri()
    monkeypatch.setenv("UARNVC_STORE_URL", "s3://b/p")
    assert Settings().effective_store_url == "s3://b/p"
