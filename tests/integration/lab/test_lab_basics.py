"""The lab as a newcomer meets it: mail in and out, ssh and Ansible, signed DNS updates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid

import dns.message
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest
import yaml

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import Lab

pytestmark = pytest.mark.lab

VENV_BIN = os.path.dirname(sys.executable)


def _maildir_files(lab, host: str) -> list[str]:
    root = os.path.join(lab.data_dir(host), "mail", "Maildir")
    return [os.path.join(root, sub, f) for sub in ("new", "cur") for f in os.listdir(os.path.join(root, sub))]


def test_mail_sent_from_the_client_is_read_back_over_pop3_and_imap(lab):
    subject = f"lab-test-{uuid.uuid4().hex[:8]}"
    primary = lab.hosts["mail-a"].public
    script = textwrap.dedent(f"""
        import imaplib, poplib, smtplib
        from email.message import EmailMessage
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@lab.test", "bob@lab.test", {subject!r}
        msg.set_content("hello from the client namespace")
        with smtplib.SMTP({primary!r}, 25, timeout=5) as smtp:
            smtp.send_message(msg)
        imap = imaplib.IMAP4({primary!r}, 143, timeout=5)
        imap.login("lab", "lab")
        imap.select("INBOX")
        typ, found = imap.search(None, "SUBJECT", {subject!r})
        print("IMAP", len(found[0].split()))
        imap.logout()
        pop = poplib.POP3({primary!r}, 110, timeout=5)
        pop.user("lab"); pop.pass_("lab")
        count = 0
        for i in range(1, len(pop.list()[1]) + 1):
            if any({subject!r}.encode() in line for line in pop.retr(i)[1]):
                count += 1
        print("POP3", count)
        pop.quit()
    """)
    proc = lab.client([sys.executable, "-c", script], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "IMAP 1" in proc.stdout and "POP3 1" in proc.stdout, proc.stdout
    on_primary = [p for p in _maildir_files(lab, "mail-a") if subject in open(p).read()]
    assert len(on_primary) == 1, "the message file is not in mail-a's Maildir"
    # the host sees the same file under its own /srv view, and no other host has it
    seen = lab.run_on("mail-a", f"grep -l {subject} /srv/mail/Maildir/*/*", check=True)
    assert seen.stdout.strip().endswith(os.path.basename(on_primary[0]))
    assert not [p for p in _maildir_files(lab, "mail-b") if subject in open(p).read()]


def test_every_host_answers_ssh_with_the_lab_key_and_sees_its_own_srv(lab):
    for host in lab.hosts:
        marker = f"{host}-{uuid.uuid4().hex[:6]}"
        with open(os.path.join(lab.data_dir(host), "marker"), "w") as f:
            f.write(marker)
        proc = subprocess.run(lab.ssh_argv(host, "hostname; cat /srv/marker"), capture_output=True,
                              text=True, timeout=20)
        assert proc.returncode == 0, f"ssh to {host}: {proc.stderr}"
        assert proc.stdout.split() == [host, marker]


def test_ansible_pings_every_linux_host_of_the_generated_inventory(lab):
    with open(lab.inventory_path) as f:
        inventory = yaml.safe_load(f)
    cluster = inventory["all"]["children"]["cr_cluster_mail"]["vars"]
    assert cluster["cr_members"]["mail-a"]["role"] == "primary"
    assert cluster["cr_services"][0]["control"]["status"] == f"{lab.mailctl} status"
    assert oct(os.stat(lab.inventory_path).st_mode & 0o777) == "0o600"  # it holds the TSIG key
    with tempfile.TemporaryDirectory() as cwd:  # no stray ansible.cfg or group_vars from the cwd
        proc = subprocess.run([f"{VENV_BIN}/ansible", "all", "-i", lab.inventory_path,
                               "-m", "ansible.builtin.ping", "-o"],
                              capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.hosts:
        assert f"{host} | SUCCESS" in proc.stdout


def test_the_generated_inventory_passes_crctl_validate(lab):
    proc = subprocess.run([f"{VENV_BIN}/crctl", "validate", "-i", lab.inventory_path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster mail" in proc.stdout
    assert lab.tsig_secret() not in proc.stdout + proc.stderr


def test_only_the_primary_serves_after_up_and_start_mode_is_manual(lab):
    statuses = {h: lab.run_on(h, [lab.mailctl, "status"]).returncode for h in lab.hosts}
    assert statuses == {"mail-a": 0, "mail-b": 3, "mail-dr": 3}
    assert all(lab.run_on(h, [lab.mailctl, "is-enabled"]).returncode == 1 for h in lab.hosts)


def test_the_control_script_reports_and_changes_the_mail_service(lab):
    assert lab.run_on("mail-b", [lab.mailctl, "start"]).returncode == 0
    try:
        assert lab.run_on("mail-b", [lab.mailctl, "status"]).returncode == 0
        assert lab.run_on("mail-b", [lab.mailctl, "enable"]).returncode == 0
        assert lab.run_on("mail-b", [lab.mailctl, "is-enabled"]).returncode == 0
    finally:
        assert lab.run_on("mail-b", [lab.mailctl, "disable"]).returncode == 0
        assert lab.run_on("mail-b", [lab.mailctl, "stop"]).returncode == 0
    assert lab.run_on("mail-b", [lab.mailctl, "status"]).returncode != 0
    assert lab.run_on("mail-b", [lab.mailctl, "is-enabled"]).returncode == 1


def test_stop_kills_a_mail_service_that_ignores_sigterm(lab):
    # A Dovecot master busy with its children ignored SIGTERM for over 5 s under load, and a
    # switchover failed on it: stop must escalate the way a service manager does.
    assert lab.run_on("mail-b", [lab.mailctl, "start"]).returncode == 0
    master = os.path.join(lab.state_dir, "hosts", "mail-b", "run", "dovecot", "master.pid")
    with open(master) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGSTOP)  # a stopped process acts on no signal but SIGKILL
    try:
        stop = lab.run_on("mail-b", [lab.mailctl, "stop"], timeout=20)
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
    assert stop.returncode == 0, stop.stderr
    assert lab.run_on("mail-b", [lab.mailctl, "status"]).returncode == 3
    assert lab.run_on("mail-b", [lab.mailctl, "start"]).returncode == 0  # ports are free again
    assert lab.run_on("mail-b", [lab.mailctl, "stop"]).returncode == 0


def _update(lab, address: str, *, signed: bool):
    keyring = dns.tsigkeyring.from_text({"cr-lab-key.": ("hmac-sha256", lab.tsig_secret())})
    upd = dns.update.UpdateMessage("lab.test.", keyring=keyring if signed else None,
                                   keyalgorithm="hmac-sha256")
    upd.replace("mail", 5, "A", address)
    return dns.query.tcp(upd, lab.dns_server, timeout=3)


def _client_resolves(lab) -> str:
    proc = lab.client(["dig", "+short", f"@{lab.dns_server}", lab.dns_name], check=True)
    return proc.stdout.strip()


def test_a_signed_update_moves_the_record_and_an_unsigned_one_is_refused(lab):
    target = lab.hosts["mail-dr"].public
    try:
        assert dns.rcode.to_text(_update(lab, target, signed=True).rcode()) == "NOERROR"
        assert _client_resolves(lab) == target
        refused = _update(lab, lab.hosts["mail-b"].public, signed=False)
        assert dns.rcode.to_text(refused.rcode()) == "REFUSED"
        assert _client_resolves(lab) == target
    finally:
        _update(lab, lab.shared_ip, signed=True)
    assert _client_resolves(lab) == lab.shared_ip


def test_status_tells_who_holds_the_shared_ip_and_prints_no_secret(lab):
    st = lab.status()
    assert st["shared_ip_holders"] == ["mail-a"]
    assert st["dns"]["resolves_to"] == lab.shared_ip
    assert {r["host"]: r["service"] for r in st["hosts"]} == {
        h: ("running" if h == "mail-a" else "stopped") for h in lab.hosts}
    proc = subprocess.run([f"{VENV_BIN}/crctl", "lab", "status", "--name", lab.name],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "held by mail-a" in proc.stdout
    assert lab.tsig_secret() not in proc.stdout + proc.stderr


def test_up_again_is_idempotent_and_a_different_plan_is_a_clear_error(lab):
    again = Lab.up(name=lab.name, base=lab.plan.base)
    assert again.hosts == lab.hosts
    with pytest.raises(LabError, match="already up"):
        Lab.up(name=lab.name, base=lab.plan.base, secondaries=2)


def test_sites_talk_through_the_router_and_no_route_leaves_the_lab(lab):
    from .helpers import tcp_from

    dr = lab.hosts["mail-dr"]
    assert tcp_from(lab, "client", dr.public, 22), "client cannot reach site-b's public net"
    assert tcp_from(lab, "mail-a", dr.cluster, 22), "site-a cannot reach site-b's cluster net"
    hops = lab.run_on("mail-a", ["ip", "route", "get", dr.cluster], check=True).stdout
    assert f"via {lab.plan.net('acl').router_address}" in hops
    for node in ("mail-a", "mail-dr", "client", "dns", "router"):
        out = lab.run_on(node, ["ip", "route", "get", "192.0.2.1"])
        assert out.returncode != 0 and "unreachable" in out.stderr, f"{node} has a way out: {out.stdout}"
