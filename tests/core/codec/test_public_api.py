"""core.codec's public names: each is its module's object, and naming one loads only the
module that holds it (the options stay free of torch for the API)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import core.codec


def test_every_public_name_is_its_modules_object() -> None:
    assert sorted(core.codec.__all__) == sorted(core.codec._HOME)
    for name in core.codec.__all__:
        module = importlib.import_module(f"core.codec.{core.codec._HOME[name]}")
        assert getattr(core.codec, name) is getattr(module, name)


def test_options_load_without_torch() -> None:
    code = (
        "import sys\n"
        "from core.codec import EncodeOptions, BitstreamError\n"
        "from core.codec import entropy\n"  # a submodule still imports as one
        "EncodeOptions(quality=3)\n"
        "assert 'torch' not in sys.modules, 'torch loaded'\n"
        "import core.codec.model\n"
        "EncodeOptions(backbone='hinerv')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        core.codec.nothing_here  # noqa: B018
