"""Prometheus exposition: process samples from every process plus the database's state."""
