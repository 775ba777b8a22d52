"""Job records, kept where the queue's results live: Redis, or SQLite for the embedded setup.

A record is a JSON document keyed by job id. Status changes that race (a worker
starting a job while a person cancels it) go through `transition`, which only
succeeds from the expected statuses. A running job holds a lease that its worker
renews; a job whose lease lapsed belonged to a worker that died.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imgclf.errors import InvalidInput, NotFound
from imgclf.jobs.records import JobRecord


class JobNotFound(NotFound):
    """No job with that id."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _status_change(from_statuses: Iterable[str], to_status: str, fields: dict[str, Any]):
    """A record -> record step that only applies from the expected statuses (else None)."""
    allowed = set(from_statuses)

    def change(record: dict[str, Any]) -> dict[str, Any] | None:
        if record["status"] not in allowed:
            return None
        return {**record, **fields, "status": to_status, "updated_at": now_iso()}

    return change


def _age_seconds(stamp: str) -> float:
    """Seconds since an ISO time written by `now_iso`."""
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def new_job_id() -> str:
    return uuid.uuid4().hex


MIN_PREFIX = 4


def pick_prefix_match(prefix: str, matches: list[str]) -> str:
    """The one full id that `prefix` names (like git's short hashes), or a clear error."""
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise JobNotFound(f"no job with id {prefix!r} (see 'imgclf jobs')")
    shown = ", ".join(sorted(matches)[:5])
    raise InvalidInput(
        f"job id prefix {prefix!r} matches {len(matches)} jobs ({shown}): give more characters"
    )


class JobStore(ABC):
    """Where job records live; implementations must make every method atomic."""

    @abstractmethod
    def create(self, record: dict[str, Any], idempotency_key: str | None) -> tuple[dict, bool]:
        """Store a new record, or return the existing one for the same idempotency key."""

    @abstractmethod
    def get(self, job_id: str) -> dict[str, Any]:
        """The record, or JobNotFound. A unique prefix of an id (MIN_PREFIX characters or
        more) names that job too."""

    def record(self, job_id: str) -> JobRecord:
        """`get`, typed."""
        return JobRecord.model_validate(self.get(job_id))

    @abstractmethod
    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""

    @abstractmethod
    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into the record."""

    @abstractmethod
    def transition(
        self, job_id: str, from_statuses: Iterable[str], to_status: str, **fields: Any
    ) -> dict[str, Any] | None:
        """Set status (and fields) only if the current status is one of `from_statuses`."""

    @abstractmethod
    def acquire_lease(self, job_id: str, token: str, seconds: float) -> bool:
        """Take or renew the job's lease; False if another live holder has it."""

    @abstractmethod
    def release_lease(self, job_id: str, token: str) -> None: ...

    @abstractmethod
    def lease_alive(self, job_id: str) -> bool: ...

    @abstractmethod
    def _apply(self, job_id: str, change) -> dict[str, Any] | None:
        """Atomically replace the record with change(record), unless that returns None."""

    def mark_unsent(self, job_id: str, error: str) -> dict[str, Any] | None:
        """A queued job whose task never reached the broker: failed, but resubmittable."""

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if record["status"] != "queued":
                return None
            return {
                **record,
                "status": "failed",
                "unsent": True,
                "error": error,
                "finished_at": now_iso(),
                "updated_at": now_iso(),
            }

        return self._apply(job_id, change)

    def requeue_unsent(self, job_id: str) -> dict[str, Any] | None:
        """Take back a job that never reached the broker (None if it is not one, or if a
        concurrent resubmission took it first): only the winner sends it again."""

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if record["status"] != "failed" or not record.get("unsent"):
                return None
            return {
                **record,
                "status": "queued",
                "unsent": False,
                "sent_at": None,
                "error": None,
                "finished_at": None,
                "updated_at": now_iso(),
            }

        return self._apply(job_id, change)

    def mark_sent(self, job_id: str) -> dict[str, Any] | None:
        """Its task reached the broker: the janitor's sweep for unsent jobs skips it."""

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if record.get("sent_at"):
                return None
            return {**record, "sent_at": now_iso()}

        return self._apply(job_id, change)

    def claim_unsent(self, job_id: str, grace_seconds: float) -> dict[str, Any] | None:
        """Take a queued job whose submitter stored it but never sent it (it died in
        between) for sending, once `grace_seconds` passed since it was stored or last
        claimed; None if it is not one. Claiming restarts the grace period, so of several
        janitors only one sends it, and a janitor that dies after claiming leaves it to the
        next sweep. Records written before `sent_at` existed have no such key and are
        never taken."""

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if record["status"] != "queued" or "sent_at" not in record or record["sent_at"]:
                return None
            stamp = record.get("updated_at") or record.get("created_at")
            if stamp and _age_seconds(stamp) < grace_seconds:
                return None
            return {**record, "updated_at": now_iso()}

        return self._apply(job_id, change)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


