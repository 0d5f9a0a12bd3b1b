"""runtime(): rebuilt when a variable it reads changes, kept otherwise."""

from __future__ import annotations

from cr_orchestrator.runtime import config
from cr_orchestrator.runtime.config import VARIABLES, RuntimeConfig, runtime


class Recording(dict):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)


def test_the_cache_key_names_every_variable_the_config_reads():
    environ = Recording()
    RuntimeConfig.from_environ(environ)
    assert environ.asked == set(VARIABLES)


def test_a_changed_variable_is_seen_and_an_unchanged_environment_reuses_the_config(
        monkeypatch):
    monkeypatch.setenv("CR_PREFIX", "one")
    first = runtime()
    assert first.prefix == "one" and runtime() is first
    monkeypatch.setenv("CR_PREFIX", "two")
    assert runtime().prefix == "two"
    monkeypatch.setenv("CR_SSH_TRANSPORT", "openssh")
    assert runtime().ssh_transport == "openssh"
    monkeypatch.delenv("CR_SSH_TRANSPORT")
    assert runtime().ssh_transport == "asyncssh"
    monkeypatch.setattr(config, "_last", None)
