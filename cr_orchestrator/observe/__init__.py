"""Observe: one probe round of a cluster (:mod:`.round`), from the orchestrator and from
peers, returning values, never raising. Host probes over SSH (:mod:`.linux_host`) and
WinRM (:mod:`.windows_host`, script in :mod:`.windows_script`), the services' protocol
checks (:mod:`.protocol`), peer checks (:mod:`.peer`), and the window of observations
kept in Redis (:mod:`.store`). Shared value types in :mod:`.health`."""
