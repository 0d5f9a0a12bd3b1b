"""The project's exceptions: one shallow tree, so callers catch by concern.

Every message names the thing at fault (file, host, variable, cluster) and never
contains a secret.
"""


class CrError(Exception):
    """Base of every error cr-orchestrator raises on purpose."""


class ConfigError(CrError):
    """The inventory or a command-line argument is wrong.

    ``problems`` holds every problem found, so an operator sees them all at once.
    """

    def __init__(self, problems: "list[str] | str") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class LabError(CrError):
    """The lab cannot be built, changed or removed."""


class ProbeError(CrError):
    """A probe could not even be set up (probes themselves return values)."""


class PlaybookError(CrError):
    """An Ansible playbook run failed, was refused or timed out."""


class SyncError(CrError):
    """A replication run failed."""


class StateError(CrError):
    """Cluster state in Redis is missing, malformed or held by someone else."""
