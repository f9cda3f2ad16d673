"""Celery app and tasks; ``workers.unlearning`` is the PyTorch engine (imports nothing from app)."""
