"""The requests tests' registry fixture, for requests whose records some model holds."""

from tests.requests.conftest import seed_model  # noqa: F401 - a fixture, registered by import
