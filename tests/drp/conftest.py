from tests.requests.conftest import seed_model  # noqa: F401 - the registry fixture DRP requests resolve against
