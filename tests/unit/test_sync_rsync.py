"""rsync command lines, --stats and itemize parsing, snapshot commands (pure)."""

import shlex

import pytest
from fence_kit import RECORDS_DIR, fence_records, local_ssh

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.model import SshSettings
from cr_orchestrator.act.sync import rsync
from cr_orchestrator.act.sync.snapshot import SnapshotSpec, snapshot_commands

SSH = SshSettings(user="root", port=22, private_key_file="/var/lib/cr-lab/sy/id_ed25519")


def job(**kw):
    base = dict(source_path="/srv/mail/Maildir", target_user="root", target_address="198.18.65.12",
                target_path="/srv/dr/mail/Maildir/")
    return rsync.RsyncJob(**{**base, **kw})


def test_rsync_push_command_exact():
    inner = rsync.ssh_options(SSH)
    argv = rsync.rsync_argv(job(excludes=("tmp/", "*.lock"), checksum=True,
                                bandwidth_limit_kbps=8192), inner_ssh=inner)
    assert argv[:8] == ["rsync", "-a", "--delete", "--mkpath", "--timeout=60", "--stats",
                        "--checksum", "--bwlimit=1000"]
    assert argv[8:12] == ["--exclude", "tmp/", "--exclude", "*.lock"]
    assert argv[12] == "-e" and shlex.split(argv[13])[:3] == ["ssh", "-i", SSH.private_key_file]
    assert "UserKnownHostsFile=/dev/null" in argv[13] and "BatchMode=yes" in argv[13]
    assert argv[14:] == ["/srv/mail/Maildir/", "root@198.18.65.12:/srv/dr/mail/Maildir/"]


def test_remote_command_has_a_deadline_and_c_locale():
    text = rsync.remote_command(["rsync", "a b"], deadline_s=90.7)
    assert text == "LC_ALL=C timeout -k 5 90 rsync 'a b'"


def test_dry_run_itemizes_instead_of_stats():
    argv = rsync.rsync_argv(job(dry_run_itemize=True), inner_ssh=[])
    assert "--dry-run" in argv and "--out-format=%i %n" in argv and "--stats" not in argv


STATS = """
Number of files: 5,014 (reg: 5,000, dir: 14)
Number of created files: 120 (reg: 120)
Number of deleted files: 7 (reg: 7)
Number of regular files transferred: 130
Total file size: 10,240,000 bytes
Total transferred file size: 266,240 bytes
Literal data: 266,240 bytes
Matched data: 0 bytes
File list size: 65,482
File list generation time: 0.003 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 345,678
Total bytes received: 2,604

sent 345,678 bytes  received 2,604 bytes  696,564.00 bytes/sec
total size is 10,240,000  speedup is 29.40
"""


def test_stats_parsing():
    s = rsync.parse_stats(STATS)
    assert (s.files_total, s.files_transferred, s.files_deleted, s.bytes_sent,
            s.bytes_received, s.total_size) == (5014, 130, 7, 345678, 2604, 10240000)
    assert rsync.parse_stats("nothing").bytes_sent is None


def test_itemized_dry_run_lists_overwritten_and_deleted_files_only():
    out = "\n".join([">f+++++++++ new/100.msg", ">f.st...... cur/1.msg:2,S", "cd+++++++++ tmp/",
                     "*deleting   cur/2.msg:2,S", "*deleting   olddir/", ".d..t...... cur/",
                     ">f..t...... cur/3 with space.msg"])
    assert rsync.parse_itemized(out) == (["cur/1.msg:2,S", "cur/3 with space.msg"], ["cur/2.msg:2,S"])


@pytest.mark.parametrize("rc,words", [(0, "success"), (23, "partial"), (24, "vanished"),
                                      (124, "deadline"), (255, "ssh failed"), (77, "undocumented")])
def test_exit_codes(rc, words):
    assert words in rsync.describe_exit(rc)


