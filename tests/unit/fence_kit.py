"""Real rsync runs through the receiving-side fence, without a remote host: the records
live under tmp_path instead of /var/lib/cr-orchestrator, and "ssh" runs the receiving
side locally."""

from __future__ import annotations

from pathlib import Path

RECORDS_DIR = "/var/lib/cr-orchestrator"


def fence_records(tmp_path: Path, **records: str | None) -> Path:
    """The directory of the host's records, with ``mail.<name>`` files for each given."""
    directory = tmp_path / "records"
    directory.mkdir(exist_ok=True)
    for name, text in records.items():
        if text is not None:
            (directory / f"mail.{name}").write_text(text + "\n")
    return directory


def local_ssh(tmp_path: Path) -> str:
    """An "ssh" that drops its options and the host and runs the command here."""
    path = tmp_path / "ssh"
    path.write_text('#!/bin/sh\n[ "$1" = -l ] && shift 2\nshift\nexec sh -c "$*"\n')
    path.chmod(0o755)
    return str(path)
