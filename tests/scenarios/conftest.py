"""The lab stories' fixtures (scenario_kit): every story is watched for split brain."""

from scenario_kit import orchestrator, split_brain_watch  # noqa: F401 - fixtures
