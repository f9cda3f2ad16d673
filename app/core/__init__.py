"""Shared plumbing: settings, database, errors, auth, hashing, Merkle trees."""
