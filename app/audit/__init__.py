"""Append-only, hash-chained audit log. Imports nothing above core."""