# Record and idempotency key in one step: a concurrent submit with the same key sees
# either nothing or both, never a key whose record is not written yet.
_CREATE_SCRIPT = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return false
"""


class RedisJobStore(JobStore):
    def __init__(self, url: str, prefix: str = "imgclf") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
        self.prefix = prefix

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def create(self, record: dict[str, Any], idempotency_key: str | None) -> tuple[dict, bool]:
        if idempotency_key:
            keys = [
                f"{self.prefix}:idem:{idempotency_key}",
                self._key(record["id"]),
                f"{self.prefix}:jobs",
            ]
            existing = self.redis.eval(
                _CREATE_SCRIPT, 3, *keys, record["id"], json.dumps(record), time.time()
            )
            if existing:
                return self.get(existing), False
            return record, True
        pipe = self.redis.pipeline()
        pipe.set(self._key(record["id"]), json.dumps(record))
        pipe.zadd(f"{self.prefix}:jobs", {record["id"]: time.time()})
        pipe.execute()
        return record, True

    def get(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.get(self._key(job_id))
        if raw is None and MIN_PREFIX <= len(job_id) < 32 and job_id.isalnum():
            start = len(self._key(""))
            found = [k[start:] for k in self.redis.scan_iter(self._key(job_id) + "*", count=1000)]
            raw = self.redis.get(self._key(pick_prefix_match(job_id, found)))
        if raw is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return json.loads(raw)

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        ids = self.redis.zrevrange(f"{self.prefix}:jobs", 0, max(0, limit - 1))
        raws = self.redis.mget([self._key(i) for i in ids]) if ids else []
        return [json.loads(r) for r in raws if r]

    def _cas(self, job_id: str, change) -> dict[str, Any] | None:
        import redis

        key = self._key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(f"no job with id {job_id!r}")
                    record = change(json.loads(raw))
                    if record is None:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.set(key, json.dumps(record))
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue

    _apply = _cas

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        return self._cas(job_id, lambda r: {**r, **fields, "updated_at": now_iso()})

    def transition(self, job_id, from_statuses, to_status, **fields):
        return self._cas(job_id, _status_change(from_statuses, to_status, fields))

    def acquire_lease(self, job_id: str, token: str, seconds: float) -> bool:
        key = f"{self.prefix}:lease:{job_id}"
        ms = int(seconds * 1000)
        if self.redis.set(key, token, nx=True, px=ms):
            return True
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
        )
        return bool(self.redis.eval(script, 1, key, token, ms))

    def release_lease(self, job_id: str, token: str) -> None:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('DEL', KEYS[1]) else return 0 end"
        )
        self.redis.eval(script, 1, f"{self.prefix}:lease:{job_id}", token)

    def lease_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}:lease:{job_id}"))

    def close(self) -> None:
        self.redis.close()


class SqliteJobStore(JobStore):
    """The embedded store: one SQLite file, safe across processes (transactions + busy timeout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created REAL, "
                "idem TEXT UNIQUE, doc TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, token TEXT, expires REAL)"
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return _Transaction(conn)

    def create(self, record, idempotency_key):
        with self._conn() as db:
            if idempotency_key:
                row = db.execute("SELECT doc FROM jobs WHERE idem = ?", (idempotency_key,))
                found = row.fetchone()
                if found:
                    return json.loads(found[0]), False
            db.execute(
                "INSERT INTO jobs (id, created, idem, doc) VALUES (?, ?, ?, ?)",
                (record["id"], time.time(), idempotency_key, json.dumps(record)),
            )
        return record, True

    def get(self, job_id: str) -> dict[str, Any]:
        with self._conn() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None and MIN_PREFIX <= len(job_id) < 32 and job_id.isalnum():
                found = db.execute(
                    "SELECT id FROM jobs WHERE substr(id, 1, ?) = ?", (len(job_id), job_id)
                ).fetchall()
                full = pick_prefix_match(job_id, [f[0] for f in found])
                row = db.execute("SELECT doc FROM jobs WHERE id = ?", (full,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return json.loads(row[0])

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._conn() as db:
            rows = db.execute(
                "SELECT doc FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _change(self, job_id: str, change) -> dict[str, Any] | None:
        with self._conn() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            record = change(json.loads(row[0]))
            if record is not None:
                db.execute("UPDATE jobs SET doc = ? WHERE id = ?", (json.dumps(record), job_id))
            return record

    _apply = _change

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        return self._change(job_id, lambda r: {**r, **fields, "updated_at": now_iso()})

    def transition(self, job_id, from_statuses, to_status, **fields):
        return self._change(job_id, _status_change(from_statuses, to_status, fields))

    def acquire_lease(self, job_id: str, token: str, seconds: float) -> bool:
        now = time.time()
        with self._conn() as db:
            row = db.execute("SELECT token, expires FROM leases WHERE id = ?", (job_id,)).fetchone()
            if row and row[0] != token and row[1] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO leases (id, token, expires) VALUES (?, ?, ?)",
                (job_id, token, now + seconds),
            )
        return True

    def release_lease(self, job_id: str, token: str) -> None:
        with self._conn() as db:
            db.execute("DELETE FROM leases WHERE id = ? AND token = ?", (job_id, token))

    def lease_alive(self, job_id: str) -> bool:
        with self._conn() as db:
            row = db.execute("SELECT expires FROM leases WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0] > time.time())


class _Transaction:
    """`with` block = one IMMEDIATE transaction, so read-modify-write is atomic across processes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def open_store(url: str, prefix: str = "imgclf") -> JobStore:
    """Pick the store from the result-backend URL (the same URL Celery is given)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisJobStore(url, prefix)
    for prefix in ("db+sqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return SqliteJobStore(url[len(prefix) :])
    raise InvalidInput(
        f"unsupported IMGCLF_RESULT_BACKEND {url!r}: use redis://HOST:PORT/DB or "
        "db+sqlite:///PATH (embedded)"
    )
