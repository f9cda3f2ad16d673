"""Datasets, records, snapshots, models, versions and their artifacts."""
