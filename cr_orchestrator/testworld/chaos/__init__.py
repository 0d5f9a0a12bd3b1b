"""The chaos campaign: randomized fault schedules under client load, a checker, a report.

:mod:`.schedule` draws schedules from seeds (pure), :mod:`.inject` applies the lab's
faults, :mod:`.runner` runs one schedule under load, :mod:`.checker` judges it (pure),
:mod:`.report` writes the campaign's tables and picture. ``bench/chaos.py`` is the
command."""
