"""cr-orchestrator: open high availability and disaster recovery driven by Ansible."""

__version__ = "0.1.0"
