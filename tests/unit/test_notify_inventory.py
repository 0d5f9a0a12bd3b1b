"""``cr_notify`` in the inventory: parsed into targets, bad values named with file, group
and variable, a password in a webhook URL refused without showing it."""

from __future__ import annotations

from test_inventory_build import errors_of, linux, web

from cr_orchestrator.inventory import build_topology
from cr_orchestrator.model import Secret
from cr_orchestrator.notify.targets import NotifyKind, Webhook

NOTIFY = {"webhooks": [{"url": "https://hooks.example.com/T0/B0/tok"}, "http://127.0.0.1:9/x"],
          "smtp": {"server": "127.0.0.1", "port": 2525, "from": "cr@example.com",
                   "to": ["ops@example.com"]}}


def test_webhooks_and_mail_recipients_are_read_per_cluster():
    topology = build_topology(linux(web(cr_notify=NOTIFY)), source="inv")
    notify = topology.cluster("web").notify
    assert [h.url for h in notify.webhooks] == ["https://hooks.example.com/T0/B0/tok",
                                                "http://127.0.0.1:9/x"]
    assert notify.smtp.port == 2525 and notify.smtp.recipients == ("ops@example.com",)
    assert notify.kinds == frozenset(NotifyKind)
    assert build_topology(linux(), source="inv").cluster("web").notify is None


def test_a_parent_group_sets_it_for_its_clusters_and_events_narrow_it():
    data = linux(all={"vars": {"cr_notify": {**NOTIFY, "events": ["failover", "replica_behind"]}}})
    notify = build_topology(data, source="inv").cluster("web").notify
    assert notify.kinds == {NotifyKind.FAILOVER, NotifyKind.REPLICA_BEHIND}


def test_bad_values_are_named_with_group_and_variable():
    bad = {"webhooks": [{"url": "ftp://x"}], "smtp": {"server": "127.0.0.1", "from": "nobody",
                                                      "to": []}, "events": ["failovr"]}
    problems = errors_of(linux(web(cr_notify=bad)))
    text = "\n".join(problems)
    assert "inv: group 'cr_cluster_web': cr_notify.webhooks[0].url: 'ftp://x' is not an http(s) URL" in text
    assert "cr_notify.smtp.from: 'nobody' is not a mail address" in text
    assert "cr_notify.smtp.to: is empty" in text
    assert "cr_notify.events[0]:" in text and "failovr" in text
    assert errors_of(linux(web(cr_notify={"events": ["failover"]})))[0].endswith(
        "cr_notify: needs webhooks, smtp or both")


def test_a_password_in_a_webhook_url_is_refused_without_showing_it():
    problems = errors_of(linux(web(cr_notify={"webhooks": ["https://u:hunter2@h.example/x"]})))
    assert any("carries a password" in p for p in problems)
    assert not any("hunter2" in p for p in problems)


def test_a_vaulted_webhook_url_is_used_and_shown_only_as_scheme_and_host():
    hooks = {"webhooks": [{"url": Secret("https://hooks.example.com:8443/T0/secret-token")}]}
    notify = build_topology(linux(web(cr_notify=hooks)), source="inv").cluster("web").notify
    assert notify.webhooks[0].url.endswith("/secret-token")
    assert Webhook(notify.webhooks[0].url).shown() == "https://hooks.example.com:8443"
