"""The review's state: reviewers, the tasks handed to them and their votes, in one SQLite file
beside the dataset (``review/review.sqlite``, WAL mode: readers never wait for the writer and
a vote is on disk when the request that cast it returns).

Tasks are handed out so that each image gets ``votes_per_image`` (K) votes from K different
reviewers: a reviewer gets the images with the fewest votes plus open hand-outs, among those
that still need a vote and that this reviewer has not seen. A hand-out left unfinished for
:data:`LEASE_S` seconds is given to someone else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError

REVIEW_DIR = "review"
DB = "review.sqlite"
TASK_SIZE = 25  # images per task page, as in D3S's MTurk study
DEFAULT_K = 5  # votes per image: D3S kept an image when 5 of 5 people saw its class
LEASE_S = 3600.0
ANSWERS = ("yes", "no", "unsure")

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviewers (
    token TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, reviewer TEXT NOT NULL REFERENCES reviewers(name),
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS task_items (
    task INTEGER NOT NULL REFERENCES tasks(id), position INTEGER NOT NULL,
    sample_id TEXT NOT NULL, PRIMARY KEY (task, position));
CREATE TABLE IF NOT EXISTS votes (
    sample_id TEXT NOT NULL, reviewer TEXT NOT NULL REFERENCES reviewers(name),
    present TEXT NOT NULL CHECK (present IN ('yes', 'no', 'unsure')),
    unsafe INTEGER NOT NULL CHECK (unsafe IN (0, 1)),
    naturalness INTEGER CHECK (naturalness BETWEEN 1 AND 5),
    time REAL NOT NULL, PRIMARY KEY (sample_id, reviewer));
"""


def db_path(root: str | Path) -> Path:
    return Path(root) / REVIEW_DIR / DB


class Full(DreamshiftError):
    """The image has its K votes: a further reviewer's vote is refused."""


@dataclass(frozen=True)
class Reviewer:
    name: str
    token: str
    csrf: str


@dataclass(frozen=True)
class Vote:
    sample_id: str
    reviewer: str
    present: str
    unsafe: bool
    naturalness: int | None


