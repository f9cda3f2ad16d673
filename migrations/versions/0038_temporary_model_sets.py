"""Temporary model sets in the registry, so lineage lists them

A qualification study trains originals, retrains and unlearned models in worker memory
only. ``temporary_model_sets`` records, per study, the snapshot they were trained on, how
many of each kind, when they were created and when destroyed: lineage queries list them
beside model versions, and a set not yet destroyed still holds its snapshot's records.

Revision ID: 0038
Revises: 0037
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "temporary_model_sets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("snapshot_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("reference_id", sa.String(length=36), nullable=False),
        sa.Column("storage", sa.String(length=200), nullable=False),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("destroyed_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["registered_models.id"],
                                name=op.f("fk_temporary_model_sets_model_id_registered_models")),
        sa.ForeignKeyConstraint(["snapshot_id"], ["dataset_snapshots.id"],
                                name=op.f("fk_temporary_model_sets_snapshot_id_dataset_snapshots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_temporary_model_sets")),
    )
    for column in ("model_id", "snapshot_id", "reference_id", "destroyed_at"):
        op.create_index(op.f(f"ix_temporary_model_sets_{column}"), "temporary_model_sets", [column])


def downgrade() -> None:
    for column in ("model_id", "snapshot_id", "reference_id", "destroyed_at"):
        op.drop_index(op.f(f"ix_temporary_model_sets_{column}"), table_name="temporary_model_sets")
    op.drop_table("temporary_model_sets")
