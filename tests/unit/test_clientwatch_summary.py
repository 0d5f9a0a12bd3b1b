"""The client-seen outage and split-brain figures computed from watch samples."""

from cr_orchestrator.testworld.clientwatch import summarise


def sample(t, serves, holders=("aa",), serving=("mail-a",)):
    return {"t": t, "shared_ip_serves": serves, "arp_holders": list(holders),
            "serving_hosts": list(serving)}


def test_outage_is_the_longest_run_without_a_greeting():
    samples = [sample(0.0, True), sample(0.1, False), sample(0.2, False), sample(0.3, True),
               sample(1.0, False), sample(1.5, False), sample(2.6, True)]
    summary = summarise(samples)
    assert round(summary.longest_outage_s, 2) == 1.6
    assert (summary.outage_started_at, summary.outage_ended_at) == (1.0, 2.6)
    assert summary.split_brain_samples == 0


def test_an_outage_still_running_at_the_end_counts_up_to_the_last_sample():
    summary = summarise([sample(0.0, True), sample(1.0, False), sample(4.0, False)])
    assert summary.longest_outage_s == 3.0
    assert summary.outage_ended_at is None


def test_two_arp_holders_or_two_serving_hosts_are_split_brain():
    samples = [sample(0.0, True, holders=("aa", "bb")),
               sample(0.1, True, serving=("mail-a", "mail-b")),
               sample(0.2, True)]
    summary = summarise(samples)
    assert summary.split_brain_samples == 2
    assert "2 samples" in summary.sentence()


def test_outage_around_a_crash_spans_last_answer_before_to_first_after():
    from cr_orchestrator.testworld.clientwatch import outage_around

    samples = [sample(0.0, True), sample(0.5, True), sample(0.6, False), sample(3.0, False),
               sample(3.4, True), sample(3.5, True)]
    assert outage_around(samples, 0.55) == 3.4 - 0.5
    assert outage_around(samples[:4], 0.55) is None  # not answering again yet


def test_samples_written_out_of_start_order_read_back_in_order(tmp_path):
    # overlapping samples finish out of order: one waiting 0.5 s for a dead address ends
    # after the quicker ones started later
    import json

    from cr_orchestrator.testworld.clientwatch import read_samples

    lines = [sample(0.2, True), sample(0.0, True), sample(0.3, True), sample(0.1, False)]
    path = tmp_path / "watch.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in lines) + '{"t": 0.4, "sha')
    assert [s["t"] for s in read_samples(path)] == [0.0, 0.1, 0.2, 0.3]
    assert round(summarise(lines).longest_outage_s, 2) == 0.1


def test_answers_just_after_the_crash_call_are_before_the_outage_not_its_end():
    from cr_orchestrator.testworld.clientwatch import outage_around

    # the crash was ordered at 1.0; a sample started at 1.05 still got its greeting
    samples = [sample(0.9, True), sample(1.05, True), sample(1.1, False), sample(2.0, False),
               sample(2.5, True), sample(2.6, True)]
    assert round(outage_around(samples, 1.0), 2) == 1.45
    assert outage_around(samples[:4], 1.0) is None  # not answering again yet
    assert outage_around([sample(0.9, True), sample(1.05, True)], 1.0) is None
