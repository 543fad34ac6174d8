"""The outbox tables in the bed's SQLite log (no HL7 library needed: the store's migration uses it)."""

from __future__ import annotations

from sqlite_utils import Database

TABLE = "hl7_outbox"
STATE_TABLE = "hl7_outbox_state"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS [{TABLE}] (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- MSH-13: per-bed delivery order, never reused
    bed_id TEXT NOT NULL,
    kind TEXT NOT NULL,                    -- 'alarm' (PCD-04) or 'observation' (PCD-01)
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    ref INTEGER NOT NULL,                  -- the transition's seq, or the window's idx
    control_id TEXT NOT NULL UNIQUE,       -- MSH-10
    created_wall REAL NOT NULL,
    message TEXT NOT NULL,                 -- ER7, segments joined by CR
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS [idx_{TABLE}_bed] ON [{TABLE}] (bed_id, id);
CREATE TABLE IF NOT EXISTS [{STATE_TABLE}] (
    bed_id TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,             -- messages the central accepted (ACK AA)
    dropped_observations INTEGER NOT NULL DEFAULT 0,  -- oldest observation messages dropped at the bound
    build_errors INTEGER NOT NULL DEFAULT 0,          -- reports that could not be encoded (a bug: logged)
    last_drop_wall REAL
);
"""


def create_tables(db: Database) -> None:
    """The outbox tables (the store's migration m002 calls this, inside its transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
