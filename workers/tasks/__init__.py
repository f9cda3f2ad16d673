"""Celery tasks, one module per room. Thin: load, call a service or the engine, record the outcome."""
