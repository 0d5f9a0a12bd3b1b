"""The pure part of continuous replication: watch lines, batches, freshness, rsync argv."""

from __future__ import annotations

import subprocess

from cr_orchestrator.act.sync import continuous, rsync

ROOT = "/srv/mail/Maildir"


def test_watch_lines_become_relative_paths_and_the_rest_is_told_apart():
    p = continuous.parse_line
    assert p("Watches established.\n", ROOT).kind == "ready"
    assert p("Setting up watches.  Beware: since -r was given, this may take a while!",
             ROOT).kind == "noise"
    assert p(f"CREATE {ROOT}/new/1.M2P3.mail-a\n", ROOT) == continuous.Change(
        "path", "new/1.M2P3.mail-a")
    # a name with spaces keeps them: only the first space ends the event names
    assert p(f"MOVED_TO {ROOT}/cur/a b:2,S", ROOT).path == "cur/a b:2,S"
    assert p(f"CLOSE_WRITE,CLOSE {ROOT}/.Sent/cur/x", ROOT).path == ".Sent/cur/x"
    assert p("Q_OVERFLOW ", ROOT).kind == "overflow"
    gone = p(f"MOVED_FROM,ISDIR {ROOT}/.Trash", ROOT)
    assert gone.kind == "full" and ".Trash" in gone.why
    assert p(f"CREATE,ISDIR {ROOT}/.New", ROOT).kind == "path"
    assert p("CREATE /srv/other/x", ROOT).kind == "noise"


def test_a_batch_is_due_batch_seconds_after_its_first_path_whatever_follows():
    batch = continuous.Batch(0.5)
    assert not batch.due(100.0) and batch.wait_s(100.0, 0.25) == 0.25
    batch.add("new/a", 100.0)
    batch.add("new/b", 100.4)
    batch.add("new/a", 100.45)
    assert not batch.due(100.49)
    assert abs(batch.wait_s(100.2, 0.25) - 0.3) < 1e-9
    assert batch.due(100.5)
    assert batch.take() == ["new/a", "new/b"]
    assert batch.first_at is None and not batch.due(200.0)


def test_freshness_advances_only_while_the_watch_covers_the_last_full_pass():
    ok, why = continuous.may_advance_freshness(watching_since=100.0, target_fresh_from=101.0)
    assert ok, why
    ok, why = continuous.may_advance_freshness(watching_since=105.0, target_fresh_from=101.0)
    assert not ok and "4.0 s after the target's last full pass" in why
    assert not continuous.may_advance_freshness(watching_since=None, target_fresh_from=1.0)[0]
    assert not continuous.may_advance_freshness(watching_since=1.0, target_fresh_from=None)[0]


def test_a_batch_goes_through_the_fence_and_deletes_what_is_gone(tmp_path):
    argv = continuous.files_from_argv(
        source_path=ROOT, target_user="root", target_address="10.0.0.2", target_path=ROOT,
        cluster="mail", epoch=4, inner_ssh=["-p", "22"], excludes=("tmp/*",))
    assert argv[:6] == ["rsync", "-a", "--from0", "--files-from=-", "--delete-missing-args",
                        "--mkpath"]
    fence = next(a for a in argv if a.startswith("--rsync-path="))
    assert "this sync carries epoch 4" in fence
    assert argv[-2:] == [ROOT + "/", "root@10.0.0.2:" + ROOT + "/"]
    assert argv[argv.index("--exclude") + 1] == "tmp/*"
    # the same options, run locally: a new file arrives, a moved one leaves its old name
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "cur").mkdir(parents=True)
    (dst / "new").mkdir(parents=True)
    (dst / "new" / "m1").write_text("old place")
    (src / "cur" / "m1:2,S").write_text("new place")
    local = [a for a in argv[:-2] if not a.startswith("--rsync-path") and a not in ("-e",)
             and not a.startswith("ssh ")]
    done = subprocess.run([*local, f"{src}/", f"{dst}/"], capture_output=True, text=True,
                          input=continuous.stdin_of(["new/m1", "cur/m1:2,S"]))
    assert done.returncode in rsync.TOLERATED_CODES, done.stderr
    assert not (dst / "new" / "m1").exists()
    assert (dst / "cur" / "m1:2,S").read_text() == "new place"
