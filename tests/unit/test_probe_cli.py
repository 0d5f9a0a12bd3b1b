"""The probe table is sorted and aligned; what an operator reads first comes first."""

from cr_orchestrator.cli.probe import render_table
from cr_orchestrator.observe.health import Health, Observation


def test_table_sorts_orchestrator_first_and_shows_errors():
    rows = [
        Observation("b", "orchestrator", "host", Health.OK, 1.0, 0.02),
        Observation("a", "b", "check:smtp:25@x", Health.UNREACHABLE, 1.0, None, "no answer"),
        Observation("a", "orchestrator", "host", Health.UNREACHABLE, 1.0, 1.5,
                    "no answer over SSH within 1.5s"),
    ]
    lines = render_table(rows).splitlines()
    assert lines[0].split() == ["HOST", "VANTAGE", "SUBJECT", "HEALTH", "LATENCY", "ERROR"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "orchestrator"], ["a", "b"],
                                                         ["b", "orchestrator"]]
    assert lines[1].split()[4] == "1500ms" and lines[1].endswith("within 1.5s")
    assert lines[2].split()[4] == "-"
    column = lines[0].index("HEALTH")  # columns are aligned
    assert [line[column:].split()[0] for line in lines[1:]] == ["unreachable", "unreachable", "ok"]
