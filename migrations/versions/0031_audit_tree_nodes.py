"""stored Merkle tree for the audit log

``audit_tree_nodes`` holds every perfect subtree hash of the audit tree (Trillian's
layout), so a signed head or a proof reads O(log n) nodes instead of every event hash.
The tree of an existing log is built here from its events, in seq order, streaming; it is
append-only on PostgreSQL like the events themselves.

Revision ID: 0031
Revises: 0030
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.audit.proofs import event_leaf
from app.core import merkle

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 10_000

nodes = sa.table(
    "audit_tree_nodes",
    sa.column("level", sa.SmallInteger),
    sa.column("position", sa.BigInteger),
    sa.column("hash", sa.LargeBinary),
)


def upgrade() -> None:
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "position", name=op.f("pk_audit_tree_nodes")),
    )
    _backfill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        # unlearnd_reject_audit_change() comes from migration 0002.
        op.execute(
            "CREATE TRIGGER audit_tree_nodes_no_update_delete BEFORE UPDATE OR DELETE ON audit_tree_nodes "
            "FOR EACH ROW EXECUTE FUNCTION unlearnd_reject_audit_change()"
        )
        op.execute(
            "CREATE TRIGGER audit_tree_nodes_no_truncate BEFORE TRUNCATE ON audit_tree_nodes "
            "FOR EACH STATEMENT EXECUTE FUNCTION unlearnd_reject_audit_change()"
        )


def _backfill(connection: sa.Connection) -> None:
    """Nodes for the contiguous prefix of the chain (seq 1, 2, ...); a log with a gap is
    broken, and the application catches the tree up from the events if it ever lags."""
    size, frontier = 0, {}
    query = sa.text("SELECT seq, hash FROM audit_events ORDER BY seq").execution_options(yield_per=_BATCH)
    rows = connection.execute(query)
    for batch in rows.partitions():
        leaves = []
        for seq, event_hash in batch:
            if seq != size + len(leaves) + 1:
                break
            leaves.append(event_leaf(event_hash))
        if leaves:
            completed = merkle.append_nodes(size, frontier, leaves)
            connection.execute(nodes.insert(), [{"level": lv, "position": p, "hash": h} for lv, p, h in completed])
            size += len(leaves)
        if len(leaves) < len(batch):
            break
    rows.close()


def downgrade() -> None:
    op.drop_table("audit_tree_nodes")
