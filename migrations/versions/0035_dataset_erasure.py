"""training-data erasure: forgotten rows rewritten out of managed dataset files

``dataset_erasures`` records each rewrite (old and new file sha256, rows erased, when the
old bytes were destroyed) or, for a file at an external location, that its owner was told
to redact it; ``data_records.erasure_id`` names the erasure that took a row out.

Revision ID: 0035
Revises: 0034
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dataset_erasures",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request_ids", sa.JSON(), nullable=False),
        sa.Column("old_uri", sa.String(length=2000), nullable=False),
        sa.Column("old_sha256", sa.String(length=64), nullable=True),
        sa.Column("new_uri", sa.String(length=2000), nullable=True),
        sa.Column("new_sha256", sa.String(length=64), nullable=True),
        sa.Column("rows_before", sa.BigInteger(), nullable=True),
        sa.Column("rows_erased", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("destroy_after", Time, nullable=True),
        sa.Column("old_destroyed_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_erasures_dataset_id_datasets"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_erasures")),
    )
    op.create_index("ix_dataset_erasures_dataset_id", "dataset_erasures", ["dataset_id"])
    with op.batch_alter_table("data_records") as batch:
        batch.add_column(sa.Column("erasure_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("data_records") as batch:
        batch.drop_column("erasure_id")
    op.drop_index("ix_dataset_erasures_dataset_id", table_name="dataset_erasures")
    op.drop_table("dataset_erasures")