def test_btrfs_snapshot_commands():
    c = snapshot_commands(SnapshotSpec(kind="btrfs", volume="/srv"), path="/srv/mail/Maildir",
                          run_id="r1")
    assert c.create == "btrfs subvolume snapshot -r /srv /srv/.cr-snapshot-r1"
    assert c.remove == "if [ -d /srv/.cr-snapshot-r1 ]; then btrfs subvolume delete /srv/.cr-snapshot-r1; fi"
    assert c.source_root == "/srv/.cr-snapshot-r1/mail/Maildir"


def test_lvm_snapshot_commands():
    c = snapshot_commands(SnapshotSpec(kind="lvm", volume="vg0/srv", mountpoint="/srv", size="2G",
                                       xfs=True), path="/srv/mail/Maildir", run_id="r1")
    assert c.create == ("lvcreate --snapshot --name cr-snap-r1 --size 2G vg0/srv && mkdir -p "
                        "/run/cr-orchestrator/snapshots/r1 && mount -o ro,nouuid /dev/vg0/cr-snap-r1 "
                        "/run/cr-orchestrator/snapshots/r1")
    assert "umount /run/cr-orchestrator/snapshots/r1" in c.remove and "lvremove -f vg0/cr-snap-r1" in c.remove
    assert c.source_root == "/run/cr-orchestrator/snapshots/r1/mail/Maildir"


def test_snapshot_of_a_path_outside_the_volume_is_refused():
    with pytest.raises(ConfigError, match="not inside"):
        snapshot_commands(SnapshotSpec(kind="btrfs", volume="/data"), path="/srv/x", run_id="r")
    with pytest.raises(ConfigError, match="not btrfs or lvm"):
        snapshot_commands(SnapshotSpec(kind="zfs", volume="/srv"), path="/srv/x", run_id="r")


def test_outer_ssh_with_connection_reuse():
    plain = rsync.outer_ssh_argv(ssh=SSH, address="198.18.65.11", command="true")
    assert plain[-2:] == ["root@198.18.65.11", "true"] and "ControlMaster=auto" not in plain
    mux = rsync.outer_ssh_argv(ssh=SSH, address="198.18.65.11", command="true", control_dir="/run/x")
    assert mux[-8:-2] == ["-o", "ControlMaster=auto", "-o", "ControlPath=/run/x/%C", "-o",
                          "ControlPersist=60"]


def test_a_fenced_job_checks_the_targets_epoch_record_before_rsync_starts():
    import subprocess

    from cr_orchestrator.act.sync.rsync import RsyncJob, fenced_rsync_path, rsync_argv

    job = RsyncJob("/srv/mail", "root", "198.18.1.12", "/srv/mail", fence=("mail", 4))
    argv = rsync_argv(job, inner_ssh=["-p", "22"])
    path = [a for a in argv if a.startswith("--rsync-path=")]
    assert path == [f"--rsync-path={fenced_rsync_path(cluster='mail', epoch=4)}"]
    dry = rsync_argv(RsyncJob("/srv/mail", "root", "198.18.1.12", "/srv/mail", fence=("mail", 4),
                              dry_run_itemize=True), inner_ssh=["-p", "22"])
    assert f"--rsync-path={fenced_rsync_path(cluster='mail', epoch=4, dry_run=True)}" in dry
    assert "/var/lib/cr-orchestrator/mail.epoch" in path[0] and '-gt 4 ]' in path[0]
    # rsync appends its --server arguments: they reach the fence script as "$@"
    assert path[0].startswith("--rsync-path=sh -c ") and path[0].endswith(" cr-fence")
    # valid shell for the target's login shell, and the script inside it too
    assert subprocess.run(["sh", "-n", "-c", path[0].split("=", 1)[1]]).returncode == 0
    inner = shlex.split(path[0].split("=", 1)[1])[2]
    assert subprocess.run(["sh", "-n", "-c", inner]).returncode == 0
    unfenced = rsync_argv(RsyncJob("/srv/mail", "root", "198.18.1.12", "/srv/mail"),
                          inner_ssh=["-p", "22"])
    assert not [a for a in unfenced if a.startswith("--rsync-path")]


