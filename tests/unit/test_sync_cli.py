"""crctl sync: which source, at which epoch (pure part)."""

import pytest

from cr_orchestrator.cli.sync import choose_source
from cr_orchestrator.errors import SyncError


@pytest.mark.parametrize("live,epoch,requested,expected", [
    ("mail-b", 4, None, ("mail-b", 4)),
    ("mail-b", 4, "mail-b", ("mail-b", 4)),
    (None, 0, "mail-b", ("mail-b", 0)),
    (None, 0, None, ("mail-a", 0)),
])
def test_source_and_epoch(live, epoch, requested, expected):
    source, got_epoch, why = choose_source(live_primary=live, live_epoch=epoch, requested=requested,
                                           configured="mail-a")
    assert (source, got_epoch) == expected and why


def test_from_a_host_that_is_not_the_live_primary_is_refused():
    with pytest.raises(SyncError, match="refusing to sync from mail-a: the current primary is mail-b .epoch 4."):
        choose_source(live_primary="mail-b", live_epoch=4, requested="mail-a", configured="mail-a")
