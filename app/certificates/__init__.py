"""Signed deletion certificates, verifiable offline."""
