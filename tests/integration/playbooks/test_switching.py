"""The playbooks against the namespace lab: clients follow the shared IP and the DNS
record, promotion and demotion drive the mail service, stale orders are refused."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def send_mail_from_client(lab, to_address: str) -> str:
    """Send a mail from the client namespace to ``to_address``:25; returns its subject."""
    subject = f"pb-test-{uuid.uuid4().hex[:10]}"
    script = ("import smtplib, sys\n"
              "s = smtplib.SMTP(sys.argv[1], 25, timeout=10)\n"
              "s.sendmail('ops@lab.test', ['postmaster@lab.test'],"
              " 'Subject: ' + sys.argv[2] + '\\r\\n\\r\\nhello\\r\\n')\n"
              "s.quit()\n")
    lab.client([sys.executable, "-c", script, to_address, subject], check=True)
    return subject


def delivered_to(lab, host: str, subject: str) -> bool:
    maildir = Path(lab.data_dir(host)) / "mail" / "Maildir"
    return any(subject in f.read_text(errors="replace")
               for sub in ("new", "cur") for f in (maildir / sub).glob("*") if f.is_file())


def test_switch_ip_moves_the_shared_ip_and_clients_follow(lab, orders):
    start = orders.run("failover", new="mail-a", old="mail-b")  # a known starting point
    assert start.ok, start.summary
    assert orders.holds_shared_ip("mail-a") and not orders.holds_shared_ip("mail-b")
    standby = orders.run("promote", new="mail-b")  # its service runs, the IP stays on mail-a
    assert standby.ok and orders.service_runs("mail-b"), standby.summary

    checked = orders.run("switch_ip", new="mail-b", old="mail-a", check=True)
    assert checked.ok, checked.summary
    assert checked.changed.get("mail-a") and checked.changed.get("mail-b"), checked.summary
    assert orders.holds_shared_ip("mail-a") and not orders.holds_shared_ip("mail-b"), \
        "check mode must not move the address"

    moved = orders.run("switch_ip", new="mail-b", old="mail-a")
    assert moved.ok, moved.summary
    # mail-b: its records (epoch and "primary"), then the address; mail-a: the release
    assert moved.changed == {"mail-a": 1, "mail-b": 2}, moved.summary
    assert orders.recorded_role("mail-b") == f"primary {orders.epoch}"
    assert orders.holds_shared_ip("mail-b") and not orders.holds_shared_ip("mail-a")
    subject = send_mail_from_client(lab, lab.shared_ip)
    assert delivered_to(lab, "mail-b", subject) and not delivered_to(lab, "mail-a", subject)

    again = orders.run("switch_ip", new="mail-b", old="mail-a", epoch=orders.epoch)
    assert again.ok and again.changed == {}, again.summary
    assert "nothing changed" in again.summary


def dig(lab, name: str) -> list[tuple[int, str]]:
    out = lab.client(["dig", "+noall", "+answer", "+norecurse", f"@{lab.dns_server}", name, "A"],
                     check=True).stdout
    return [(int(f[1]), f[4]) for f in (line.split() for line in out.splitlines()) if len(f) == 5]


def test_switch_dns_points_the_record_at_the_new_primary_with_a_low_ttl(lab, orders):
    dr_address = lab.hosts["mail-dr"].public
    # The lab starts only the primary's service (manual start mode); switch_dns moves the
    # record only, and checks that mail answers at the new address.
    lab.run_on("mail-dr", f"{lab.mailctl} start", check=True)
    to_dr = orders.run("switch_dns", new="mail-dr")
    assert to_dr.ok, to_dr.summary
    assert dig(lab, lab.dns_name) == [(5, dr_address)]  # ttl 5 from cr_switch.dns.ttl

    assert orders.recorded_role("mail-dr") == f"primary {orders.epoch}"
    again = orders.run("switch_dns", new="mail-dr", epoch=orders.epoch)
    assert again.ok and again.changed == {}, again.summary

    # mail-a is on the shared IP's site: the record goes back to the shared IP.
    back = orders.run("switch_dns", new="mail-a")
    assert back.ok, back.summary
    assert dig(lab, lab.dns_name) == [(5, lab.shared_ip)]
    lab.run_on("mail-dr", f"{lab.mailctl} stop", check=True)


def test_demote_and_promote_stop_and_start_the_mail_service(lab, orders):
    demoted = orders.run("demote", new="mail-a", old="mail-b")
    assert demoted.ok, demoted.summary
    assert not orders.service_runs("mail-b")
    assert not orders.holds_shared_ip("mail-b")
    assert orders.recorded_epoch("mail-b") == orders.epoch
    assert orders.recorded_role("mail-b") == f"secondary {orders.epoch}"

    promoted = orders.run("promote", new="mail-b")
    assert promoted.ok, promoted.summary
    assert orders.service_runs("mail-b")
    assert orders.recorded_epoch("mail-b") == orders.epoch
    assert orders.recorded_role("mail-b") == f"primary {orders.epoch}"

    again = orders.run("promote", new="mail-b", epoch=orders.epoch)
    assert again.ok and again.changed == {}, again.summary


def test_an_order_older_than_a_hosts_record_is_refused_and_changes_nothing(lab, orders):
    current = orders.run("failover", new="mail-a", old="mail-b")
    assert current.ok, current.summary
    before = {h: (orders.holds_shared_ip(h), orders.service_runs(h), orders.recorded_epoch(h))
              for h in ("mail-a", "mail-b")}
    assert before["mail-a"][:2] == (True, True) and before["mail-b"][:2] == (False, False)

    stale = orders.run("failover", new="mail-b", old="mail-a", epoch=orders.epoch - 1)
    assert stale.refused and stale.status == "refused" and not stale.ok
    assert f"carries epoch {orders.epoch - 1}" in stale.summary
    assert f"mail-a (epoch {orders.epoch})" in stale.summary
    assert "nothing was changed" in stale.summary
    assert stale.changed == {}
    after = {h: (orders.holds_shared_ip(h), orders.service_runs(h), orders.recorded_epoch(h))
             for h in ("mail-a", "mail-b")}
    assert after == before


def test_demote_of_an_unreachable_host_fails_cleanly_and_says_so(lab, orders):
    lab.fail("mail-b", "isolate")
    result = orders.run("demote", new="mail-a", old="mail-b", timeout_s=90)
    assert result.status == "failed", result.summary  # not "timeout": it gave up by itself
    assert result.unreachable_hosts == ("mail-b",) or "mail-b" in result.failed_hosts
    assert "mail-b" in result.summary and ("unreachable" in result.summary or
                                           "did not answer" in result.summary), result.summary
    assert result.changed == {}


def events_of(result) -> list[dict]:
    return [json.loads(p.read_text()) for p in (result.artifact_dir / "job_events").glob("*.json")]


def test_failover_from_a_primary_known_down_never_contacts_it_and_clients_follow(lab, orders):
    start = orders.run("failover", new="mail-a", old="mail-b")
    assert start.ok, start.summary
    lab.fail("mail-a", "crash")

    moved = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True)
    assert moved.ok, moved.summary
    assert moved.not_contacted == ("mail-a",) and moved.unreachable_hosts == ()
    assert f"mail-a was down and not contacted; fenced by epoch {orders.epoch}" in moved.summary
    touched = {e["event_data"].get("host") for e in events_of(moved) if e["event"].startswith("runner_")}
    assert touched == {"mail-b"}, touched  # not one task ran for (or connected to) mail-a
    assert orders.holds_shared_ip("mail-b") and orders.service_runs("mail-b")
    assert orders.recorded_epoch("mail-b") == orders.epoch
    assert orders.recorded_role("mail-b") == f"primary {orders.epoch}"
    subject = send_mail_from_client(lab, lab.shared_ip)
    assert delivered_to(lab, "mail-b", subject)

    again = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True)
    assert again.ok and again.changed == {"mail-b": 1}, again.summary
    said = [e["event_data"]["res"]["stdout"].strip() for e in events_of(again)
            if e["event"] == "runner_on_ok" and e["event_data"]["task"].startswith("Take the primary role")]
    # services and shared IP left as they were; the records move to the new epoch
    assert said == [f"changed: epoch:{orders.epoch} role:primary"]
    same = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True,
                      epoch=orders.epoch)
    assert same.ok and same.changed == {}, same.summary
    stale = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True,
                       epoch=orders.epoch - 1)
    assert stale.refused and stale.changed == {}, stale.summary
    assert f"older than the epoch recorded on mail-b (epoch {orders.epoch})" in stale.summary


def _fake_rsync_receiver(lab, host: str) -> int:
    """A process on HOST whose command line is that of an rsync receiving into /srv/mail."""
    proc = lab.run_on(host, "nohup setsid bash -c 'exec -a \"rsync --server -logDtpre.iLsfxCIvu "
                            "--delete . /srv/mail/\" sleep 300' >/dev/null 2>&1 & echo $!",
                      check=True)
    return int(proc.stdout.strip())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_failover_ends_a_replication_still_running_into_the_new_primary(lab, orders):
    start = orders.run("failover", new="mail-a", old="mail-b")
    assert start.ok, start.summary
    into_b, into_dr = _fake_rsync_receiver(lab, "mail-b"), _fake_rsync_receiver(lab, "mail-dr")
    try:
        lab.fail("mail-a", "crash")
        moved = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True)
        assert moved.ok, moved.summary
        said = [e["event_data"]["res"]["stdout"] for e in events_of(moved)
                if e["event"] == "runner_on_ok"
                and e["event_data"]["task"].startswith("Take the primary role")]
        assert "stopped-incoming-sync:maildata" in said[0]
        time_limit = __import__("time").monotonic() + 5
        while _alive(into_b) and __import__("time").monotonic() < time_limit:
            __import__("time").sleep(0.05)
        assert not _alive(into_b)  # its --delete can no longer remove new mail on mail-b
        assert _alive(into_dr)  # mail-dr is not taking over: left alone
    finally:
        for pid in (into_b, into_dr):
            if _alive(pid):
                __import__("os").kill(pid, 9)


def test_failover_from_a_primary_known_down_in_check_mode_changes_nothing(lab, orders):
    lab.run_on("mail-a", f"{lab.mailctl} stop")
    before = orders.recorded_epoch("mail-a")
    checked = orders.run("failover", new="mail-a", old="mail-b", cr_old_primary_down=True, cr_fast_take_over=True,
                         check=True)
    assert checked.ok and checked.changed == {"mail-a": 1}, checked.summary
    assert not orders.service_runs("mail-a") and not orders.holds_shared_ip("mail-a")
    assert orders.recorded_epoch("mail-a") == before


def test_failover_from_a_crashed_primary_is_not_an_error_and_clients_follow(lab, orders):
    start = orders.run("failover", new="mail-b", old="mail-a")
    assert start.ok, start.summary
    lab.fail("mail-b", "crash")  # the primary dies: processes, links and addresses gone

    moved = orders.run("failover", new="mail-a", old="mail-b", timeout_s=120)
    assert moved.ok, moved.summary
    assert moved.unreachable_hosts == ("mail-b",)
    assert "mail-b did not answer and is fenced by the epoch" in moved.summary
    assert orders.holds_shared_ip("mail-a") and orders.service_runs("mail-a")
    assert orders.recorded_epoch("mail-a") == orders.epoch
    subject = send_mail_from_client(lab, lab.shared_ip)
    assert delivered_to(lab, "mail-a", subject)


def test_switchover_needs_the_old_primary_and_changes_nothing_without_it(lab, orders):
    before = orders.recorded_epoch("mail-a")
    lab.fail("mail-b", "isolate")
    result = orders.run("switchover", new="mail-b", old="mail-a", timeout_s=120)
    # mail-a is the old primary here and answers; the new one does not: refused to move.
    assert not result.ok and "mail-b" in result.summary, result.summary
    assert orders.holds_shared_ip("mail-a") and orders.service_runs("mail-a")
    assert orders.recorded_epoch("mail-a") == before
