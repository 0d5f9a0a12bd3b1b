"""The Windows continuous window against the WS-Man test server, through the real client.

The server cannot run PowerShell (the script's grammar is checked in
tests/unit/test_powershell_grammar.py): it answers the window with the JSON lines a
real host prints, so this proves what is sent and how the lines become freshness.
"""

from __future__ import annotations

import dataclasses
import json
import re

from cr_orchestrator.act.sync.plan import plan_sync
from cr_orchestrator.act.sync.windows_continuous import run_window
from cr_orchestrator.testworld.wsman_sim import Reply

from .test_windows_sim import sim_a, topology  # noqa: F401 - the fixture is used by name

WINDOW = re.compile(r"FileSystemWatcher")


def continuous_topology(sim):
    topo = topology({"mail-a": sim})
    cluster = topo.clusters["mail"]
    rs = dataclasses.replace(cluster.replica_sets[0], continuous=True, batch_s=0.5, every_s=300)
    return dataclasses.replace(topo, clusters={"mail": dataclasses.replace(cluster, replica_sets=(rs,))})


def lines(*rows) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_a_window_copies_batches_and_advances_freshness_past_the_full_pass(sim_a, store):  # noqa: F811
    topo = continuous_topology(sim_a)
    sim_a.register(WINDOW, Reply(stdout=lines(
        {"step": "ready", "at": 1000.0, "root": r"D:\MDaemon", "epoch": 4},
        {"step": "batch", "host": "mail-b", "cut": 1010.5, "ok": True, "dirs": 2, "rc": 1},
        {"step": "batch", "host": "mail-b", "cut": 1011.0, "ok": True, "dirs": 1, "rc": 1},
        {"step": "batch", "host": "mail-dr", "cut": 1011.0, "ok": False, "dirs": 0,
         "reason": "cr-orchestrator: refused: this batch carries epoch 4 but mail-dr was "
                   "promoted at epoch 5"},
        {"step": "window-end", "at": 1300.0, "code": 0})))
    for host in ("mail-b", "mail-dr"):  # the periodic full pass ran after the watch began
        store.record_success(cluster="mail", set_name="maildata", host=host, source="mail-a",
                             epoch=4, started_at=1005.0, ended_at=1008.0, bytes_sent=1, files=1)
    plan = plan_sync(topology=topo, cluster="mail", replica_set="maildata", source="mail-a")
    report = run_window(topology=topo, plan=plan, epoch=4, store=store, window_s=300,
                        clock=lambda: 1300.0)
    assert report.end_code == 0 and not report.needs_full_pass and report.error is None
    script = sim_a.commands[-1].script
    assert "$epoch = 4" in script and "Start-Sleep -Milliseconds 500" in script
    assert r"'\\10.0.1.12\D$\MDaemon'" in script and r"'\\10.0.1.13\E$\DR\MDaemon'" in script
    assert r"'\\10.0.1.13\C$\ProgramData\cr-orchestrator\mail.epoch'" in script
    assert "'/XF', '*.tmp'" in script and "pw" not in script.replace("Stop", "")
    b = store.get(cluster="mail", set_name="maildata", host="mail-b", now=1300.0)
    assert (b.last_success_started_at, b.last_success_epoch, b.last_error) == (1011.0, 4, None)
    dr = store.get(cluster="mail", set_name="maildata", host="mail-dr", now=1300.0)
    assert dr.last_success_started_at == 1005.0  # not advanced by a refused batch
    assert "promoted at epoch 5" in dr.last_error and dr.consecutive_failures == 1


def test_a_window_that_began_after_the_last_full_pass_does_not_vouch_for_the_gap(sim_a, store):  # noqa: F811
    topo = continuous_topology(sim_a)
    sim_a.register(WINDOW, Reply(stdout=lines(
        {"step": "ready", "at": 1000.0, "root": r"D:\MDaemon", "epoch": 4},
        {"step": "batch", "host": "mail-b", "cut": 1010.5, "ok": True, "dirs": 2, "rc": 1},
        {"step": "overflow", "at": 1012.0},
        {"step": "window-end", "at": 1012.0, "code": 4}), rc=4))
    store.record_success(cluster="mail", set_name="maildata", host="mail-b", source="mail-a",
                         epoch=4, started_at=900.0, ended_at=950.0, bytes_sent=1, files=1)
    plan = plan_sync(topology=topo, cluster="mail", replica_set="maildata", source="mail-a")
    report = run_window(topology=topo, plan=plan, epoch=4, store=store, window_s=300)
    assert report.needs_full_pass  # the watcher's buffer overflowed
    # changes between 900 (the full pass) and 1000 (the watch) were seen by nobody
    b = store.get(cluster="mail", set_name="maildata", host="mail-b")
    assert b.last_success_started_at == 900.0
