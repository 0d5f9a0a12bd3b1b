"""A campaign: schedules one after the other on one lab and one Redis quorum, the report
rewritten after each schedule (an interrupted campaign still leaves its numbers)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cr_orchestrator.testworld.chaos import report, runner
from cr_orchestrator.testworld.chaos.checker import Verdict
from cr_orchestrator.testworld.chaos.schedule import Profile, draw
from cr_orchestrator.testworld.redis_quorum import LocalQuorum


@dataclass
class Outcome:
    verdicts: list[Verdict] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def violations(self) -> list[tuple[int, str, str]]:
        return [(v.seed, i, s) for v in self.verdicts for i, s in v.violations]


def run_campaign(*, lab, seeds: list[int], profile: Profile, directory: Path,
                 quorum_port: int, command: str, replay: str, load_every_s: float = 0.1,
                 say=print) -> Outcome:
    directory.mkdir(parents=True, exist_ok=True)
    quorum = LocalQuorum(directory / "quorum", quorum_port).start()
    world = runner.CampaignWorld(lab=lab, quorum=quorum, directory=directory,
                                 load_every_s=load_every_s)
    outcome = Outcome()
    try:
        for n, seed in enumerate(seeds, 1):
            schedule = draw(seed, profile)
            started = time.monotonic()
            say(f"[{n}/{len(seeds)}] seed {seed}{' (disk lost)' if schedule.disk_lost else ''}:"
                f" {schedule.sentence()}")
            result = runner.run(world, schedule, say=say)
            if isinstance(result, str):
                outcome.errors[seed] = result
                say(f"  could not run: {result}")
            else:
                outcome.verdicts.append(result)
                say(f"  {'ok' if result.ok else 'VIOLATED: ' + '; '.join(s for _, s in result.violations)}"
                    f" ({result.acknowledged} acknowledged, longest outage "
                    f"{result.longest_outage_s:.1f} s, {time.monotonic() - started:.0f} s)")
            write(directory, outcome, command=command, replay=replay)
    finally:
        world.close()
        quorum.stop()
    return outcome


def write(directory: Path, outcome: Outcome, *, command: str, replay: str) -> None:
    (directory / "report.md").write_text(report.markdown(
        command=command, replay=replay, verdicts=outcome.verdicts, errors=outcome.errors))
    report.write_json(directory / "campaign.json", outcome.verdicts, outcome.errors)
    report.timeline_png(directory / "timeline.png", outcome.verdicts)
