"""Deletion-request intake and lifecycle."""
