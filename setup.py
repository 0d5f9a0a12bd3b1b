"""Build hook: the wheel carries the Ansible content as cr_orchestrator/_content/.

Everything else is configured in pyproject.toml. The content (``ansible.cfg``,
``playbooks/``, ``roles/``) stays at the repository's top, where Ansible, ansible-lint
and the people editing it expect it, and setuptools cannot map it from there: package
data only takes files under a package's own directory, ``package-dir`` maps directories
to packages but not a lone file (ansible.cfg), and mapping the top itself to a package
would sweep any top-level ``*.py`` into the wheel; ``data-files`` is deprecated and
installs outside the package. So build_py copies the three into the build directory;
cr_orchestrator.content.content_root() finds them there once installed. MANIFEST.in
puts them in the sdist, so a wheel built from an sdist gets them too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CONTENT = ("ansible.cfg", "playbooks", "roles")
TARGET = Path("cr_orchestrator", "_content")  # cr_orchestrator.content.INSTALLED
JUNK = shutil.ignore_patterns("__pycache__", "*.py[co]", "*.retry", "*~", "*.orig", "*.bak")


class BuildPyWithContent(build_py):
    def run(self) -> None:
        super().run()
        # An editable install uses the checkout's own content (content_root()).
        if self.editable_mode:
            return
        target = Path(self.build_lib) / TARGET
        # build/ outlives a build: start afresh so a file deleted from the checkout goes.
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in CONTENT:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=JUNK)
            elif source.is_file():
                shutil.copy2(source, target / name)
            else:  # a wheel without its playbooks cannot fail over: refuse to build one
                raise FileNotFoundError(f"{source}: Ansible content missing, cannot build")


setup(cmdclass={"build_py": BuildPyWithContent})
