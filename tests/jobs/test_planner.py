from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.jobs.planner import BatchPolicy, CostModel, PendingDeletion, decide

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
POLICY = BatchPolicy(max_batch_size=10, window=timedelta(minutes=30), safety_factor=2, risk_margin=timedelta(hours=1))
COST = CostModel(seconds_per_unit=60, fixed_seconds=0)


def pending(i: int, *, age_min: float = 1, due_days: float = 30, shards=None) -> PendingDeletion:
    return PendingDeletion(
        request_id=f"r{i}",
        received_at=NOW - timedelta(minutes=age_min),
        due_at=NOW + timedelta(days=due_days),
        shards=frozenset(shards) if shards is not None else None,
    )


def test_fresh_requests_wait_for_the_window():
    decision = decide([pending(i) for i in range(3)], POLICY, COST, NOW)
    assert not decision.run and decision.reason == "waiting for more requests"


def test_window_expiry_runs_the_batch():
    decision = decide([pending(0, age_min=31), pending(1)], POLICY, COST, NOW)
    assert decision.run and decision.reason == "window expired" and len(decision.batch) == 2


def test_full_batch_runs_and_takes_earliest_deadlines_first():
    requests = [pending(i, due_days=30 - i) for i in range(12)]
    decision = decide(requests, POLICY, COST, NOW)
    assert decision.run and decision.reason == "batch full"
    assert {p.request_id for p in decision.batch} == {f"r{i}" for i in range(2, 12)}


def test_a_request_near_its_deadline_triggers_the_batch_early():
    near = pending(0, due_days=1 / 24 + 0.001)  # just over an hour left: inside margin + 2x estimate
    decision = decide([near, pending(1)], POLICY, COST, NOW)
    assert decision.run and decision.reason == "deadline at risk"
    assert [p.request_id for p in decision.at_risk] == ["r0"]


def test_sisa_cost_counts_distinct_shards():
    batch = [pending(i, age_min=40, shards={i % 3}) for i in range(9)]
    decision = decide(batch, POLICY, COST, NOW)
    assert decision.units == 3 and decision.units_if_alone == 9 and decision.units_saved == 6


def test_unsharded_batch_costs_one_job_for_all():
    decision = decide([pending(i, age_min=40) for i in range(5)], POLICY, COST, NOW)
    assert decision.units == 1 and decision.units_saved == 4


def test_cost_model_learns_the_median_rate():
    learned = CostModel.learn([(10.0, 1), (40.0, 2), (1000.0, 1)])
    assert learned.seconds_per_unit == 20.0
    assert CostModel.learn([]) == CostModel()


def test_an_expired_window_waits_for_a_burst_to_settle():
    settling = BatchPolicy(max_batch_size=10, window=timedelta(0), settle=timedelta(seconds=2),
                           risk_margin=timedelta(hours=1))
    burst = [pending(0, age_min=1), pending(1, age_min=0.01)]  # the last one arrived 0.6 s ago
    assert decide(burst, settling, COST, NOW).reason == "waiting for more requests"
    assert decide(burst, settling, COST, NOW + timedelta(seconds=2)).reason == "window expired"
    full = [pending(i, age_min=0.01) for i in range(10)]
    assert decide(full, settling, COST, NOW).reason == "batch full"


def test_a_batch_touching_every_shard_is_a_full_retrain_and_may_wait_longer():
    from dataclasses import replace

    holding = replace(POLICY, full_retrain_window=timedelta(days=7))
    every_shard = [pending(0, age_min=31, shards={0, 1}), pending(1, shards={2, 3})]
    decision = decide(every_shard, holding, COST, NOW, full_units=4)
    assert decision.full_retrain and not decision.run  # more requests cost nothing more
    some_shards = [pending(0, age_min=31, shards={0}), pending(1, shards={2})]
    decision = decide(some_shards, holding, COST, NOW, full_units=4)
    assert not decision.full_retrain and decision.run and decision.reason == "window expired"
    # Deadlines still start a held full retrain.
    decision = decide([*every_shard, pending(2, due_days=1 / 24 + 0.001, shards={0})], holding, COST, NOW,
                      full_units=4)
    assert decision.full_retrain and decision.run and decision.reason == "deadline at risk"
    # Without a longer full-retrain window the ordinary window applies.
    assert decide(every_shard, POLICY, COST, NOW, full_units=4).run
    # A Newton-style batch (no retrain) is never a full retrain.
    assert not decide([pending(0)], POLICY, COST, NOW, full_units=None).full_retrain


def test_retrains_per_request_over_past_batches():
    from app.jobs.planner import retrains_per_request

    assert retrains_per_request([(30, True), (20, False), (50, True)]) == {
        "batches": 3, "requests": 100, "retrains": 2, "retrains_per_request": 0.02}
    assert retrains_per_request([])["retrains_per_request"] == 0.0
