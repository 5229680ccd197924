"""Schedules: a template run on a cron schedule, reviewed once.

- :mod:`.timing`: cron expressions, the next occurrence, what a late tick does;
- :mod:`.service`: creating one (its review task), the clock that settles reviews, suspends what a
  new commit changed and starts due runs (each occurrence claimed once), and posting results.
"""
