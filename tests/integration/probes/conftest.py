"""Fixtures for the probe integration tests: real Redis with a private key prefix."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def prefix(redis_client):
    """A unique key prefix; every key under it is deleted afterwards (never FLUSHDB)."""
    value = f"crtest-{uuid.uuid4().hex[:8]}"
    yield value
    for key in redis_client.scan_iter(match=f"{value}:*"):
        redis_client.delete(key)
