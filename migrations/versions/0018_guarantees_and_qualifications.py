"""guarantee class on requests; method qualification studies

A completed request states the weakest guarantee (exact, certified, approximate) among
the jobs that forgot it. ``method_qualifications`` holds the studies that allow an
approximate method to run on a model version inside a forget-size band.

Revision ID: 0018
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.database

revision: str = "0018"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deletion_requests", sa.Column("guarantee", sa.String(length=16), nullable=True))
    op.create_table(
        "method_qualifications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("band_min", sa.Integer(), nullable=False),
        sa.Column("band_max", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("report_sha256", sa.String(length=64), nullable=True),
        sa.Column("signature", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.core.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", app.core.database.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["registered_models.id"], name=op.f("fk_method_qualifications_model_id_registered_models")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name=op.f("fk_method_qualifications_version_id_model_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_method_qualifications")),
    )
    op.create_index(op.f("ix_method_qualifications_model_id"), "method_qualifications", ["model_id"], unique=False)
    op.create_index(op.f("ix_method_qualifications_version_id"), "method_qualifications", ["version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_method_qualifications_version_id"), table_name="method_qualifications")
    op.drop_index(op.f("ix_method_qualifications_model_id"), table_name="method_qualifications")
    op.drop_table("method_qualifications")
    op.drop_column("deletion_requests", "guarantee")
