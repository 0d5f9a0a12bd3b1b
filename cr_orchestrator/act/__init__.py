"""Act: the topology changes (:mod:`.changes`: failover, switchover, resume, adopt, ...)
under the cluster lock and the epoch fence, the playbooks they run
(:mod:`.playbook_runner`, verdicts from :mod:`.playbook_events`), and replication
(:mod:`.sync`)."""
