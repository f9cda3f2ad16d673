"""lineage changes: an append-only log of which datasets' lineage each write changed (PostgreSQL)

The record query keeps its dataset's part of the answer per fingerprint of the rows that part is
read from. Hashing those rows (~150 at 50 snapshots) on every query cost 0.87 ms of PostgreSQL
time; with this log the fingerprint is the dataset row's version and the count, sum and maximum
of its entries here, an index-only read.

Each statement that writes snapshots, temporary model sets, model versions or artifacts adds
one row per dataset whose lineage it touched, in its own transaction, so the entry becomes
visible exactly when the change does. A change to registered models, or a TRUNCATE of any of
these tables, adds one row for every dataset. Only inserts (but for the lineage sweep's fold,
``app.lineage.service.compact_changes``), and a sequence gives each a distinct number, so a
dataset's (count, sum, maximum) changes with every committed write, whatever order writers
commit in. Statement-level triggers with transition
tables: one insert per statement, and no row that concurrent writers would queue on (a counter
row updated per write would serialise ingestion, training registration and purges).

The triggers fire in the default ``origin`` replication role only (as the audit log's do): a
logical-replication subscriber applying these tables must run the record query uncached.
SQLite has the table but no triggers: its record query reads everything each time.

Revision ID: 0041
Revises: 0040
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The datasets whose lineage a set of changed rows (a transition table, named below) touches.
_DATASETS_OF = {
    "dataset_snapshots": "SELECT dataset_id FROM {rows}",
    "temporary_model_sets": "SELECT s.dataset_id FROM {rows} t JOIN dataset_snapshots s ON s.id = t.snapshot_id",
    # A version's number, state and model appear in the answer through its artifacts too, and an
    # artifact may be trained on another snapshot than its version.
    "model_versions": """SELECT s.dataset_id FROM {rows} v JOIN dataset_snapshots s ON s.id = v.snapshot_id
        UNION SELECT s.dataset_id FROM {rows} v JOIN model_artifacts a ON a.version_id = v.id
        JOIN dataset_snapshots s ON s.id = a.snapshot_id""",
    "model_artifacts": "SELECT s.dataset_id FROM {rows} a JOIN dataset_snapshots s ON s.id = a.snapshot_id",
}
_OPERATIONS = {"INSERT": "NEW TABLE AS changed_rows", "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS changed_rows",
               "DELETE": "OLD TABLE AS changed_rows"}


def upgrade() -> None:
    op.create_table("lineage_changes",
                    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(always=True),
                              primary_key=True),
                    sa.Column("dataset_id", sa.String(36), nullable=False))
    op.create_index("ix_lineage_changes_dataset", "lineage_changes", ["dataset_id", "seq"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION lineage_changes_everywhere() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lineage_changes (dataset_id) SELECT id FROM datasets;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER registered_models_lineage_changes AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON registered_models FOR EACH STATEMENT EXECUTE FUNCTION lineage_changes_everywhere()""")
    for table, datasets in _DATASETS_OF.items():
        changed = datasets.format(rows="changed_rows")
        before = datasets.format(rows="old_rows")
        op.execute(f"""
            CREATE FUNCTION {table}_lineage_changes() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    INSERT INTO lineage_changes (dataset_id) {changed} UNION {before};
                ELSE
                    INSERT INTO lineage_changes (dataset_id) SELECT DISTINCT dataset_id FROM ({changed}) AS touched;
                END IF;
                RETURN NULL;
            END $$""")
        for operation, referencing in _OPERATIONS.items():
            op.execute(f"""
                CREATE TRIGGER {table}_{operation.lower()}_lineage_changes AFTER {operation} ON {table}
                REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {table}_lineage_changes()""")
        op.execute(f"""
            CREATE TRIGGER {table}_truncate_lineage_changes AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION lineage_changes_everywhere()""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _drop_triggers()
    op.drop_index("ix_lineage_changes_dataset", table_name="lineage_changes")
    op.drop_table("lineage_changes")


def _drop_triggers() -> None:
    for table in _DATASETS_OF:
        for operation in (*_OPERATIONS, "TRUNCATE"):
            op.execute(f"DROP TRIGGER {table}_{operation.lower()}_lineage_changes ON {table}")
        op.execute(f"DROP FUNCTION {table}_lineage_changes()")
    op.execute("DROP TRIGGER registered_models_lineage_changes ON registered_models")
    op.execute("DROP FUNCTION lineage_changes_everywhere()")
