"""The evaluation file: `scheda eval`'s runs and `scheda compare`'s comparisons.

Two stores read and write it, each its own tables (`evals.EvalStore`,
`comparisons.ComparisonStore`); the file's version is one, so its migrations
are declared here, once, for both.
"""

from __future__ import annotations

from scheda.stores.sqlite import Schema, statements

FILENAME = "evals.sqlite3"

# The file's migrations, oldest first. The first is the schema scheda wrote before the file
# had a version, word for word: IF NOT EXISTS brings such a file to version 1 as it is (a
# file from before comparisons were stored gains their table).
MIGRATIONS = (
    statements(
        """
    CREATE TABLE IF NOT EXISTS runs (
        id        TEXT PRIMARY KEY,
        identity  TEXT NOT NULL,
        model     TEXT NOT NULL,
        path      TEXT NOT NULL,
        task      TEXT NOT NULL,
        config    TEXT NOT NULL,
        items     INTEGER NOT NULL,
        created   REAL NOT NULL,
        finished  REAL,
        summary   TEXT
    )
    """,
        """
    CREATE TABLE IF NOT EXISTS results (
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key     TEXT NOT NULL,
        grp     TEXT NOT NULL DEFAULT '',
        metrics TEXT NOT NULL,
        detail  TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    )
    """,
        "CREATE INDEX IF NOT EXISTS runs_by_identity ON runs(identity, finished)",
        # `scheda compare`'s tables, each kept whole: the figures, how they were obtained, the
        # machine and versions.
        """
    CREATE TABLE IF NOT EXISTS comparisons (
        id        TEXT PRIMARY KEY,
        reference TEXT NOT NULL,
        models    INTEGER NOT NULL,
        text      TEXT NOT NULL,
        created   REAL NOT NULL,
        record    TEXT NOT NULL
    )
    """,
    ),
)
SCHEMA = Schema(
    FILENAME,
    "evaluation file",
    MIGRATIONS,
    # What an unversioned evaluation file may hold (the PRIMARY KEYs' automatic indexes are
    # named sqlite_autoindex_*, left out of the check).
    unversioned=frozenset({"runs", "results", "runs_by_identity", "comparisons"}),
)
