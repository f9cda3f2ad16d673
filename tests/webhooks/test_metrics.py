"""/metrics reports webhook delivery failures and the backlog, read from the delivery log."""

from __future__ import annotations

from tests.metrics.test_metrics import sample
from tests.webhooks.conftest import wait_until
from tests.webhooks.test_dispatch import deliver_now, register, submit


def test_failures_and_backlog_show_then_drain(webhook_env, backend, api, make_client, receiver):
    admin = make_client("admin")
    scrape = lambda: api.get("/metrics", headers=admin.headers).text  # noqa: E731
    quiet = scrape()
    assert sample(quiet, "unlearnd_webhook_deliveries", status="pending") == 0
    assert sample(quiet, "unlearnd_webhook_failed_attempts_total") == 0
    assert sample(quiet, "unlearnd_webhook_oldest_pending_age_seconds") == 0

    register(api, admin, receiver, events=["deletion_request.received"])
    receiver.stop()
    for n in range(3):
        submit(api, admin, f"metrics{n}@example.org")
    deliver_now()  # the receiver is down: the first attempt fails, its chain waits behind it
    down = scrape()
    assert sample(down, "unlearnd_webhook_deliveries", status="pending") == 3
    assert sample(down, "unlearnd_webhook_deliveries", status="delivered") == 0
    failed = sample(down, "unlearnd_webhook_failed_attempts_total")
    assert failed is not None and failed >= 1
    assert sample(down, "unlearnd_webhook_endpoints_unhealthy", state="failing") == 1
    assert sample(down, "unlearnd_webhook_oldest_pending_age_seconds") > 0

    receiver.start()

    def drained() -> bool:
        deliver_now()
        return sample(scrape(), "unlearnd_webhook_deliveries", status="delivered") == 3

    wait_until(drained, timeout=60, interval=0.2)
    up = scrape()
    assert sample(up, "unlearnd_webhook_deliveries", status="pending") == 0
    assert sample(up, "unlearnd_webhook_oldest_pending_age_seconds") == 0
    assert sample(up, "unlearnd_webhook_failed_attempts_total") >= failed  # a counter never goes back
    assert sample(up, "unlearnd_webhook_endpoints_unhealthy", state="failing") == 0
