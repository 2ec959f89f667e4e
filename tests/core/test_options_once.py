"""Each encode option is defined once (core/codec/options.py): the CLI's flags, the
service's job options and its form fields are derived from it and must agree."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from api.job_service import OPTION_FIELDS
from core.cli import ENCODE_FLAGS, add_encode_options
from core.codec.bitstream import MODES
from core.codec.options import CALLER_OPTIONS, SERVER_DECIDES, EncodeOptions, Mode
from core.jobs import JobOptions


def test_cli_flags_come_from_the_options() -> None:
    fields = EncodeOptions.model_fields
    assert [kw["dest"] for kw in ENCODE_FLAGS.values()] == list(CALLER_OPTIONS)
    for flag, kw in ENCODE_FLAGS.items():
        info = fields[kw["dest"]]
        assert flag == "--" + (info.alias or kw["dest"]).replace("_", "-")
        assert kw["help"].startswith(info.description)
    assert ENCODE_FLAGS["--mode"]["choices"] == list(MODES) == ["uar", "independent", "whole"]
    assert ENCODE_FLAGS["--clip-length"]["type"] is int
    assert ENCODE_FLAGS["--quality"]["type"] is float


def test_job_options_share_the_limits() -> None:
    job, enc = JobOptions.model_fields, EncodeOptions.model_fields
    assert set(job) == set(CALLER_OPTIONS) - SERVER_DECIDES
    for name, info in job.items():
        assert info.default is None
        assert info.alias == enc[name].alias
        if name != "preset":  # the service serves no GPU-only preset
            assert info.metadata == enc[name].metadata, name
            assert info.description == enc[name].description
    # The form takes exactly the job's fields (by their wire names) plus the service's own.
    wire = {info.alias or name for name, info in job.items()}
    assert wire <= OPTION_FIELDS


@pytest.mark.parametrize(
    ("name", "value"),
    [("clip_length", 4097), ("params", 499), ("lambda", 11), ("quality", 10.5), ("width", 7)],
)
def test_a_limit_refused_in_one_place_is_refused_everywhere(name: str, value: float) -> None:
    with pytest.raises(ValidationError):
        EncodeOptions.model_validate({name: value})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({name: value})
    p = argparse.ArgumentParser()
    add_encode_options(p)
    flag = "--" + name.replace("_", "-")
    args = p.parse_args([flag, str(value)])
    from core.cli import encode_options_from_args

    with pytest.raises(ValidationError):
        encode_options_from_args(args)


def test_modes_on_the_wire_follow_the_option() -> None:
    from typing import get_args

    assert get_args(Mode) == MODES
