"""Maildir reconciliation: the pure merge plan, and the fence's merge mode with a real rsync."""

from __future__ import annotations

import subprocess

import pytest
from fence_kit import RECORDS_DIR, fence_records, local_ssh

from cr_orchestrator.act.sync import rsync
from cr_orchestrator.act.sync.merge import message_dirs, plan_maildir_merge, summarize_reasons

# (quarantined on the old primary, present on the new primary) -> (merged, left with reason)
CASES = {
    "unique new mail goes back to new/": (
        ["new/1.a.host"], [], ["new/1.a.host"], []),
    "unique seen mail goes back to cur/ with its flags": (
        ["cur/1.a.host:2,S"], ["new/2.b.host"], ["cur/1.a.host:2,S"], []),
    "same unique name under other flags is not duplicated": (
        ["cur/1.a.host:2,RS"], ["cur/1.a.host:2,S"], [],
        [("cur/1.a.host:2,RS", "already on the primary as cur/1.a.host:2,S (other flags)")]),
    "new/ on one side, cur/ on the other: same message": (
        ["new/1.a.host"], ["cur/1.a.host:2,S"], [],
        [("new/1.a.host", "already on the primary as cur/1.a.host:2,S (other flags)")]),
    "names without a colon are whole unique names": (
        ["new/1.a", "new/1.a.b"], ["new/1.a"], ["new/1.a.b"], []),
    "dotfiles and tmp/ are never merged": (
        ["new/.1.a.XyZ", "tmp/1.a.host", "dovecot-uidlist"], [], [],
        [("dovecot-uidlist", "not a Maildir message (not directly in new/ or cur/)"),
         ("new/.1.a.XyZ", "a hidden or temporary file, not a message"),
         ("tmp/1.a.host", "in tmp/: a delivery that never completed")]),
    "the message quarantined twice is merged once (cur/ wins)": (
        ["new/1.a.host", "cur/1.a.host:2,S"], [], ["cur/1.a.host:2,S"],
        [("new/1.a.host", "another copy of the message (cur/1.a.host:2,S) is merged")]),
    "each Maildir of a multi-mailbox set is its own namespace": (
        ["u1/Maildir/new/1.a", "u2/Maildir/new/1.a"], ["u1/Maildir/cur/1.a:2,"],
        ["u2/Maildir/new/1.a"],
        [("u1/Maildir/new/1.a", "already on the primary as u1/Maildir/cur/1.a:2, (other flags)")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_which_quarantined_messages_are_merged(case):
    quarantined, present, merged, left = CASES[case]
    plan = plan_maildir_merge(quarantined, present)
    assert list(plan.merge) == merged
    assert list(plan.left) == left


def test_an_identical_entry_is_neither_merged_nor_left():
    """Already merged by an earlier (interrupted) run: the rerun copies nothing."""
    plan = plan_maildir_merge(["cur/1.a:2,S", "new/2.a"], ["cur/1.a:2,S"])
    assert plan.merge == ("new/2.a",) and plan.identical == ("cur/1.a:2,S",) and plan.left == ()


def test_only_the_touched_maildirs_are_listed_on_the_primary():
    assert message_dirs(["new/1", "cur/2:2,S"]) == ("new", "cur")
    assert message_dirs(["u/Maildir/new/1", "x/tmp/3"]) == ("u/Maildir/new", "u/Maildir/cur")


def test_reasons_are_counted_with_the_flag_variants_folded():
    left = [("a", "already on the primary as x (other flags)"),
            ("b", "already on the primary as y (other flags)"), ("c", "in tmp/: x")]
    assert summarize_reasons(left) == {"already on the primary (other flags)": 2, "in tmp/: x": 1}


def _merge(tmp_path, files: list[str], *, epoch: int, role: str | None, record: str | None):
    """A real merge rsync through the fence's merge mode (records under tmp_path, the
    "ssh" runs the receiving side locally)."""
    records = fence_records(tmp_path, role=role, epoch=record, synced="1")
    argv = rsync.merge_argv(quarantine_dir=str(tmp_path / "q"), target_user="root",
                            target_address="x", target_path=str(tmp_path / "live"),
                            cluster="mail", epoch=epoch, inner_ssh=[])
    argv = [a.replace(RECORDS_DIR, str(records)) for a in argv]
    argv[argv.index("-e") + 1] = local_ssh(tmp_path)
    done = subprocess.run(argv, input="".join(f"{f}\0" for f in files), capture_output=True,
                          text=True)
    return done, {p.name: p.read_text().strip() for p in records.iterdir()}


def _maildirs(tmp_path):
    for base in ("q", "live"):
        for sub in ("new", "cur", "tmp"):
            (tmp_path / base / sub).mkdir(parents=True, exist_ok=True)
    (tmp_path / "q" / "new" / "1.only-a").write_text("mail A took alone")
    (tmp_path / "q" / "cur" / "2.only-a:2,S").write_text("seen on A")
    (tmp_path / "q" / "cur" / "3.both:2,S").write_text("A's copy")
    (tmp_path / "live" / "cur" / "3.both:2,S").write_text("the primary's copy")
    (tmp_path / "live" / "new" / "4.only-b").write_text("mail B took")


def test_a_merge_into_the_live_primary_adds_files_and_flips_nothing(tmp_path):
    _maildirs(tmp_path)
    for sub in ("", "new", "cur"):  # the live Maildir belongs to the MTA, the quarantine not
        (tmp_path / "live" / sub).chmod(0o700)
        (tmp_path / "q" / sub).chmod(0o755)
    files = ["new/1.only-a", "cur/2.only-a:2,S", "cur/3.both:2,S"]
    done, records = _merge(tmp_path, files, epoch=2, role="primary 2", record="2")
    assert done.returncode == 0, done.stderr
    live = tmp_path / "live"
    assert (live / "new" / "1.only-a").read_text() == "mail A took alone"
    assert (live / "cur" / "2.only-a:2,S").read_text() == "seen on A"
    assert (live / "cur" / "3.both:2,S").read_text() == "the primary's copy"  # never overwritten
    assert (live / "new" / "4.only-b").exists()  # nothing deleted
    assert sorted(rsync.parse_merged(done.stdout)) == ["cur/2.only-a:2,S", "new/1.only-a"]
    assert records == {"mail.role": "primary 2", "mail.epoch": "2", "mail.synced": "1"}
    assert not list(tmp_path.glob("live.cr-quarantine*"))  # no backup: nothing replaced
    for sub in ("", "new", "cur"):  # the MTA can still deliver
        assert (tmp_path / "live" / sub).stat().st_mode & 0o777 == 0o700, sub
    again, _ = _merge(tmp_path, files, epoch=2, role="primary 2", record="2")
    assert again.returncode == 0 and rsync.parse_merged(again.stdout) == []  # idempotent


@pytest.mark.parametrize("role, record, words", [
    ("primary 3", "3", "was promoted at epoch 3"),
    ("secondary 2", "2", "records 'secondary 2': not the primary to merge into"),
    ("primary 2", "two", "not a whole number"),
])
def test_the_merge_fence_refuses_a_stale_or_demoted_target(tmp_path, role, record, words):
    _maildirs(tmp_path)
    done, records = _merge(tmp_path, ["new/1.only-a"], epoch=2, role=role, record=record)
    assert done.returncode != 0 and rsync.FENCE_REFUSED in done.stderr and words in done.stderr
    assert not (tmp_path / "live" / "new" / "1.only-a").exists()
    assert records["mail.role"] == role and records["mail.synced"] == "1"


def test_pending_quarantine_listing_is_read_per_directory():
    from cr_orchestrator.act.sync.linux import parse_pending

    out = "/20260101T000000Z\0new/1.a\0cur/2.a:2,S\0/20260102T000000Z\0new/3.a\0"
    assert parse_pending(out, "/srv/m.cr-quarantine") == {
        "/srv/m.cr-quarantine/20260101T000000Z": ["new/1.a", "cur/2.a:2,S"],
        "/srv/m.cr-quarantine/20260102T000000Z": ["new/3.a"]}
    assert parse_pending("", "/q") == {}


def test_a_merge_is_recorded_with_its_counts_and_reasons():
    from cr_orchestrator.act.sync.plan import SyncReport, TargetResult

    t = TargetResult(host="mail-a", ok=True, bytes=1, files=1, duration_s=1.0, error=None,
                     merged=3, merge_left=(("q/cur/1:2,RS", "already on the primary as cur/1:2,S "
                                            "(other flags)"),), merge_dirs=("q",))
    report = SyncReport(cluster="mail", replica_set="maildata", source="mail-b", epoch=2,
                        started_at=0, ended_at=1, targets=(t,))
    [event] = [e for e in report.events() if e["kind"] == "sync.merge"]
    assert (event["merged"], event["left"], event["into"]) == (3, 1, "mail-b")
    assert event["left_reasons"] == {"already on the primary (other flags)": 1}
    assert "3 message(s) that mail-a took alone were merged into mail-b" in event["reason"]
    plain = TargetResult(host="mail-a", ok=True, bytes=1, files=1, duration_s=1.0, error=None)
    assert not [e for e in SyncReport(cluster="mail", replica_set="m", source="b", epoch=2,
                                      started_at=0, ended_at=1, targets=(plain,)).events()
                if e["kind"] == "sync.merge"]


def test_quarantine_listing_lines_are_parsed_and_garbage_skipped():
    from cr_orchestrator.act.sync.restore import parse_listing

    out = "20260101T000000Z\t12\t1767225600\t1\n20260102T000000Z-epoch-3\t0\t1767312000\t0\nbad\n"
    found = parse_listing(out, host="mail-a", replica_set="maildata", root="/srv/mail.cr-quarantine")
    assert [(q.directory, q.files, q.pending_merge) for q in found] == [
        ("/srv/mail.cr-quarantine/20260101T000000Z", 12, True),
        ("/srv/mail.cr-quarantine/20260102T000000Z-epoch-3", 0, False)]


def test_the_pending_listing_and_settle_scripts_on_a_real_quarantine(tmp_path):
    """The shell the old primary runs: list pending directories, then settle one."""
    from cr_orchestrator.act.sync.linux import PENDING_SCRIPT, SETTLE_SCRIPT, parse_pending
    from cr_orchestrator.act.sync.merge import PENDING_MARK, REPORT_FILE

    root = tmp_path / "Maildir.cr-quarantine"
    for rel in ("s1/new/1.a", "s1/cur/2.a:2,S", "s1/" + PENDING_MARK, "s2-epoch-3/new/9.a",
                "s3/" + PENDING_MARK):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    listed = subprocess.run(["bash", "-c", PENDING_SCRIPT, "pending", str(root), PENDING_MARK,
                             REPORT_FILE], capture_output=True, text=True, check=True)
    pending = parse_pending(listed.stdout, str(root))
    assert {k: sorted(v) for k, v in pending.items()} == {
        f"{root}/s1": ["cur/2.a:2,S", "new/1.a"], f"{root}/s3": []}  # s2: a fence backup
    stdin = "new/1.a\0\0cur/2.a:2,S\talready on the primary as new/2.a (other flags)\n"
    subprocess.run(["bash", "-c", SETTLE_SCRIPT, "settle", str(root / "s1"), PENDING_MARK,
                    REPORT_FILE], input=stdin, text=True, check=True)
    assert sorted(p.relative_to(root / "s1").as_posix() for p in (root / "s1").rglob("*")
                  if p.is_file()) == sorted(["cur/2.a:2,S", REPORT_FILE])
    assert "other flags" in (root / "s1" / REPORT_FILE).read_text()
    subprocess.run(["bash", "-c", SETTLE_SCRIPT, "settle", str(root / "s3"), PENDING_MARK,
                    REPORT_FILE], input="\0", text=True, check=True)
    assert not (root / "s3").exists()  # nothing was left in it: no empty directory
