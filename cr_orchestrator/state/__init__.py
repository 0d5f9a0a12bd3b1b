"""State: what the orchestrator keeps in Redis (:mod:`.cluster`: primary, epoch, the
journal of a change, history, locks as leases; :mod:`.freshness`: replica freshness) and
what every host keeps about itself (:mod:`.host_records`: its epoch and role)."""
