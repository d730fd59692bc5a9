"""The one SQLite base every store stands on: opening, locking, errors and migrations.

Why these settings, for every store alike:

- One file per kind of data, in the user's data folder (`SCHEDA_DATA_DIR`
  overrides the folder); the folder is made on first use.
- WAL journal: readers never block the writer and a process killed mid-write
  loses only its uncommitted transaction; `synchronous=NORMAL` is durable
  enough under WAL (a power cut may lose the last commits, never corrupts).
- Several processes may open a file at once (a command, the HTTP server, an
  evaluation's driver): every write is one short `BEGIN IMMEDIATE` transaction,
  which takes the write lock up front so two writers queue on the busy timeout
  instead of failing, and nothing holds a transaction open between calls.
- Foreign keys on: the cascades the schemas declare need them, per connection.
- One connection per store object, usable from any thread behind a lock.
- SQLite's errors about the file become the store's own `StoreError`, one line
  that says what to do; errors that mean a bug in scheda's SQL stay as they are.

A file's schema has a version, `PRAGMA user_version` (0: a file scheda has not
set up), and an ordered list of migrations: migration N takes the file from
version N-1 to N. Opening a file applies the ones it lacks, all in one write
transaction with the new version, so a failing migration leaves the file as
it was, and two processes opening an old file at once migrate it once. A file
of a newer version than this scheda knows is refused. A file's version is the
file's, not a store's: stores that share a file share its list (the
evaluation file holds the runs and the comparisons); a new kind of data takes
a file of its own.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

from scheda import settings
from scheda.errors import StoreError

BUSY_TIMEOUT_S = 10.0

# One step of a schema, run inside the migrating transaction.
Migration = Callable[[sqlite3.Connection], None]

MOVE_AWAY = (
    f"move it away (scheda starts a new one) or set {settings.ENV_DATA_DIR} to another folder"
)


def statements(*sql: str) -> Migration:
    """A migration made of SQL statements, run one by one (executescript would commit first)."""

    def migrate(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return migrate


@dataclass(frozen=True)
class Schema:
    """What a store's file is: its name, what to call it in a message, its migrations.

    `unversioned` names the tables and indexes an unversioned file (user_version 0)
    may hold and still be this schema's: a file written before scheda kept versions.
    Migration 1 must then create its tables only where missing (IF NOT EXISTS),
    so that it brings such a file to version 1 without touching its rows. Any
    other unversioned file with tables is someone else's, and refused.
    """

    filename: str
    noun: str  # "sessions file": what a message calls the file
    migrations: tuple[Migration, ...]
    unversioned: frozenset[str] = frozenset()

    @property
    def version(self) -> int:
        return len(self.migrations)


class Store:
    """A SQLite file opened, migrated to its schema's version, and kept open until `close()`.

    A subclass names its `schema` and its `error` (a `StoreError`), and reads
    and writes through `_transaction`. Use it as a context manager, or call `close()`.
    """

    schema: ClassVar[Schema]
    error: ClassVar[type[StoreError]] = StoreError

    def __init__(self, path: str | Path | None = None, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else settings.data_dir() / self.schema.filename
        self.timeout = timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.journal_mode = ""  # "wal" once open; another where the file system refuses WAL
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error(
                f"cannot create the folder of the {self.schema.noun}, {self.path.parent}: "
                f"{exc.strerror or exc}; set {settings.ENV_DATA_DIR} to a writable folder"
            ) from exc
        with self._guard():
            # isolation_level=None: no implicit transactions; each method opens its own.
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        self._conn.row_factory = sqlite3.Row
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening and migrating ----------------------------------------------------------

    def _open(self) -> None:
        """Per-connection settings, then the migrations the file lacks."""
        conn = self._connection()
        with self._guard():
            conn.execute("PRAGMA foreign_keys = ON")  # per connection; cascades need it
            # The first read of the file: a file that is not SQLite fails here.
            self.journal_mode = self._wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != self.schema.version:
            self._migrate()

    def _wal(self, conn: sqlite3.Connection) -> str:
        """The WAL journal, waited for as long as the busy timeout.

        Switching a file to WAL takes an exclusive lock, and SQLite answers "locked" at once,
        without its busy handler, while another process is setting up the same new file: so
        two commands opening a new data folder together would have one of them fail.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return mode
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        """Apply the migrations the file lacks, or refuse a file this scheda cannot read.

        One write transaction: the version is read again under the write lock
        (another process may have migrated meanwhile), and any error rolls back
        every step, the version included.
        """
        with self._transaction(write=True) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > self.schema.version:
                raise self.error(
                    f"{self.path} was written by a newer scheda (schema {version}, this one "
                    f"reads {self.schema.version}): upgrade scheda or set "
                    f"{settings.ENV_DATA_DIR} to another folder"
                )
            if version == 0:
                self._check_unversioned(conn)
            for migration in self.schema.migrations[version:]:
                migration(conn)
            # A pragma takes no parameters; the version is this code's own integer.
            conn.execute(f"PRAGMA user_version = {self.schema.version:d}")

    def _check_unversioned(self, conn: sqlite3.Connection) -> None:
        """An unversioned file is a new one, or an earlier scheda's; refuse anything else."""
        names = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        }
        if names - self.schema.unversioned:
            raise self.error(
                f"{self.path} is a SQLite database but not a scheda {self.schema.noun}: "
                + MOVE_AWAY
            )

    # --- connections and transactions ---------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"this {type(self).__name__} is closed")
        return self._conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's errors about the file become one line that says what to do."""
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.InterfaceError):
            raise  # a bug in scheda, not a problem with the file
        except sqlite3.DatabaseError as exc:
            raise self.error(self._explain(exc)) from exc

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        noun = self.schema.noun
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return (
                f"the {noun} {self.path} stayed locked by another process for "
                f"{self.timeout:g} s: try again"
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or not isinstance(
            exc, sqlite3.OperationalError
        ):
            return f"{self.path} is not a usable SQLite database ({exc}): {MOVE_AWAY}"
        return f"cannot use the {noun} {self.path} ({exc}): {MOVE_AWAY}"

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One short transaction: committed on success, rolled back on any error.

        A write begins IMMEDIATE: it takes the write lock before reading, so it
        never has to upgrade a read lock (which can fail at once with "busy").
        """
        with self._lock, self._guard():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the last one to close folds the WAL back into the file."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
