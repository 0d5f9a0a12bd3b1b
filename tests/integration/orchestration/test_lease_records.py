"""What a lease renewal records in Redis (act/lease.py), with the send replaced: the grant
is written before the renewal leaves, its agent's report after, and a change of the
agent's state reaches history once."""

from __future__ import annotations

import pytest

from cr_orchestrator.act import lease as act_lease
from cr_orchestrator.act.lease import Renewal
from cr_orchestrator.decide.rules import ClusterSnapshot, MemberState
from cr_orchestrator.model import Role
from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.runtime import cycle
from cr_orchestrator.state.lease import LeaseStore

from .conftest import make_topology


@pytest.fixture
def env(redis_client, prefix):
    return cycle.Env(topology=make_topology(), redis=redis_client, prefix=prefix,
                     clock=lambda: 1000.0)


def snapshot(epoch: int = 3, paused: bool = False) -> ClusterSnapshot:
    up = MemberState("mail-a", Role.PRIMARY, 100, host_liveness=Liveness.UP,
                     service_liveness=Liveness.UP)
    return ClusterSnapshot(cluster="mail", members=(up,), primary="mail-a", epoch=epoch,
                           now=1000.0, paused=paused)


def fake_sends(monkeypatch, store: LeaseStore, answers: list[Renewal]) -> list:
    """Replace the send by ``answers`` in turn; returns the grants seen while sending."""
    seen_while_sending: list = []
    replies = iter(answers)

    def send(**kwargs):
        seen_while_sending.append(store.last_grant("mail"))
        return next(replies)

    monkeypatch.setattr(act_lease, "send_renewal", send)
    monkeypatch.setattr(act_lease, "renewal_deadline", lambda host, timeout_s: 2.5)
    return seen_while_sending


def test_the_grant_is_recorded_before_the_renewal_is_sent_and_the_agent_after(
        env, monkeypatch):
    store = LeaseStore(env.redis, env.prefix)
    seen_while_sending = fake_sends(monkeypatch, store, [
        Renewal("mail-a", True, False, "the lease agent is down: gone"),
        Renewal("mail-a", True, False, "the lease agent is down: still gone"),
        Renewal("mail-a", True, True, "the lease agent (pid 7) checked 0.5 s ago"),
        Renewal("mail-a", False, None, "renewal not written: no answer")])
    cluster = env.topology.cluster("mail")

    act_lease.renew(env, cluster, snapshot())
    assert seen_while_sending == [("mail-a", 3, 1002.5, False)]  # the send's deadline, first
    assert store.last_grant("mail") == ("mail-a", 3, 1000.0, False)  # then when it was answered
    assert store.agent("mail") == {"host": "mail-a", "state": "down",
                                   "detail": "the lease agent is down: gone", "since": "1000.0"}
    act_lease.renew(env, cluster, snapshot())  # down again: no second event
    act_lease.renew(env, cluster, snapshot())  # up: logged, not an error event
    assert store.agent("mail")["state"] == "up"
    events = [e.data for e in env.state.events("mail")]
    assert [e.get("lease_agent") for e in events] == ["down"]
    # no answer: the grant stays at the send's deadline, the agent's report as it was
    act_lease.renew(env, cluster, snapshot(epoch=4))
    assert store.last_grant("mail") == ("mail-a", 4, 1002.5, False)
    assert store.agent("mail")["state"] == "up"


def test_a_paused_renewal_is_held_until_an_ordinary_one_is_answered(env, monkeypatch):
    """The agent keeps a paused renewal without end: the record says so from the moment
    one may have left, through ordinary renewals that got no answer, until one is answered."""
    store = LeaseStore(env.redis, env.prefix)
    seen_while_sending = fake_sends(monkeypatch, store, [
        Renewal("mail-a", False, None, "renewal not written: no answer"),
        Renewal("mail-a", False, None, "renewal not written: no answer"),
        Renewal("mail-a", True, True, "the lease agent (pid 7) checked 0.5 s ago")])
    cluster = env.topology.cluster("mail")
    act_lease.renew(env, cluster, snapshot(paused=True))  # lost on the way: it may have arrived
    assert seen_while_sending[-1][3] and store.last_grant("mail")[3]
    act_lease.renew(env, cluster, snapshot())  # resumed; this one gets no answer either
    assert store.last_grant("mail")[3]
    act_lease.renew(env, cluster, snapshot())  # answered: an ordinary lease from now on
    assert store.last_grant("mail") == ("mail-a", 3, 1000.0, False)
