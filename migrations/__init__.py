"""Alembic migrations; shipped inside the package as `editaudit.migrations` so `editaudit migrate` finds them."""