class ReviewStore:
    """One connection per call: safe from the web server's worker threads."""

    def __init__(self, root: str | Path, votes_per_image: int | None = None):
        self.path = db_path(root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            stored = db.execute("SELECT value FROM settings WHERE key='k'").fetchone()
            voted = db.execute("SELECT 1 FROM votes LIMIT 1").fetchone() is not None
            if stored and votes_per_image and int(stored[0]) != votes_per_image and voted:
                raise DreamshiftError(
                    f"{self.path} collects {stored[0]} votes per image, not {votes_per_image}: "
                    f"keep --votes-per-image {stored[0]}, or move {self.path.parent} away to "
                    "start a new review"
                )
            if votes_per_image or not stored:  # K is fixed by the first vote
                k = votes_per_image or DEFAULT_K
                db.execute("INSERT OR REPLACE INTO settings VALUES ('k', ?)", (str(k),))
        self.votes_per_image = int(self._setting("k"))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.DatabaseError as exc:
            busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
            if busy or isinstance(exc, sqlite3.IntegrityError):
                raise  # busy past the timeout, or a constraint: not a damaged file
            raise DreamshiftError(
                f"{self.path} is damaged or is no review database ({exc}): restore it, or move "
                f"{self.path.parent} away to start a new review"
            ) from exc
        finally:
            db.close()

    def _setting(self, key: str) -> str:
        with self._connect() as db:
            return str(db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()[0])

    # reviewers -------------------------------------------------------------------------------
    def add_reviewer(self, name: str) -> Reviewer:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise DreamshiftError(f"reviewer name {name!r}: use letters, digits, '-' and '_' only")
        token, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self._connect() as db:
            try:
                db.execute("INSERT INTO reviewers VALUES (?, ?, ?, ?)",
                           (token, name, csrf, time.time()))  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise DreamshiftError(
                    f"there is a reviewer {name!r} already: choose another name"
                ) from exc
        return Reviewer(name, token, csrf)

    def reviewer(self, token: str) -> Reviewer | None:
        """The reviewer holding ``token`` (compared in constant time), or None."""
        with self._connect() as db:
            rows = db.execute("SELECT name, token, csrf FROM reviewers").fetchall()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for name, known, csrf in rows:
            if secrets.compare_digest(hashlib.sha256(known.encode()).digest(), digest):
                found = Reviewer(name, known, csrf)
        return found

    def reviewers(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM reviewers ORDER BY created")]

    # tasks -----------------------------------------------------------------------------------
    def task(
        self, reviewer: str, pool: Sequence[str], size: int = TASK_SIZE
    ) -> tuple[int, list[str]]:
        """The reviewer's open task (one with an image they have not voted on yet), else a new
        one of up to ``size`` images of ``pool`` (sample ids in hand-out order); (0, []) when
        every image has its K votes or this reviewer has seen them all."""
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one hand-out at a time: no image over-assigned
            try:
                votes = dict(db.execute("SELECT sample_id, COUNT(*) FROM votes GROUP BY sample_id"))
                mine = {r[0] for r in db.execute(
                    "SELECT sample_id FROM votes WHERE reviewer = ?", (reviewer,))}  # fmt: skip
                in_pool, k = set(pool), self.votes_per_image
                for (task_id,) in db.execute(
                    "SELECT id FROM tasks WHERE reviewer = ? ORDER BY id", (reviewer,)
                ).fetchall():
                    # what is left of an earlier task: images of this pool that still need
                    # this reviewer's vote (one filled by others meanwhile is dropped)
                    items = [s for s in self._items(db, task_id) if s in in_pool
                             and (s in mine or votes.get(s, 0) < k)]  # fmt: skip
                    if any(s not in mine for s in items):
                        db.execute("UPDATE tasks SET created = ? WHERE id = ?", (now, task_id))
                        db.execute("COMMIT")
                        return task_id, items
                seen = {r[0] for r in db.execute(
                    "SELECT sample_id FROM votes WHERE reviewer = ? UNION "
                    "SELECT i.sample_id FROM task_items i JOIN tasks t ON t.id = i.task "
                    "WHERE t.reviewer = ?", (reviewer, reviewer))}  # fmt: skip
                held = dict(
                    db.execute(  # open hand-outs to others that are not voted yet
                        "SELECT i.sample_id, COUNT(*) FROM task_items i "
                        "JOIN tasks t ON t.id = i.task LEFT JOIN votes v "
                        "ON v.sample_id = i.sample_id AND v.reviewer = t.reviewer "
                        "WHERE v.sample_id IS NULL AND t.created > ? GROUP BY i.sample_id",
                        (now - LEASE_S,),
                    )
                )
                k = self.votes_per_image
                need = [(votes.get(s, 0) + held.get(s, 0), n, s) for n, s in enumerate(pool)
                        if s not in seen and votes.get(s, 0) + held.get(s, 0) < k]  # fmt: skip
                chosen = [s for _, _, s in sorted(need)[:size]]
                if not chosen:
                    db.execute("COMMIT")
                    return 0, []
                task_id = db.execute("INSERT INTO tasks (reviewer, created) VALUES (?, ?)",
                                     (reviewer, now)).lastrowid  # fmt: skip
                db.executemany("INSERT INTO task_items VALUES (?, ?, ?)",
                               [(task_id, i, s) for i, s in enumerate(chosen)])  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            assert task_id is not None
            return task_id, chosen

    @staticmethod
    def _items(db: sqlite3.Connection, task_id: int) -> list[str]:
        query = "SELECT sample_id FROM task_items WHERE task = ? ORDER BY position"
        return [r[0] for r in db.execute(query, (task_id,))]

    def assigned(self, reviewer: str, sample_id: str) -> bool:
        with self._connect() as db:
            return db.execute(
                "SELECT 1 FROM task_items i JOIN tasks t ON t.id = i.task "
                "WHERE t.reviewer = ? AND i.sample_id = ? LIMIT 1", (reviewer, sample_id)
            ).fetchone() is not None  # fmt: skip

    # votes -----------------------------------------------------------------------------------
    def vote(self, vote: Vote) -> None:
        """Cast or change a vote (one per reviewer and image). A new vote on an image that has
        its K votes already is refused (:class:`Full`): K votes from K reviewers, never more.
        Voting keeps the reviewer's hand-out of that image alive."""
        if vote.present not in ANSWERS:
            raise ValueError(f"present must be one of {ANSWERS}, not {vote.present!r}")
        if vote.naturalness is not None and not 1 <= vote.naturalness <= 5:
            raise ValueError(f"naturalness must be 1 to 5, not {vote.naturalness}")
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cast = db.execute("SELECT 1 FROM votes WHERE sample_id = ? AND reviewer = ?",
                                  (vote.sample_id, vote.reviewer)).fetchone()  # fmt: skip
                count = db.execute("SELECT COUNT(*) FROM votes WHERE sample_id = ?",
                                   (vote.sample_id,)).fetchone()[0]  # fmt: skip
                if cast is None and count >= self.votes_per_image:
                    raise Full(f"image {vote.sample_id} has its {count} votes already")
                db.execute(
                    "INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sample_id, reviewer) "
                    "DO UPDATE SET present = excluded.present, unsafe = excluded.unsafe, "
                    "naturalness = excluded.naturalness, time = excluded.time",
                    (vote.sample_id, vote.reviewer, vote.present, int(vote.unsafe),
                     vote.naturalness, now),
                )  # fmt: skip
                db.execute(
                    "UPDATE tasks SET created = ? WHERE reviewer = ? AND id IN "
                    "(SELECT task FROM task_items WHERE sample_id = ?)",
                    (now, vote.reviewer, vote.sample_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def undo(self, reviewer: str, sample_id: str) -> bool:
        with self._connect() as db:
            cur = db.execute("DELETE FROM votes WHERE reviewer = ? AND sample_id = ?",
                             (reviewer, sample_id))  # fmt: skip
            return cur.rowcount > 0

    def votes(self, reviewer: str | None = None) -> list[Vote]:
        query = "SELECT sample_id, reviewer, present, unsafe, naturalness FROM votes"
        args: tuple[Any, ...] = ()
        if reviewer is not None:
            query, args = query + " WHERE reviewer = ?", (reviewer,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY time, sample_id", args).fetchall()
        return [Vote(s, r, p, bool(u), n) for s, r, p, u, n in rows]

    def progress(self, pool: Sequence[str]) -> dict[str, Any]:
        """Images with all K votes, and votes cast, over the pool."""
        with self._connect() as db:
            counts = dict(db.execute("SELECT sample_id, COUNT(*) FROM votes GROUP BY sample_id"))
        k = self.votes_per_image
        return {
            "images": len(pool),
            "complete": sum(counts.get(s, 0) >= k for s in pool),
            "votes": sum(counts.get(s, 0) for s in pool),
            "votes_per_image": k,
        }


def votes_json(votes: Sequence[Vote]) -> str:
    return json.dumps([{"reviewer": v.reviewer, "present": v.present, "unsafe": v.unsafe,
                        "naturalness": v.naturalness} for v in votes])  # fmt: skip
