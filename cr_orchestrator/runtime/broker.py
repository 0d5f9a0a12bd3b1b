"""The Celery broker over Redis Sentinel, riding out a master being replaced.

kombu's Sentinel transport re-asks the sentinels when a connection fails, but a master
that is losing its role does not fail the connection: for the few seconds before Sentinel
demotes it, it answers the worker's ``BRPOP`` (a write: it pops) and the visibility
mutex with ``NOREPLICAS`` (its replicas left it for the new master, and
``min-replicas-to-write`` refuses), and once demoted, with ``READONLY``. kombu counts
those as channel errors and the worker stopped with "Unrecoverable error"; the restarts'
back-off then kept the cluster without rounds for most of a minute
(tests/integration/quorum). Here the channel's connections are the Sentinel-managed ones
of :mod:`cr_orchestrator.state.redis_address`, for which those answers are a lost
connection: the consumer reconnects through the sentinels to the new master.
"""

from __future__ import annotations

from kombu.transport.redis import SentinelChannel, SentinelTransport

from cr_orchestrator.state.redis_address import QuorumManagedConnection


class QuorumSentinelChannel(SentinelChannel):
    connection_class = QuorumManagedConnection


class QuorumSentinelTransport(SentinelTransport):
    Channel = QuorumSentinelChannel
