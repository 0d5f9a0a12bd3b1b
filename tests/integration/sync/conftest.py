"""Sync fixtures: real Redis with a unique prefix (keys deleted afterwards)."""

from __future__ import annotations

import os
import uuid

import pytest

from cr_orchestrator.act.sync import FreshnessStore

REDIS_URL = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def store(redis_client):
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    yield FreshnessStore(redis_client, prefix)
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def sync_lab(request):
    """The shared ``lab`` fixture when tests/conftest.py provides it; else the lab named by
    CR_LAB_NAME, which must already be up (``crctl lab up``)."""
    try:
        return request.getfixturevalue("lab")
    except pytest.FixtureLookupError:
        pass
    from cr_orchestrator.errors import LabError
    from cr_orchestrator.testworld.lab import Lab, lab_from_env

    name, _base = lab_from_env()
    try:
        return Lab.load(name=name)
    except LabError as exc:
        pytest.skip(f"no lab fixture and lab {name} is not up: {exc}")
