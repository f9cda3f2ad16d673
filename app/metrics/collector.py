"""Gauges read from the database at scrape time.

State that lives in the database (requests, jobs, the outbox) is read there rather than
counted in memory, so every API process reports the same figures and a restart loses none.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from app.core import outbox
from app.jobs import stats as job_stats
from app.requests import stats as request_stats
from app.webhooks import stats as webhook_stats

# Deadline slack and completion times are measured in days and hours, not milliseconds.
SLACK_BUCKETS = tuple(d * 86400.0 for d in (-7, -1, 0, 1, 3, 5, 10, 20, 30, 45))
COMPLETION_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0, 30 * 86400.0)
COMPLETION_WINDOW = timedelta(days=30)


def distribution(name: str, doc: str, values: list[float], buckets: tuple[float, ...]) -> GaugeHistogramMetricFamily:
    """The distribution of a current state (it may shrink between scrapes, unlike a histogram)."""
    counts = [sum(1 for v in values if v <= bound) for bound in buckets]
    return GaugeHistogramMetricFamily(
        name, doc,
        buckets=[*[(repr(bound), count) for bound, count in zip(buckets, counts, strict=True)],
                 ("+Inf", len(values))],
        gsum_value=sum(values),
    )


class DatabaseStateCollector(Collector):
    """Reads through the scrape request's own session: on SQLite a second one would queue
    behind the first one's write lock."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        session = self.session
        requests = GaugeMetricFamily(
            "unlearnd_deletion_requests", "Deletion requests by status and legal basis.",
            labels=["status", "legal_basis"],
        )
        for status, basis, count in request_stats.counts_by_status_and_basis(session):
            requests.add_metric([status, basis], count)
        yield requests
        yield distribution(
            "unlearnd_open_request_deadline_slack_seconds",
            "Time left before each open request's legal deadline (negative: overdue).",
            request_stats.open_deadline_slack_seconds(session), SLACK_BUCKETS,
        )
        yield distribution(
            "unlearnd_request_completion_seconds",
            "Received-to-completed time of requests completed in the last 30 days.",
            request_stats.completion_seconds(session, COMPLETION_WINDOW), COMPLETION_BUCKETS,
        )
        jobs = GaugeMetricFamily(
            "unlearnd_jobs",
            "Jobs by kind, method asked for and used, guarantee, status, verification verdict and fallback.",
            labels=["kind", "method", "method_used", "guarantee", "status", "verdict", "fell_back"],
        )
        for group, count in job_stats.job_groups(session).items():
            jobs.add_metric([group.kind, group.method, group.method_used, group.guarantee, group.status,
                             group.verdict, str(group.fell_back).lower()], count)
        yield jobs
        yield GaugeMetricFamily(
            "unlearnd_oldest_queued_job_age_seconds", "How long the oldest queued job has waited.",
            value=job_stats.oldest_queued_age_seconds(session),
        )
        pending, age = outbox.backlog(session)
        yield GaugeMetricFamily("unlearnd_outbox_pending", "Outbox messages not yet handed to the broker.",
                                value=pending)
        yield GaugeMetricFamily("unlearnd_outbox_oldest_pending_age_seconds",
                                "Age of the oldest outbox message not yet handed to the broker.", value=age)
        webhooks = webhook_stats.backlog(session)
        deliveries = GaugeMetricFamily(
            "unlearnd_webhook_deliveries",
            "Webhook deliveries by status (pending: the backlog; failed: every retry spent).",
            labels=["status"],
        )
        for status, count in sorted(webhooks.by_status.items()):
            deliveries.add_metric([status], count)
        yield deliveries
        yield GaugeMetricFamily("unlearnd_webhook_oldest_pending_age_seconds",
                                "Age of the oldest webhook delivery not yet delivered.",
                                value=webhooks.oldest_pending_age_seconds)
        yield CounterMetricFamily("unlearnd_webhook_failed_attempts",
                                  "Webhook HTTP attempts that did not deliver (refused, timed out, non-2xx).",
                                  value=webhooks.failed_attempts)
        endpoints = GaugeMetricFamily("unlearnd_webhook_endpoints_unhealthy",
                                      "Webhook endpoints failing now (still active) or disabled.", labels=["state"])
        endpoints.add_metric(["failing"], webhooks.endpoints_failing)
        endpoints.add_metric(["disabled"], webhooks.endpoints_disabled)
        yield endpoints
