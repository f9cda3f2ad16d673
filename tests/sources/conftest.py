"""Source removal tests reuse the jobs suite's helpers: its broker database and the demo installer."""

from tests.jobs.conftest import _own_broker, install_demo  # noqa: F401 - fixtures
