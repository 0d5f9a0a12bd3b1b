"""The operator's view of a failover, end to end in the lab: the web console in real
headless Chromium, Prometheus scraping /metrics, and notifications by webhook and mail.

`crctl run` drives cluster `mail` (fast profile); `crctl serve` serves the console,
/metrics and the notifier. The inventory's cr_notify names a webhook receiver, an SMTP
sink and a receiver that hangs (accepts, never answers). The page shows mail-a primary;
mail-a crashes; without a reload the page shows mail-b primary and the promotion in the
timeline; Prometheus saw cr_cluster_primary move; the webhook and the mail each got one
failover notification, and the failover finished while the hanging receiver was still
holding the notifier's tries. mail-a returns and is resynced; a switchover back through
the page is refused without the token and done with it (history says who).

Run: CR_LAB_NAME=con CR_LAB_BASE=198.18.16.0/20 pytest -m lab tests/scenarios/test_console_mail.py
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from console_kit import HangingReceiver, Prometheus, Serve, SmtpSink, WebhookReceiver, chromium
from scenario_kit import (  # noqa: F401 - split_brain_watch is a fixture
    running_orchestrator, scenario_inventory, shared_ip_holder, split_brain_watch, wait_for,
)
from selenium.webdriver.common.by import By

from cr_orchestrator.notify.notifier import Retry
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.lab
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


def _text(driver, css: str) -> str:
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except Exception:  # redrawn between find and read: ask again next poll
        return ""


def _host_class(driver, host: str) -> str:
    try:
        return driver.find_element(By.CSS_SELECTOR, f'.host[data-host="{host}"]').get_attribute("class")
    except Exception:
        return ""


def _switchover(driver, *, to: str, token: str | None, operator: str) -> str:
    """Click Switchover…, read the confirmation, confirm; returns the result line."""
    driver.find_element(By.CSS_SELECTOR, 'button[data-command="switchover"]').click()
    wait_for(lambda: driver.find_element(By.ID, "confirm").is_displayed(), 60,
             "the confirmation with what decide says", every_s=0.2)
    assert _text(driver, "#confirm-decide"), "the confirmation shows no decision"
    Select(driver.find_element(By.ID, "confirm-target")).select_by_value(to)
    driver.find_element(By.ID, "operator").clear()
    driver.find_element(By.ID, "operator").send_keys(operator)
    driver.find_element(By.ID, "token").clear()
    if token:
        driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "confirm-go").click()
    return wait_for(lambda: (r := _text(driver, "#result")) and not r.endswith("running…") and r,
                    240, "the switchover's answer", every_s=0.3)


def test_console_metrics_and_notifications_follow_a_failover(lab, split_brain_watch, tmp_path):
    hook, hanging, smtp = WebhookReceiver(), HangingReceiver(), SmtpSink()
    notify = {"webhooks": [{"url": hook.url}, {"url": hanging.url}],
              "smtp": {"server": "127.0.0.1", "port": smtp.port, "from": "cr@lab.test",
                       "to": ["ops@lab.test"]},
              "events": ["failover", "switchover"]}  # the other kinds: test_notifier.py
    inventory = scenario_inventory(lab, tmp_path, cr_notify=notify)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    serve = prometheus = None
    try:
        with running_orchestrator(lab, inventory) as orchestrator, chromium() as driver:
            state = orchestrator.state
            serve = Serve(orchestrator, tmp_path)
            prometheus = Prometheus(tmp_path, f"127.0.0.1:{serve.port}")
            started = time.time()
            orchestrator.settle()

            # The page shows the cluster with mail-a primary and up.
            driver.get(f"{serve.url}/cluster/mail")
            wait_for(lambda: _text(driver, "#primary-mail") == "mail-a"
                     and " up" in _host_class(driver, "mail-a"), 30,
                     "the page to show mail-a primary and up", every_s=0.3)
            assert "PRIMARY" in _text(driver, '.host[data-host="mail-a"]')
            assert lab.shared_ip in _text(driver, "#cluster-mail")
            driver.save_screenshot(str(shots / "1-mail-a-primary.png"))
            driver.execute_script("window.__notReloaded = true;")

            # mail-a crashes; the page follows without a reload.
            crashed_at = time.time()
            lab.fail("mail-a", "crash")
            wait_for(lambda: _text(driver, "#primary-mail") == "mail-b", 120,
                     "the page to show mail-b primary", every_s=0.3)
            promoted_seen = time.time()
            wait_for(lambda: any("mail-b promoted" in li.text for li in driver.find_elements(
                By.CSS_SELECTOR, "#timeline li.ev-promotion")), 30,
                "the promotion in the page's timeline", every_s=0.3)
            assert driver.execute_script("return window.__notReloaded === true;")
            assert state.primary("mail") == "mail-b"
            wait_for(lambda: " down" in _host_class(driver, "mail-a"), 30,
                     "mail-a drawn down", every_s=0.3)

            # The failover finished (playbook ok) while the hanging receiver held the
            # notifier's tries: the worker never waits for a receiver.
            failover = wait_for(lambda: [e for e in state.events("mail", count=1000)
                                         if e.kind == "playbook" and e.data["playbook"] == "failover"],
                                120, "the failover playbook")[-1]
            assert failover.data["ok"], failover.data
            wait_for(lambda: "change running" not in _text(driver, "#cluster-mail")
                     and " up" in _host_class(driver, "mail-b"), 30,
                     "the page to show the change over and mail-b up", every_s=0.3)
            driver.save_screenshot(str(shots / "2-mail-b-primary-after-failover.png"))
            promotion = next(e for e in state.events("mail", count=1000) if e.kind == "promotion")
            wait_for(lambda: hook.kinds().count("failover") == 1, 30,
                     "the failover webhook", every_s=0.2)
            wait_for(lambda: any("failover" in m["subject"] for m in smtp.messages), 30,
                     "the failover mail", every_s=0.2)
            wait_for(lambda: hanging.tries("failover"), 30, "a try at the hanging receiver",
                     every_s=0.2)
            hung = hanging.tries("failover")
            got_at, body = next((t, b) for t, b in hook.received if b["kind"] == "failover")
            print(f"crash -> promotion {promotion.at - crashed_at:.1f} s, promotion -> failover "
                  f"playbook done {failover.at - promotion.at:.1f} s (page showed mail-b "
                  f"{promoted_seen - crashed_at:.1f} s after the crash); webhook got it "
                  f"{got_at - promotion.at:.2f} s after the promotion; the hanging "
                  f"receiver's first try at +{hung[0] - promotion.at:.2f} s, "
                  f"{len(hung)} tries so far")
            # When the failover ended, the notifier was midway through its tries of the
            # hanging receiver (each held for the whole timeout): the failover did not
            # wait for them, nor did the other receivers.
            tries_then = [t for t in hung if t <= failover.at]
            assert tries_then and len(tries_then) < Retry().attempts, (tries_then, failover.at)
            assert got_at < hung[0] + Retry().timeout_s
            assert body["cluster"] == "mail" and body["event"]["new_primary"] == "mail-b"
            assert "mail-a down" in body["text"] or "mail-a" in body["text"], body
            mail = next(m for m in smtp.messages if "failover" in m["subject"])
            assert mail["to"] == ["ops@lab.test"] and "mail-b" in mail["subject"]

            # Prometheus saw cr_cluster_primary move from mail-a to mail-b.
            def moved() -> bool:
                series = prometheus.query_range('cr_cluster_primary{cluster="mail"}', started,
                                                time.time())
                by_host = {s["metric"]["host"]: [float(v) for _, v in s["values"]] for s in series}
                a, b = by_host.get("mail-a", []), by_host.get("mail-b", [])
                return bool(a and b and a[0] == 1 and a[-1] == 0 and b[0] == 0 and b[-1] == 1)
            wait_for(moved, 30, "prometheus to see cr_cluster_primary move", every_s=1)
            epochs = prometheus.query_range('cr_cluster_epoch{cluster="mail"}', started, time.time())
            assert [float(v) for _, v in epochs[0]["values"]][-1] == 1.0

            # mail-a returns (manual start: not serving) and is resynced as a secondary.
            healed_at = time.time()
            lab.heal("mail-a")
            wait_for(lambda: orchestrator.synced_since("mail-a", healed_at), 120,
                     "mail-a to be resynced", every_s=0.3)
            wait_for(lambda: (state.last_decision("mail") or {}).get("action") == "none", 60,
                     "the cluster to settle", every_s=0.3)

            # Switchover back through the page: refused without the token, done with it.
            refused = _switchover(driver, to="mail-a", token=None, operator="mallory")
            assert refused.startswith("refused: the console token is missing or wrong"), refused
            assert state.primary("mail") == "mail-b"
            assert serve.token not in refused
            driver.save_screenshot(str(shots / "3-refused-without-token.png"))
            done = _switchover(driver, to="mail-a", token=serve.token, operator="alice")
            assert done.startswith("switchover of mail from mail-b to mail-a done (epoch 2)"), done
            assert state.primary("mail") == "mail-a", done
            wait_for(lambda: _text(driver, "#primary-mail") == "mail-a", 30,
                     "the page to show mail-a primary again", every_s=0.3)
            wait_for(lambda: shared_ip_holder(lab) == ["mail-a"], 60, "the shared IP on mail-a",
                     every_s=0.3)
            driver.save_screenshot(str(shots / "4-switched-back.png"))
            asked = [e for e in state.events("mail", count=1000) if e.kind == "operator"
                     and e.data.get("via") == "console"]
            assert [e.data["by"].split(" ")[0] for e in asked] == ["alice"], asked  # not mallory
            assert "via console from 127.0.0.1" in asked[0].data["by"]
            wait_for(lambda: hook.kinds().count("switchover") == 1, 60,
                     "the switchover webhook", every_s=0.2)

            # The failover's playbook run, task by task, from its link in the timeline.
            driver.get(f"{serve.url}/cluster/mail/run/{failover.id}")
            rows = {tuple(td.text for td in tr.find_elements(By.TAG_NAME, "td"))[:3]
                    for tr in driver.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr")}
            assert any(task.startswith("Take the primary role") and host == "mail-b"
                       and result == "changed" for task, host, result in rows), rows
            driver.save_screenshot(str(shots / "5-failover-tasks.png"))

            # One notification per failover and per switchover; no secret in them.
            time.sleep(2)
            assert hook.kinds().count("failover") == 1, hook.kinds()
            assert sum("failover" in m["subject"] for m in smtp.messages) == 1, smtp.messages
            for _, sent in hook.received:
                assert lab.tsig_secret() not in str(sent) and serve.token not in str(sent)
            page = driver.page_source
            assert serve.token not in page
            assert serve.token not in serve.log.read_text()
            assert "Traceback" not in serve.log.read_text(), serve.log.read_text()[-3000:]
    finally:
        if serve is not None:
            serve.stop()
        if prometheus is not None:
            prometheus.stop()
        hook.close()
        hanging.close()
        smtp.close()
    if os.environ.get("CR_DOCS_SCREENSHOT") == "1":  # refresh the README's picture
        shutil.copy(shots / "2-mail-b-primary-after-failover.png", DOCS_SCREENSHOT)
