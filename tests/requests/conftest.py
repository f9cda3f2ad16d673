"""Fixtures for the deletion-request tests: a small registry written straight through the ORM."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pyroaring import BitMap

PEPPER = b"test-pepper-not-secret"  # matches UNLEARND_SUBJECT_PEPPER in tests/conftest.py


@dataclass(frozen=True)
class SeededModel:
    dataset: str
    model_id: str
    model_name: str
    version_id: str
    record_ids: dict[str, int]  # record key -> DataRecord.id


@pytest.fixture
def seed_model(env: dict[str, str]) -> Callable[..., SeededModel]:
    """A dataset whose records belong to the given raw subjects, and a model version trained on
    all of them. Only hashes are written, exactly as ingestion would."""
    from app.core.database import session_scope
    from app.core.hashing import sha256_hex, subject_hash
    from app.registry.models import (
        DataRecord,
        Dataset,
        DatasetSnapshot,
        ModelVersion,
        RegisteredModel,
        VersionState,
    )

    def factory(subjects: dict[str, tuple[str, str]], *, trained: bool = True) -> SeededModel:
        """``subjects``: record key -> (identifier type, raw identifier)."""
        suffix = uuid.uuid4().hex[:6]
        with session_scope() as session:
            dataset = Dataset(name=f"ds-{suffix}", uri="/data/x.csv", format="csv", schema={}, status="ready")
            session.add(dataset)
            session.flush()
            records = [
                DataRecord(
                    dataset_id=dataset.id, row_index=row, record_key=key,
                    subject_hash=subject_hash(kind, raw, PEPPER), content_hash=sha256_hex(key.encode()),
                )
                for row, (key, (kind, raw)) in enumerate(subjects.items())
            ]
            session.add_all(records)
            session.flush()
            model = RegisteredModel(
                name=f"model-{suffix}", adapter="logreg", hyperparameters={}, dataset_id=dataset.id, policy={}
            )
            session.add(model)
            session.flush()
            version_id = None
            if trained:
                snapshot = DatasetSnapshot(
                    dataset_id=dataset.id, record_count=len(records),
                    members=BitMap(range(len(records))).serialize(), merkle_root="0" * 64,
                )
                session.add(snapshot)
                session.flush()
                version = ModelVersion(
                    model_id=model.id, number=1, snapshot_id=snapshot.id, state=VersionState.ACTIVE,
                    artifact_uri="file:///x", artifact_sha256="0" * 64,
                )
                session.add(version)
                session.flush()
                version_id = version.id
            return SeededModel(
                dataset=dataset.name, model_id=model.id, model_name=model.name, version_id=version_id or "",
                record_ids={r.record_key: r.id for r in records},
            )

    return factory


def submission(**overrides: object) -> dict:
    body: dict = {
        "subject": [{"type": "email", "value": "nobody@example.org"}],
        "legal_basis": "gdpr_art17",
        "jurisdiction": "EU",
        "identity_verification": {"method": "email_link", "verified_at": "2025-01-01T00:00:00+00:00"},
    }
    body.update(overrides)
    return body
