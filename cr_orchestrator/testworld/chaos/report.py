"""A campaign's report: a table per schedule, the violations per invariant with the seed
to replay each, the distributions of outage, RPO and convergence time (Markdown and
JSON), and one picture (PNG): per schedule, its faults, the client's outages and who
was primary over time."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

from cr_orchestrator.testworld.chaos.checker import CONVERGENCE_BOUND_S, INVARIANTS, Verdict


def distribution(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (f"n={len(ordered)} min {ordered[0]:.1f} median {statistics.median(ordered):.1f} "
            f"p90 {p90:.1f} max {ordered[-1]:.1f}")


def markdown(*, command: str, replay: str, verdicts: list[Verdict],
             errors: dict[int, str]) -> str:
    """The campaign report. ``replay`` is the command with ``{seed}`` to replay one."""
    lines = [f"Command: `{command}`", "",
             f"{len(verdicts)} schedules judged, {len(errors)} could not run.", "",
             "| seed | faults | ack'd | lost | dup | split brain | longest outage s "
             "| convergence s | RPO msgs / s | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        rpo = (f"{v.rpo_messages} / {v.rpo_s:.1f}" if v.rpo_messages is not None
               and v.rpo_s is not None else "")
        conv = f"{v.convergence_s:.1f}" if v.convergence_s is not None else "never"
        lines.append(f"| {v.seed} | {v.schedule}{' (disk lost)' if v.disk_lost else ''} "
                     f"| {v.acknowledged} | {len(v.missing)} | {len(v.duplicated)} "
                     f"| {len(v.split_brain)} | {v.longest_outage_s:.1f} | {conv} | {rpo} "
                     f"| {'ok' if v.ok else ', '.join(sorted({i for i, _ in v.violations}))} |")
    for seed, why in errors.items():
        lines.append(f"| {seed} | could not run: {why} | | | | | | | | error |")
    lines += ["", "## Invariants", ""]
    for invariant in INVARIANTS:
        found = [(v.seed, s) for v in verdicts for i, s in v.violations if i == invariant]
        lines.append(f"- **{invariant}**: {len(found)} violation(s)"
                     f"{' in ' + str(len({s for s, _ in found})) + ' schedule(s)' if found else ''}")
        for seed, sentence in found[:20]:
            lines.append(f"  - seed {seed}: {sentence} (replay: `{replay.format(seed=seed)}`)")
    crash_lost = sum(len(v.missing) for v in verdicts
                     if any(f["kind"] in ("crash", "site_crash") for f in v.faults))
    lines += ["", "## Figures", "",
              f"- split-brain intervals: {sum(len(v.split_brain) for v in verdicts)}",
              f"- acknowledged messages: {sum(v.acknowledged for v in verdicts)}; lost: "
              f"{sum(len(v.missing) for v in verdicts)} (after host-crash faults: {crash_lost})",
              f"- duplicated: {sum(len(v.duplicated) for v in verdicts)}",
              f"- convergence after the last heal (s): "
              f"{distribution([v.convergence_s for v in verdicts if v.convergence_s is not None])}"
              f"; over {CONVERGENCE_BOUND_S:.0f} s or never: "
              f"{sum(1 for v in verdicts if v.convergence_s is None or v.convergence_s > CONVERGENCE_BOUND_S)}",
              f"- longest client-seen SMTP outage per schedule (s): "
              f"{distribution([v.longest_outage_s for v in verdicts])}",
              f"- disk lost, RPO in messages: "
              f"{distribution([float(v.rpo_messages) for v in verdicts if v.rpo_messages is not None])}",
              f"- disk lost, RPO in seconds before the crash: "
              f"{distribution([v.rpo_s for v in verdicts if v.rpo_s is not None])}"]
    readers = sorted({p for v in verdicts for p in v.reader_outage_s})
    for proto in readers:
        lines.append(f"- longest {proto.upper()} reader outage per schedule (s): "
                     f"{distribution([v.reader_outage_s[proto] for v in verdicts if proto in v.reader_outage_s])}")
    return "\n".join(lines) + "\n"


def write_json(path: Path, verdicts: list[Verdict], errors: dict[int, str]) -> None:
    path.write_text(json.dumps({"verdicts": [asdict(v) for v in verdicts],
                                "errors": {str(k): v for k, v in errors.items()}}, indent=1))


HOST_COLOURS = {"mail-a": "tab:blue", "mail-b": "tab:green", "mail-dr": "tab:purple",
                None: "lightgrey"}


def timeline_png(path: Path, verdicts: list[Verdict]) -> None:
    """One row per schedule: faults (orange bars, their kind and victim), the client's
    SMTP outages (red), and the primary Redis named over time (coloured line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    rows = max(1, len(verdicts))
    fig, ax = plt.subplots(figsize=(14, 1.0 + 0.55 * rows))
    for row, v in enumerate(verdicts):
        y = rows - row
        for start, end in v.outages:
            ax.barh(y - 0.22, end - start, left=start, height=0.14, color="tab:red")
        end_of_row = max((t for t, _ in v.primaries), default=0.0)
        for f in v.faults:
            if f["applied_at"] is None or f["refused"]:
                continue
            start, duration = f["start_s"], f["duration_s"]
            if duration is None:  # one blow, or a disk lost for good
                duration = end_of_row - start if f["kind"] == "crash" else 0.4
            ax.barh(y + 0.2, max(0.4, duration), left=start, height=0.18,
                    color="tab:orange", alpha=0.8)
            ax.text(start, y + 0.32, f"{f['kind']} {f['victim']}", fontsize=6, va="bottom")
        for (t, host), (t_next, _) in zip(v.primaries, v.primaries[1:]):
            ax.plot([t, t_next], [y, y], color=HOST_COLOURS.get(host, "black"), lw=3,
                    solid_capstyle="butt")
        marks = [f"{i}" for i, _ in v.violations]
        ax.text(-2, y, f"{v.seed}{' DL' if v.disk_lost else ''}"
                f"{' ✗ ' + ','.join(sorted(set(marks))) if marks else ''}",
                fontsize=7, ha="right", va="center", color="red" if marks else "black")
    ax.set_yticks([])
    ax.set_xlabel("seconds since the first fault could start (schedule zero)")
    ax.set_xlim(left=-14)
    handles: list[Artist] = [Line2D([0], [0], color=c, lw=3, label=f"primary {h or 'unknown'}")
                             for h, c in HOST_COLOURS.items()]
    handles += [Rectangle((0, 0), 1, 1, color="tab:orange", label="fault"),
                Rectangle((0, 0), 1, 1, color="tab:red", label="client SMTP outage")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, ncol=3)
    ax.set_title("chaos campaign: faults, client outages and the primary, per schedule (seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
