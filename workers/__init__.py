"""The Celery side of ELM Lab: the app (celery_app), the tasks (tasks), the submitter's API (client),
the reaper (reaper) and the processes (`elmlab worker`, `elmlab recorder`, `elmlab up`).

See docs/queue.md for how the pieces run together.
"""
