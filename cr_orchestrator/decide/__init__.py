"""Decide: pure functions, no I/O and no clock. The failure detector turns a window of
observations into verdicts (:mod:`.detector`), :mod:`.snapshot` freezes them with what
Redis and the hosts' records say, and :func:`.rules.decide` returns one
:class:`~.rules.Decision`: an action, a situation code, a sentence, and its state
effects."""
