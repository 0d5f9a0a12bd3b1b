"""A wheel built from the checkout runs a failover on its own: installed in a fresh venv
and run from a directory outside the checkout, ``crctl`` finds its playbooks, roles and
ansible.cfg inside the installed package (cr_orchestrator/_content/, put there by
setup.py), never in the checkout.

The venv borrows the project venv's third-party packages (ansible-runner, celery, ...)
through a ``.pth`` line instead of installing ~50 MB of dependencies; the test stays
honest because nothing of ours can come in that way: a path line in a ``.pth`` only
extends ``sys.path``, so the ``.pth`` files of that directory are never run, among them
the editable install's finder that maps ``cr_orchestrator`` to the checkout; the venv's
own site-packages (holding the wheel's files) comes first anyway; the checkout's
directories are dropped from ``PATH``; and the tests below check where every piece was
loaded from. ansible-core is installed for real, so that ansible-playbook is this venv's
command, run by this venv's Python, as after a normal ``pip install``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
CONTENT = Path("cr_orchestrator", "_content")
CLUSTER = "mail"


@dataclass(frozen=True)
class Installed:
    tree: Path  # the checkout's files the wheel was built from
    wheel: Path
    venv: Path
    site: Path  # the venv's own site-packages
    workdir: Path  # an empty working directory outside the checkout

    @property
    def content(self) -> Path:
        return self.site / CONTENT

    def env(self, **more: str) -> dict[str, str]:
        """The test's environment with this venv's bin/ first and no trace of the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _inside(Path(p), REPO)]
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), *path])
        return {**env, **more}

    def run(self, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.workdir, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout, check=False)


def _inside(path: Path, top: Path) -> bool:
    return path.resolve().is_relative_to(top.resolve())