def _push(tmp_path, *, epoch: int, role: str | None, dry_run: bool = False,
          synced: str | None = None):
    """A real rsync push through the fence (the records under tmp_path instead of
    /var/lib/cr-orchestrator; "ssh" runs the remote side locally)."""
    import subprocess

    from cr_orchestrator.act.sync.rsync import fenced_rsync_path

    records = fence_records(tmp_path, role=role, synced=synced)
    path = fenced_rsync_path(cluster="mail", epoch=epoch, dry_run=dry_run).replace(
        RECORDS_DIR, str(records))
    argv = ["rsync", "-a", "--delete", f"--rsync-path={path}", "-e", local_ssh(tmp_path)]
    argv += ["--dry-run"] if dry_run else []
    done = subprocess.run(argv + [f"{tmp_path}/src/", f"x:{tmp_path}/dst/"],
                          capture_output=True, text=True)
    role_now = (records / "mail.role").read_text().strip() if (records / "mail.role").exists() \
        else None
    synced_now = (records / "mail.synced").read_text().strip() \
        if (records / "mail.synced").exists() else None
    return done, role_now, synced_now


def _trees(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "both").write_text("newer version")
    (tmp_path / "dst" / "both").write_text("old")
    (tmp_path / "dst" / "only-on-target").write_text("acknowledged mail")


def test_a_sync_into_a_host_that_claims_the_primary_role_quarantines_what_it_deletes(tmp_path):
    _trees(tmp_path)
    done, role, synced = _push(tmp_path, epoch=3, role="primary 1", synced="3")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "dst" / "only-on-target").exists()
    [quarantine] = list(tmp_path.glob("dst.cr-quarantine/*-epoch-3"))
    assert (quarantine / "only-on-target").read_text() == "acknowledged mail"
    assert (quarantine / "both").read_text() == "old"  # overwritten: kept too
    assert role == "secondary 3"  # a replica from now on: the next sync deletes normally
    assert rsync.parse_quarantined(done.stderr) == (2, str(quarantine))


def test_a_secondary_synced_at_this_epoch_already_deletes_without_quarantine(tmp_path):
    _trees(tmp_path)
    done, role, synced = _push(tmp_path, epoch=3, role="secondary 2", synced="3")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "dst" / "only-on-target").exists()
    assert not list(tmp_path.glob("dst.cr-quarantine"))
    assert role == "secondary 2" and synced == "3"
    assert rsync.parse_quarantined(done.stderr) == (0, None)


@pytest.mark.parametrize("synced", ["2", None])
def test_the_first_sync_at_a_new_epoch_keeps_what_the_replica_alone_had(tmp_path, synced):
    """A replica that received mail from the old primary which the new primary never
    got: the new primary's first sync (epoch 3; the replica last synced at 2, or never)
    keeps that mail in quarantine instead of deleting it."""
    _trees(tmp_path)
    done, role, synced_now = _push(tmp_path, epoch=3, role=None, synced=synced)
    assert done.returncode == 0, done.stderr
    [quarantine] = list(tmp_path.glob("dst.cr-quarantine/*-epoch-3"))
    assert (quarantine / "only-on-target").read_text() == "acknowledged mail"
    assert synced_now == "3" and role is None
    again, _, _ = _push(tmp_path, epoch=3, role=None)  # the next one deletes as usual
    assert rsync.parse_quarantined(again.stderr) == (0, None)


def test_a_first_sync_that_deletes_nothing_leaves_no_quarantine(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "new-mail").write_text("x")
    done, _, synced = _push(tmp_path, epoch=1, role=None)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("dst.cr-quarantine/*")) and synced == "1"


def test_a_dry_run_into_a_claimed_primary_changes_nothing(tmp_path):
    _trees(tmp_path)
    done, role, synced = _push(tmp_path, epoch=3, role="primary 1", dry_run=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dst" / "only-on-target").exists()
    assert role == "primary 1" and synced is None
