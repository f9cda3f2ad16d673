"""datasets record the identifier canonicaliser their subject hashes were made with

Rows ingested before this revision were hashed by canonicaliser version 1, so existing
datasets get 1; intake hashes every identifier once per version still present.

Revision ID: 0010
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("canonicaliser_version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("canonicaliser_version")
