"""The lineage room's own table: the change log its record query keys its cache on."""

from __future__ import annotations

from sqlalchemy import Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base
from app.registry.models import BigId


class LineageChange(Base):
    """One write's mark on a dataset's lineage: a statement that wrote its snapshots, temporary
    model sets, versions or artifacts (or any registered model) added one, in its own
    transaction, through PostgreSQL triggers (migration 0041). Only inserted, but for
    ``service.compact_changes``'s fold, so a dataset's count, sum and maximum of ``seq`` change
    with every committed write: the record query's cache key. Never written on SQLite, whose
    record query reads everything each time."""

    __tablename__ = "lineage_changes"
    __table_args__ = (Index("ix_lineage_changes_dataset", "dataset_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigId, Identity(always=True), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(36))
