"""Helpers of the lab sync tests: a fast Maildir generator and content-hash trees."""

from __future__ import annotations

import hashlib
import os
import random
import shutil


def make_message(i: int, size: int) -> bytes:
    body = (f"Message {i} " * (size // 12 + 1))[:size]
    return (f"From: sender{i}@lab.test\r\nTo: user@lab.test\r\nSubject: test {i}\r\n"
            f"Message-ID: <{i}@lab.test>\r\n\r\n{body}\r\n").encode()


def generate_maildir(root: str, *, count: int, start: int = 0, seed: int = 1) -> list[str]:
    """Write ``count`` messages (~1-4 KiB) straight to disk, 2/3 in cur/, 1/3 in new/."""
    rng = random.Random(seed + start)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    names = []
    for i in range(start, start + count):
        name = f"cur/{1763780000 + i}.M{i}P1.mail-a:2,S" if i % 3 else f"new/{1763780000 + i}.M{i}P1.mail-a"
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(make_message(i, rng.randint(900, 4000)))
        names.append(name)
    return names


def tree_hashes(root: str) -> dict[str, str]:
    """relative path → sha256 of every file under ``root`` (empty dict if missing)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def reset(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(path + ".cr-quarantine", ignore_errors=True)


def forget_promotions(lab) -> None:
    """A fresh cluster: no epoch, role or sync recorded on any lab host. Earlier tests of
    the session (playbooks) promote hosts; their records would fence these tests'
    epoch-0 syncs."""
    import glob

    for host in lab.hosts:
        for pattern in ("*.epoch", "*.role", "*.synced"):
            for record in glob.glob(os.path.join(lab.state_dir_of(host), pattern)):
                os.unlink(record)
