"""Source removal tests reuse the jobs suite's helpers: its broker database and the demo installer."""

from tests.jobs.conftest import _own_broker, install_demo  # noqa: F401 - fixtures
from tests.webhooks.conftest import make_receiver, webhook_env  # noqa: F401 - fixtures: a real HTTP receiver
