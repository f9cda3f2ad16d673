"""Signed outbound callbacks on every state change."""
