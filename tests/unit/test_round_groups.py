"""The parts of a group's tick that need no lab: the host script of several clusters run
by a real ``sh``, records that name their cluster, and the gathering of renewals."""

from __future__ import annotations

import subprocess
import threading
import time

from cr_orchestrator.act import lease as act_lease
from cr_orchestrator.act.lease import NOT_WRITTEN, RenewalBatch, RenewalOrder, Renewal
from cr_orchestrator.decide.snapshot import latest_records
from cr_orchestrator.model import Host, Platform, Service, ServiceControl
from cr_orchestrator.observe import linux_host
from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
from cr_orchestrator.observe.shared import tag_records


def _run(script: str) -> str:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                          timeout=10).stdout


def test_one_script_reports_each_clusters_part_with_its_own_services_and_records(tmp_path):
    (tmp_path / "one.epoch").write_text("5\n")
    (tmp_path / "one.role").write_text("primary 5")
    (tmp_path / "two.epoch").write_text('7"}, "x": {')  # what no record holds
    up = Service("up", (), ServiceControl("true", "true", "exit 0"))
    down = Service("down", (), ServiceControl("true", "true", "exit 3"))
    parts = [linux_host.HostPart([up], [str(tmp_path)],
                                 (str(tmp_path / "one.epoch"), str(tmp_path / "one.role"))),
             linux_host.HostPart([down], [], (str(tmp_path / "two.epoch"),
                                              str(tmp_path / "two.role")))]
    out = _run(linux_host.build_parts_script(parts))
    one, two = (linux_host.parse_report(t) for t in linux_host.split_parts(out, 2))
    assert one["services"] == {"up": {"rc": 0, "state": ""}} and str(tmp_path) in one["paths"]
    assert one["records"] == {"epoch": "5", "role": "primary 5"}
    assert two["services"] == {"down": {"rc": 3, "state": ""}} and two["paths"] == {}
    # junk in a record file reads as malformed (""), the JSON stays whole
    assert two["records"] == {"epoch": "", "role": None}
    assert one["boot_time"] == two["boot_time"] > 0
    # the script of one cluster alone reports the same
    alone = linux_host.parse_report(_run(linux_host.build_host_script(
        services=[up], data_paths=[str(tmp_path)],
        record_files=(str(tmp_path / "one.epoch"), str(tmp_path / "one.role")))))
    assert alone["records"] == one["records"] and alone["services"] == one["services"]


def test_a_part_that_printed_nothing_is_unusable_not_another_clusters():
    text = "CRPART 0\n{\"v\":1}\nCRPART 1\nCRPART 7\n{\"v\":1,\"x\":2}\n"
    assert linux_host.split_parts(text, 2) == ['{"v":1}\n', ""]


def _host_obs(host: str, records: dict, at: float) -> Observation:
    return Observation(host, ORCHESTRATOR, "host", Health.OK, at, 0.01,
                       detail={"records": records})


def test_a_round_reads_only_its_own_clusters_records_of_a_shared_host():
    mine = tag_records([_host_obs("h", {"epoch": "3", "role": "primary 3"}, 1.0)], "mail")
    theirs = tag_records([_host_obs("h", {"epoch": "9", "role": "secondary 9"}, 2.0)], "web")
    found = latest_records(cluster="mail", observations=mine + theirs)
    assert found["h"].epoch == 3  # web's newer probe of h says nothing of mail
    assert latest_records(cluster="web", observations=mine + theirs)["h"].epoch == 9
    # a probe stored before records named their cluster still counts
    untagged = [_host_obs("h", {"epoch": "4", "role": "primary 4"}, 3.0)]
    assert latest_records(cluster="mail", observations=mine + untagged)["h"].epoch == 4


HOST = Host("h", "site-a", Platform.LINUX, "198.18.0.1", "198.18.0.1", "198.18.0.1")


def test_renewals_of_one_host_are_gathered_into_one_command(monkeypatch):
    sent: list[list[str]] = []

    def send(*, host, orders, deadline_s):
        sent.append([o.cluster for o in orders])
        return [Renewal(host.name, True, None, f"renewed {o.cluster}") for o in orders]

    monkeypatch.setattr(act_lease, "send_renewals", send)
    batch = RenewalBatch({"h": {"a", "b", "c"}}, gather_s=5.0)
    got: dict[str, Renewal] = {}

    def renew(name: str, delay: float) -> None:
        time.sleep(delay)
        got[name] = batch.send(host=HOST, order=RenewalOrder(name, 1, 3.8, False),
                               deadline_s=1.0)

    threads = [threading.Thread(target=renew, args=(n, d))
               for n, d in (("a", 0.0), ("b", 0.1), ("c", 0.2))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the first waited for the two others, not for its 5 s gathering limit
    assert time.monotonic() - started < 2.0
    assert sent == [["a", "b", "c"]]
    assert {n: r.detail for n, r in got.items()} == {n: f"renewed {n}" for n in "abc"}


def test_a_round_without_renewal_does_not_hold_the_others(monkeypatch):
    sent: list[list[str]] = []
    monkeypatch.setattr(act_lease, "send_renewals", lambda *, host, orders, deadline_s: (
        sent.append([o.cluster for o in orders])
        or [Renewal(host.name, True, None, "") for _ in orders]))
    batch = RenewalBatch({"h": {"a", "b"}}, gather_s=5.0)
    threading.Timer(0.1, batch.over, args=("b",)).start()  # b's round renews nothing
    started = time.monotonic()
    batch.send(host=HOST, order=RenewalOrder("a", 1, 3.8, False), deadline_s=1.0)
    assert time.monotonic() - started < 2.0 and sent == [["a"]]
    # a latecomer (expected nowhere) waits for nobody: sent at once, on its own
    batch.send(host=HOST, order=RenewalOrder("z", 1, 3.8, False), deadline_s=1.0)
    assert sent == [["a"], ["z"]]


def test_gathered_renewals_script_says_which_part_was_not_written(tmp_path):
    script = act_lease.linux_renewals_script([RenewalOrder("one", 2, 3.8, False),
                                              RenewalOrder("two", 2, 3.8, True)])
    script = script.replace(act_lease.FENCE_DIR_LINUX, str(tmp_path))
    # two's lease cannot be written: its file aside is in a directory nobody made
    script = script.replace(f"{tmp_path}/two.lease", f"{tmp_path}/missing/two.lease")
    parts = linux_host.split_parts(_run(script), 2)
    one, two = (act_lease._part_answer("h", p) for p in parts)
    assert one.renewed and (tmp_path / "one.lease").read_text().split()[0] == "2"
    assert not two.renewed and two.detail.startswith("renewal not written: exit")
    assert NOT_WRITTEN in parts[1]
