"""qualification audits and study runs: revocation, the approximate-job count and the
record of the study's temporary models

A qualification can now be revoked by a sampling audit (an exact retrain compared per
example with a job's approximate result); ``approximate_jobs`` counts the jobs that kept an
approximate result under it (every k-th is audited); ``temporary_models`` records what the
study trained, on which snapshot, where it was kept and when it was destroyed.

Revision ID: 0032
Revises: 0031
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("method_qualifications") as batch:
        batch.add_column(sa.Column("approximate_jobs", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("revoked_at", app.core.database.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revocation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("temporary_models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("method_qualifications") as batch:
        batch.drop_column("temporary_models")
        batch.drop_column("revocation")
        batch.drop_column("revoked_at")
        batch.drop_column("approximate_jobs")
