"""Scheduled jobs: a registry filled by declaration, cron-like schedules, one leader per job.

`powernode worker` runs them; in the embedded default (SQLite) `powernode serve` runs them too.
"""
