"""The Celery side of ELM Lab, one module per role: the app configured from settings (celery_app), the
tasks (tasks), submission and run control (submit), broker and worker health and live progress
(health), the reaper (reaper); what submitters and workers tell each other through the result
backend (state). The processes: `elmlab worker`, `elmlab recorder`, `elmlab up`.

See docs/queue.md for how the pieces run together.
"""
