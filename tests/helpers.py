"""Small helpers shared by the tests."""

from __future__ import annotations

import os

import pytest


def require_all() -> bool:
    return os.environ.get("SCHEDULER_REQUIRE_ALL") == "1"


def require_or_skip(reason: str) -> None:
    """Skip for a missing part, unless CI said every part must be there."""
    if require_all():
        pytest.fail(f"SCHEDULER_REQUIRE_ALL=1 but: {reason}")
    pytest.skip(reason)
