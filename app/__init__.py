"""Unlearnd: deletion requests in, unlearned models and signed proofs out."""

__version__ = "0.1.0"
