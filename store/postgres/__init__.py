"""PostgreSQL: the production store (store.postgres.store) and waste ledger
(store.postgres.ledger) on one database, its schema kept by versioned migrations."""
