#!/usr/bin/env bash
# Regenerates migrations/versions/0001_initial_schema.py from the ORM models.
# Only while 0001 has not landed on main; after that, schema changes get a new migration.
set -euo pipefail
cd "$(dirname "$0")/.."
db="unlearnd_regen_$$"
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
# Later migrations (hand-written SQL on top of 0001) name 0001 as their parent; alembic
# cannot load them while 0001 is missing, so they wait aside during the regeneration.
later=$(mktemp -d)
find migrations/versions -maxdepth 1 -name '0*.py' ! -name '0001_*' -exec mv {} "$later" \;
trap 'mv "$later"/*.py migrations/versions/ 2>/dev/null || true; rmdir "$later"; psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
rm -f migrations/versions/0001_initial_schema.py
UNLEARND_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1/$db" \
  .venv/bin/alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
.venv/bin/ruff check --fix -q migrations/versions/0001_initial_schema.py || true
.venv/bin/ruff format -q migrations/versions/0001_initial_schema.py || true
echo "regenerated migrations/versions/0001_initial_schema.py"
