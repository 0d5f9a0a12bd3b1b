"""The Celery application: Redis broker and results, RedBeat schedule, one queue per site.

Configured from the environment so ``celery -A cr_orchestrator.runtime.celery_app`` works as is:
``CR_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``CR_PREFIX`` (default
``cr``). Every key Celery, Kombu and RedBeat write carries the prefix, so two
orchestrators (or two test runs) can share one Redis without seeing each other's queues.

Limits are ordered on purpose (NOTES.md): the playbook runner's own timeout <
``soft_time_limit`` < ``time_limit`` < the broker's ``visibility_timeout``, because a
task still running when the visibility timeout expires is handed to a second worker
(``task_acks_late``) and Celery's hard limit kills the pool child but not
ansible-playbook.
"""

from __future__ import annotations


from celery import Celery

from cr_orchestrator.runtime.config import runtime
from cr_orchestrator.state import redis_address
from cr_orchestrator.state.cluster import default_redis_url

PLAYBOOK_TIMEOUT_S = 240  # one ansible-playbook run (the runner's own deadline)
SYNC_TIMEOUT_S = 600  # one replica-set run (a big first copy takes long)
# A flow runs up to two playbooks and a final sync (switchover): its soft limit covers them.
SOFT_TIME_LIMIT_S = 2 * PLAYBOOK_TIMEOUT_S + SYNC_TIMEOUT_S + 60
TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 60
VISIBILITY_TIMEOUT_S = 2 * TIME_LIMIT_S
BEAT_MAX_LOOP_INTERVAL_S = 1  # a 2 s probe interval needs a beat that wakes every second
# A standby beat takes over within this after a crash (the active one renews it every
# tick, i.e. every second): short, because a beat that died with its site holds every
# round of every cluster until then.
REDBEAT_LOCK_TIMEOUT_S = 10


def default_prefix() -> str:
    return runtime().prefix


def site_queue(site: str) -> str:
    """The queue whose workers do ``site``'s work."""
    return f"site.{site}"


def make_app(*, redis_url: str | None = None, prefix: str | None = None) -> Celery:
    """A configured Celery app (tasks from :mod:`cr_orchestrator.runtime.tasks`)."""
    url = redis_url or default_redis_url()
    prefix = prefix or default_prefix()
    app = Celery("cr_orchestrator", include=["cr_orchestrator.runtime.tasks"])
    keyprefix = f"{prefix}:celery:"
    # One server or a Sentinel-named master (state/redis_address.py): the broker, the
    # results and RedBeat all follow a Sentinel failover (kombu re-asks the sentinels
    # when it reconnects; RedBeat's retrying connection does the same).
    connection = redis_address.celery_settings(redis_address.parse(url))
    app.conf.update(
        broker_url=connection["broker_url"],
        broker_transport=connection.get("broker_transport"),
        result_backend=connection["result_backend"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker never gives up on its broker
        broker_transport_options={
            **connection.get("broker_transport_options", {}),
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "global_keyprefix": keyprefix,
        },
        result_backend_transport_options={
            **connection.get("result_backend_transport_options", {}),
            "global_keyprefix": keyprefix},
        result_expires=3600,
        redbeat_redis_url=connection["redbeat_redis_url"],
        redbeat_redis_options=connection["redbeat_redis_options"],
        redbeat_key_prefix=f"{prefix}:redbeat:",
        redbeat_lock_timeout=REDBEAT_LOCK_TIMEOUT_S,
        beat_max_loop_interval=BEAT_MAX_LOOP_INTERVAL_S,
        beat_scheduler="redbeat.RedBeatScheduler",
        task_acks_late=True,  # tasks are idempotent: epoch CAS + cluster lock
        worker_prefetch_multiplier=1,  # a worker busy with a failover must not hoard probes
        task_soft_time_limit=SOFT_TIME_LIMIT_S,
        task_time_limit=TIME_LIMIT_S,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue="cr.default",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.conf.cr_prefix = prefix
    app.conf.cr_redis_url = url
    address = redis_address.parse(url)
    if isinstance(address, redis_address.SentinelAddress):
        # RedBeat's own Sentinel client would use redis-py's plain Sentinel connections,
        # which reconnect to a lost master's old address; ours ask the sentinels on every
        # reconnect and treat a master losing its role as a lost connection
        app.redbeat_redis = redis_address.client(address, decode_responses=True)
    return app


app = make_app()
