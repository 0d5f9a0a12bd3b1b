"""Runtime: the cycle that joins observe → decide → record → act (:mod:`.cycle`), the
operator commands (:mod:`.commands`), the Celery app, tasks and RedBeat schedule, and
the one configuration object read from the environment (:mod:`.config`)."""
