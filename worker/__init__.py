"""Celery workers that run training jobs with ``core``; one worker per GPU (or a CPU worker)."""
