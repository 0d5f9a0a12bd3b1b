"""Freshness records, backoff, epoch fencing and the per-target-path lock on real Redis."""

from __future__ import annotations

import pytest

from cr_orchestrator.errors import SyncError
from cr_orchestrator.act.sync import TargetPathLock


def test_success_then_failures_back_off_and_keep_the_last_good_sync(store):
    store.record_success(cluster="mail", set_name="maildir", host="mail-b", source="mail-a", epoch=3,
                         started_at=100.0, ended_at=104.0, bytes_sent=2048, files=7)
    f1 = store.record_failure(cluster="mail", set_name="maildir", host="mail-b", source="mail-a", epoch=3,
                              started_at=130.0, ended_at=135.0, error="rsync exit 255: ssh failed", every_s=30)
    f2 = store.record_failure(cluster="mail", set_name="maildir", host="mail-b", source="mail-a", epoch=3,
                              started_at=200.0, ended_at=205.0, error="rsync exit 255: ssh failed", every_s=30)
    assert (f1.consecutive_failures, f1.next_retry_at) == (1, 165.0)
    assert (f2.consecutive_failures, f2.next_retry_at) == (2, 265.0)
    got = store.freshness("mail", "maildir", now=300.0)["mail-b"]
    assert (got.last_success_at, got.last_success_source, got.last_success_epoch, got.bytes, got.files,
            got.duration_s) == (104.0, "mail-a", 3, 2048, 7, 4.0)
    assert got.lag_s == 200.0 and "[from mail-a, epoch 3] rsync exit 255" in got.last_error
    store.record_success(cluster="mail", set_name="maildir", host="mail-b", source="mail-a", epoch=3,
                         started_at=300.0, ended_at=301.0, bytes_sent=0, files=0)
    healed = store.freshness("mail", "maildir", now=301.0)["mail-b"]
    assert healed.last_error is None and healed.consecutive_failures == 0 and healed.next_retry_at is None


def test_unknown_set_has_no_records(store):
    assert store.freshness("mail", "nothing") == {}


def test_epoch_fencing_refuses_stale_and_second_primary(store):
    store.claim_epoch(cluster="mail", epoch=1, source="mail-a")
    store.claim_epoch(cluster="mail", epoch=1, source="mail-a")  # same primary, same epoch: fine
    store.claim_epoch(cluster="mail", epoch=2, source="mail-b")
    with pytest.raises(SyncError, match="epoch 2 .primary mail-b. already synced; this caller is stale"):
        store.claim_epoch(cluster="mail", epoch=1, source="mail-a")
    with pytest.raises(SyncError, match="that epoch's primary is mail-b, not mail-a"):
        store.claim_epoch(cluster="mail", epoch=2, source="mail-a")


def test_one_writer_per_target_path_whatever_its_spelling(store):
    locks = TargetPathLock(store.redis, store.prefix)
    token = locks.acquire(host="mail-dr", path="/srv/dr/mail/", owner="mail/maildir from mail-a", ttl_s=30)
    with pytest.raises(SyncError, match=r"being written by another sync \(mail/maildir from mail-a\)"):
        locks.acquire(host="mail-dr", path="/srv//dr/mail", owner="www/site from web-a", ttl_s=30)
    locks.acquire(host="mail-dr", path="/srv/dr/www", owner="www/site from web-a", ttl_s=30)  # other path
    locks.release(host="mail-dr", path="/srv/dr/mail", token="not-mine")  # not the owner: kept
    with pytest.raises(SyncError):
        locks.acquire(host="mail-dr", path="/srv/dr/mail", owner="x", ttl_s=30)
    locks.release(host="mail-dr", path="/srv/dr/mail", token=token)
    locks.acquire(host="mail-dr", path="/srv/dr/mail", owner="www/site from web-a", ttl_s=30)
    assert store.redis.pttl(locks.key("mail-dr", "/srv/dr/mail")) > 0


def test_a_kept_path_lock_holds_and_a_dead_holders_lock_frees_within_its_ttl(store):
    """Chaos campaign seed 832684: a worker SIGKILLed during a sync left its 300 s lock,
    and every replica's sync was refused for minutes. The lock now lives a short TTL,
    extended by the sync while it runs."""
    import time

    from cr_orchestrator.act.sync.engine import TARGET_LOCK_TTL_S

    assert TARGET_LOCK_TTL_S <= 20  # a dead sync frees the path well within convergence
    locks = TargetPathLock(store.redis, store.prefix)
    alive = locks.acquire(host="mail-b", path="/srv/mail", owner="alive", ttl_s=1.2)
    keeper = locks.keep(host="mail-b", path="/srv/mail", token=alive, ttl_s=1.2)
    locks.acquire(host="mail-dr", path="/srv/mail", owner="killed worker", ttl_s=1.2)  # never kept
    time.sleep(2.0)
    with pytest.raises(SyncError, match=r"\(alive\)"):
        locks.acquire(host="mail-b", path="/srv/mail", owner="next", ttl_s=1.2)
    locks.acquire(host="mail-dr", path="/srv/mail", owner="next", ttl_s=1.2)  # freed
    keeper.set()
    time.sleep(1.6)  # no longer kept: it runs out too
    locks.acquire(host="mail-b", path="/srv/mail", owner="next", ttl_s=1.2)