def _run(*argv, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          check=False, **kwargs)
    assert done.returncode == 0, f"{argv}: rc {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _snapshot(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored), copied to
    ``dest``: the build then leaves its build/ and egg-info there, not in a checkout
    other people work in (and a build/ left behind would feed stale files to the next)."""
    listed = _run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # not one deleted in the working tree but still in the index
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    top = tmp_path_factory.mktemp("wheel")
    assert not _inside(top, REPO)
    tree = _snapshot(top / "tree")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", top / "dist", ".", cwd=tree)
    (wheel,) = (top / "dist").glob("cr_orchestrator-*.whl")

    venv = top / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    _run(*pip, f"ansible-core=={version('ansible-core')}", wheel)
    # Borrowed only now: pip would take what it sees there as already installed.
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    borrowed = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "borrowed-project-venv.pth").write_text("".join(f"{p}\n" for p in borrowed))

    workdir = top / "work"
    workdir.mkdir()
    return Installed(tree=tree, wheel=wheel, venv=venv, site=site, workdir=workdir)


def test_the_wheel_carries_the_ansible_content(installed):
    tree = installed.tree
    expected = {"ansible.cfg"} | {
        str(p.relative_to(tree)) for top in ("playbooks", "roles") for p in (tree / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {name.removeprefix(f"{CONTENT.as_posix()}/") for name in wheel.namelist()
                   if name.startswith(f"{CONTENT.as_posix()}/")}
    assert shipped == expected


def test_the_installed_code_and_content_are_the_wheels_not_the_checkouts(installed):
    probe = """if True:
        import json, ansible, cr_orchestrator
        from cr_orchestrator.content import content_root
        from cr_orchestrator.act import playbook_runner
        from cr_orchestrator.inventory import loader
        print(json.dumps({"package": cr_orchestrator.__file__, "ansible": ansible.__file__,
                          "content": str(content_root()), "playbooks": str(playbook_runner.PLAYBOOK_DIR),
                          "roles": str(loader.ROLES_DIR), "env": playbook_runner.ansible_env()}))"""
    done = installed.run(str(installed.venv / "bin" / "python"), "-c", probe)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    content = installed.content
    assert Path(seen["package"]) == installed.site / "cr_orchestrator" / "__init__.py"
    assert not _inside(Path(seen["package"]), REPO)
    assert _inside(Path(seen["ansible"]), installed.site)  # ansible-playbook's own ansible
    assert Path(seen["content"]) == content and Path(seen["playbooks"]) == content / "playbooks"
    assert Path(seen["roles"]) == content / "roles"
    assert seen["env"]["ANSIBLE_CONFIG"] == str(content / "ansible.cfg")
    assert seen["env"]["ANSIBLE_ROLES_PATH"] == str(content / "roles")

    # ansible.cfg's relative roles_path = ./roles still names the installed roles (Ansible
    # reads it relative to the file), even without the runner's ANSIBLE_ROLES_PATH.
    dump = installed.run(str(installed.venv / "bin" / "ansible-config"), "dump", "--only-changed",
                         ANSIBLE_CONFIG=str(content / "ansible.cfg"))
    assert dump.returncode == 0, dump.stderr
    assert f"DEFAULT_ROLES_PATH({content / 'ansible.cfg'}) = ['{content / 'roles'}']" in dump.stdout


def _recorded_epoch(lab, host: str) -> int:
    proc = lab.run_on(host, f"cat /var/lib/cr-orchestrator/{CLUSTER}.epoch")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


# Both ways a failover moves the primary role: through the roles' tasks, and (old primary
# known down) in one script rendered from the roles' templates, which the playbook finds
# beside playbooks/ ({{ playbook_dir | dirname }}/roles): the installed layout must keep that.
@pytest.mark.parametrize("old_primary_down", [False, True], ids=["through-the-roles", "one-script"])
def test_a_failover_check_runs_from_the_wheel(installed, lab, old_primary_down):
    hosts = ("mail-a", "mail-b", "mail-dr")
    before = {h: _recorded_epoch(lab, h) for h in hosts}
    runs = installed.workdir / "runs"
    done = installed.run(
        str(installed.venv / "bin" / "crctl"), "playbook", "failover", "-i", lab.inventory_path,
        "-e", f"cr_cluster={CLUSTER}", "-e", f"cr_epoch={max(before.values()) + 1}",
        "-e", "cr_old_primary=mail-a", "-e", "cr_new_primary=mail-b",
        "-e", f"cr_old_primary_down={str(old_primary_down).lower()}",
        # what the orchestrator passes with an old primary down (act/changes.py)
        "-e", f"cr_fast_take_over={str(old_primary_down).lower()}", "--check",
        timeout=240, CR_ARTIFACTS=str(runs))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert {h: _recorded_epoch(lab, h) for h in hosts} == before  # --check changed nothing

    record = Path(re.search(r"^record: (.+)$", done.stdout, re.M).group(1))
    assert record.parent == runs
    content = installed.content
    command = json.loads((record / "command").read_text())
    assert command["command"][-1] == str(content / "playbooks" / "failover.yml")
    assert command["env"]["ANSIBLE_CONFIG"] == str(content / "ansible.cfg")
    assert command["env"]["ANSIBLE_ROLES_PATH"] == str(content / "roles")
    # Every task that ran was read from the installed copy: the playbook, its includes
    # and the roles.
    events = [json.loads(p.read_text()).get("event_data", {}) for p in (record / "job_events").glob("*.json")]
    task_files = {Path(e["task_path"].rsplit(":", 1)[0]) for e in events if e.get("task_path")}
    assert task_files and all(_inside(f, content) for f in task_files), sorted(task_files)
    assert content / "playbooks" / "failover.yml" in task_files
    if old_primary_down:
        assert content / "playbooks" / "includes" / "take_over_linux.yml" in task_files
        # the script was rendered from the roles' templates and ran, saying what it would do
        said = [e["res"].get("stdout", "") for e in events if isinstance(e.get("res"), dict)
                and e.get("task", "").startswith("Take the primary role")]
        assert said and said[0].startswith("changed: "), said
    else:
        assert any(_inside(f, content / "roles") for f in task_files)
