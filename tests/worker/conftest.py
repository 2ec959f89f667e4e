"""Fixtures for worker tests."""

from tests.fixtures.media import small_video  # noqa: F401
