"""What a host recorded about a cluster, as its probe read it (parse_record), and the
pure helpers a story's mail checker uses."""

from __future__ import annotations

import pytest

from cr_orchestrator.state.host_records import HostRecord, HostRole, parse_record, record_paths
from cr_orchestrator.testworld.lab.mailcheck import Found, acceptor_switches, judge
from cr_orchestrator.testworld.lab.mailload import Attempt


@pytest.mark.parametrize("epoch_text,role_text,expected", [
    (None, None, HostRecord(None)),
    ("4", None, HostRecord(4)),
    ("4\n", "primary 4\n", HostRecord(4, HostRole.PRIMARY, 4)),
    ("7", "secondary 6", HostRecord(7, HostRole.SECONDARY, 6)),
    ("7", "", HostRecord(7)),
])
def test_records_that_parse(epoch_text, role_text, expected):
    assert parse_record(host="mail-b", cluster="mail", epoch_text=epoch_text,
                        role_text=role_text) == expected


@pytest.mark.parametrize("epoch_text,role_text,problem", [
    ("x1", None, "the epoch record /var/lib/cr-orchestrator/mail.epoch on mail-b holds 'x1', "
                 "not a whole number"),
    ("", None, "holds '', not a whole number"),  # exists but could not be read
    ("3", "leader 3", "the role record /var/lib/cr-orchestrator/mail.role on mail-b holds "
                      "'leader 3', not 'primary N' or 'secondary N'"),
    ("3", "primary", "not 'primary N'"),
])
def test_records_that_do_not_parse_name_the_file_and_host(epoch_text, role_text, problem):
    record = parse_record(host="mail-b", cluster="mail", epoch_text=epoch_text,
                          role_text=role_text)
    assert record.problem is not None and problem in record.problem


def test_windows_paths_and_bad_cluster_names():
    assert record_paths("mail", windows=True) == ("C:\\ProgramData\\cr-orchestrator\\mail.epoch",
                                                  "C:\\ProgramData\\cr-orchestrator\\mail.role")
    with pytest.raises(ValueError, match="cannot name a record file"):
        record_paths("../etc")
    assert HostRecord(4, HostRole.PRIMARY, 4).claims_primary_at == 4
    assert HostRecord(4, HostRole.SECONDARY, 4).claims_primary_at is None


def _acked(seq: int) -> Attempt:
    return Attempt(seq, float(seq), seq + 0.1, 250, None)


def test_judge_counts_missing_duplicated_and_quarantined_mail():
    attempts = [_acked(1), _acked(2), _acked(3), _acked(4),
                Attempt(5, 5.0, 6.0, None, "ConnectionRefusedError")]
    on_primary = [Found(1, "mail-a", 1.0, "p/1"), Found(2, "mail-b", 2.0, "p/2"),
                  Found(2, "mail-b", 2.0, "p/2b")]
    quarantined = [Found(3, "mail-a", 3.0, "q/3")]
    verdict = judge(attempts=attempts, on_primary=on_primary, quarantined=quarantined)
    assert (verdict.acknowledged, verdict.on_primary, verdict.in_quarantine) == (4, 2, 1)
    assert [a.seq for a in verdict.missing] == [4]
    assert verdict.duplicated == [2]
    assert "1 missing (seq 4)" in verdict.sentence()


def test_acceptor_switches_show_a_failover_once_and_two_servers_as_alternation():
    one_move = [Found(i, "mail-a" if i < 5 else "mail-b", float(i), "") for i in range(10)]
    assert acceptor_switches(one_move) == [(5.0, "mail-a", "mail-b")]
    both = [Found(i, "mail-a" if i % 2 else "mail-b", float(i), "") for i in range(6)]
    assert len(acceptor_switches(both)) == 5
