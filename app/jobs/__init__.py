"""Unlearning jobs: batching, lifecycle, verify-or-fallback, purge."""
