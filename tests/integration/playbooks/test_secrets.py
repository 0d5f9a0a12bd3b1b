"""No secret in a run's record: the TSIG key (RFC 2136 update) and a WinRM password stay
in the inventory and never reach the artifacts."""

from __future__ import annotations

import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from cr_orchestrator.act.playbook_runner import run_playbook

pytestmark = pytest.mark.lab


class _RejectingWsMan(BaseHTTPRequestHandler):
    """A WinRM endpoint that rejects every login (Basic): the password is sent, and refused."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def wsman_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RejectingWsMan)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_artifacts_hold_neither_the_tsig_key_nor_the_winrm_password(lab, orders, tmp_path, wsman_port):
    password = f"Winrm-{uuid.uuid4().hex}"
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    shutil.copy(lab.inventory_path, inventory / "hosts.yml")
    # A Windows member of a second cluster, with its password in the inventory; its WinRM
    # endpoint (a local stand-in) receives the password and rejects it.
    (inventory / "windows.yml").write_text(yaml.safe_dump({"all": {"children": {"cr_cluster_web": {
        "hosts": {"web-1": {"ansible_host": "127.0.0.1", "cr_site": "site-a",
                            "ansible_connection": "winrm", "ansible_user": "Administrator",
                            "ansible_password": password, "ansible_port": wsman_port, "ansible_winrm_scheme": "http",
                            "ansible_winrm_transport": "basic",
                            "ansible_winrm_operation_timeout_sec": 3,
                            "ansible_winrm_read_timeout_sec": 5}},
        "vars": {"cr_cluster": "web", "cr_members": {"web-1": {"role": "primary"}},
                 "cr_services": [{"name": "W3SVC", "checks": [{"http": 80}]}],
                 "cr_switch": {"dns": {"zone": "lab.test.", "record": "web", "server": "198.18.32.53",
                                       "ttl": 5, "provider": "rfc2136"}}}}}}}))

    dns = run_playbook(playbook="switch_dns", inventory=inventory, timeout_s=120, extravars={
        "cr_cluster": "mail", "cr_epoch": orders.next_epoch(), "cr_new_primary": "mail-a"})
    assert dns.ok, dns.summary  # the TSIG-signed update was made
    windows = run_playbook(playbook="service", inventory=inventory, timeout_s=120, extravars={
        "cr_cluster": "web", "cr_service_hosts": "web-1", "cr_service_action": "status"})
    assert not windows.ok and "web-1" in windows.summary
    assert "credentials were rejected" in windows.summary  # the password was sent

    secrets = {"TSIG key": lab.tsig_secret(), "WinRM password": password}
    for result in (dns, windows):
        files = [f for f in Path(result.artifact_dir).rglob("*") if f.is_file()]
        assert any(f.parent.name == "job_events" for f in files)  # the record is there
        for f in files:
            text = f.read_text(errors="replace")
            for what, secret in secrets.items():
                assert secret not in text, f"{what} found in {f}"
        for secret in secrets.values():
            assert secret not in result.summary
