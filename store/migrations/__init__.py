"""Versioned schema migrations: each step runs once, in order, inside a transaction, and is
recorded in `schema_migrations` (store.postgres.db, store.sqlite_db). A store applies what is
pending when it opens; `landun db upgrade` does the same without starting anything else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def pending(migrations: tuple[Migration, ...], applied: set[int]) -> list[Migration]:
    """The steps not applied yet, oldest first; the versions must run 1, 2, 3... without gaps."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")
    unknown = applied - set(versions)
    if unknown:
        raise RuntimeError(
            f"the database has schema versions {sorted(unknown)} this release does not know:"
            " it was upgraded by a newer Landun"
        )
    return [m for m in migrations if m.version not in applied]
