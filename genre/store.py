"""One Parquet folder, as shards and results both use it.

An output folder (local, or an ``s3://``/``gs://`` URI through pyarrow) holds
``part-*.parquet`` files and a few ``_``-prefixed companions. This module owns the
promises both stores keep:

* **atomic parts**: a part is written under a temporary name and renamed into place
  (object stores publish an object only once its upload completes), so a killed job
  leaves whole parts or none; temporaries a killed run left are removed by the next
  writer, under the lock;
* **one writer at a time**: :class:`FolderLock` (``_lock``) refuses a second run into
  the same folder and takes over the lock of a dead process on this host; on S3 it is
  created with a conditional put (``If-None-Match: *``), so the store decides which of
  two runs wins;
* **a crash journal**: :class:`AttemptJournal` (``_attempts/``) remembers files whose
  decoding was interrupted, so a file that kills its worker is skipped after two
  attempts instead of taking the good files of its batch down with it every time;
* **no duplicate on read**: :func:`drop_duplicates` keeps one row per key, whatever
  the folder holds (parts of two runs copied together, say), and says how many it
  dropped;
* **a damaged part is named, not fatal**: :func:`read_parts` skips a part that cannot
  be read (truncated by a full disk, half copied) with one warning naming it, so its
  rows count as missing and a re-run redoes them; :func:`check_kind` refuses a folder
  that holds the other store's parts (labels where shards are expected, say);
* **a full disk or a read-only folder is one line**: writes and the lock raise a
  :class:`genre.errors.GenreError` naming the folder, never an ``OSError``.

Object stores are reached through pyarrow; the two things pyarrow cannot do there, an
atomic create-if-absent and a presigned link (:func:`presigned_urls`), go through boto3
(the ``aws`` extra), imported only when an ``s3://`` folder needs it. Nothing here needs
Ray.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from genre.errors import AudioFileError, GenreError, ParameterError, first_line

__all__ = [
    "PART_PREFIX",
    "is_uri",
    "filesystem",
    "join",
    "list_parts",
    "read_parts",
    "read_part_schema",
    "check_kind",
    "write_table",
    "write_bytes",
    "remove_temporaries",
    "drop_duplicates",
    "FolderLock",
    "AttemptJournal",
    "PRESIGN_EXPIRES_S",
    "presigned_urls",
]

PART_PREFIX = "part-"
_TMP = ".tmp-"
_LOCK = "_lock"
_ATTEMPTS = "_attempts"
#: Seconds after which a lock file that cannot be parsed (a writer killed between
#: creating and filling it) counts as stale.
_UNREADABLE_LOCK_S = 30.0


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an object-store or ``file://`` URI rather than a local path."""
    return "://" in str(path)


def filesystem(root: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``root`` and the path within it (absolute for local paths)."""
    if is_uri(root):
        return pafs.FileSystem.from_uri(str(root))
    return pafs.LocalFileSystem(), os.path.abspath(str(root))


def join(root: str, name: str) -> str:
    """``root/name`` for display, keeping a URI a URI (its ``?options`` at the end)."""
    root = str(root)
    head, mark, options = root.partition("?") if is_uri(root) else (root, "", "")
    return f"{head.rstrip('/')}/{name}{mark}{options}"


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def list_parts(fs: pafs.FileSystem, base: str, *, prefix: str = PART_PREFIX) -> list[str]:
    """Sorted paths of the ``<prefix>*.parquet`` files directly under ``base`` (``[]`` if none)."""
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    entries = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    return sorted(
        e.path
        for e in entries
        if e.type == pafs.FileType.File
        and e.base_name.startswith(prefix)
        and e.base_name.endswith(".parquet")
    )


#: What reading a damaged part raises: ``ArrowInvalid`` for a truncated or empty file
#: (no footer), ``OSError`` for a corrupt page or a part that vanished or is unreadable.
#: Not ``ArrowMemoryError``: a part too big to read is not a damaged one.
_UNREADABLE = (pa.ArrowInvalid, OSError)


def _warn_unreadable(path: str, exc: BaseException, *, redo: str) -> None:
    # Issued from this one line, so that Python's default filter shows each part's
    # warning once per process, however many readers of a run trip on the part.
    warnings.warn(f"skipped unreadable part {path} ({first_line(exc)}): {redo}", stacklevel=1)


def read_part_schema(fs: pafs.FileSystem, path: str, *, redo: str | None) -> pa.Schema | None:
    """The schema of the part ``path``, or ``None`` when it cannot be read.

    ``redo`` ends the warning that names the part: what the user does about it
    ("delete it and re-run …"); ``None`` skips quietly, for a caller that only looks
    for the first readable part and leaves naming the damaged ones to the readers.
    """
    try:
        return pq.read_schema(path, filesystem=fs)
    except _UNREADABLE as exc:
        if redo is not None:
            _warn_unreadable(path, exc, redo=redo)
        return None


def read_parts(
    fs: pafs.FileSystem, parts: list[str], *, columns: list[str] | None = None, redo: str
) -> tuple[pa.Table | None, list[str]]:
    """Read ``parts`` as one table, skipping each part that cannot be read.

    The whole list is read at once; only when that fails is each part read alone, so a
    healthy folder costs nothing more. Every part skipped gets one warning naming it
    and ending with ``redo``; its rows are simply absent, so whoever reads "what is
    done" from the folder does that part's work again.

    Returns
    -------
    table : pa.Table or None
        The readable parts' rows (``None`` when no part could be read, or none given).
    skipped : list of str
        The paths of the parts skipped.
    """
    if not parts:
        return None, []
    try:
        return pq.read_table(parts, columns=columns, filesystem=fs), []
    except (*_UNREADABLE, pa.ArrowTypeError):  # a damaged part, or parts that disagree
        pass
    tables, skipped = [], []
    for part in parts:
        try:
            tables.append(pq.read_table(part, columns=columns, filesystem=fs))
        except _UNREADABLE as exc:
            _warn_unreadable(part, exc, redo=redo)
            skipped.append(part)
    if not tables:
        return None, skipped
    return pa.concat_tables(tables, promote_options="default"), skipped


#: What each kind of part (``genre.format`` in its schema, less the version) means.
_KINDS = {
    "genre.segments": "a shards folder (written by the extract job)",
    "genre.results": "a labels folder (written by the label job)",
}


def check_kind(
    fs: pafs.FileSystem, base: str, *, root: str, expected: str, role: str, hint: str
) -> None:
    """Refuse a folder whose parts are not of the ``expected`` format.

    The first readable part decides (a folder holds one kind); a folder without parts
    passes.

    Parameters
    ----------
    expected : str
        The ``genre.format`` the caller writes or reads (``genre.segments/1``).
    role, hint : str
        For the message: what the folder is to the caller ("output", "shards") and
        what to do instead ("choose another output folder").

    Raises
    ------
    ParameterError
        The parts are of another kind, or not written by genre at all.
    """
    for part in list_parts(fs, base):
        schema = read_part_schema(fs, part, redo=None)  # the readers name a damaged part
        if schema is None:
            continue
        found = (schema.metadata or {}).get(b"genre.format", b"").decode(errors="replace")
        found = found.split("/")[0]
        wanted = expected.split("/")[0]
        if found == wanted:
            return
        what = _KINDS.get(
            found, f"a folder of Parquet files genre did not write ({part.rsplit('/', 1)[-1]})"
        )
        raise ParameterError(f"{role} {root!r} is {what}, not {_KINDS[wanted]}: {hint}")


#: ``errno`` values that mean "no room": the job cannot go on, but nothing is lost.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _write_failed(final: str, exc: OSError) -> GenreError:
    """The one line for a write that failed for want of room or of permission."""
    if exc.errno in _NO_SPACE:
        return GenreError(
            f"no space left writing {final}: free some space and re-run the same command "
            "(everything written before is kept)"
        )
    return GenreError(
        f"cannot write {final} ({first_line(exc)}): check that the folder is writable, "
        "then re-run the same command"
    )


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_table(fs: pafs.FileSystem, base: str, name: str, table: pa.Table) -> str:
    """Write ``table`` as ``base/name`` atomically (zstd); return the final path.

    Raises
    ------
    GenreError
        Locally, the disk is full or the folder is not writable (the temporary is
        removed; what the folder held before is intact).
    """
    final = f"{base}/{name}"
    if _is_local(fs):
        tmp = f"{base}/{_TMP}{uuid.uuid4().hex}.parquet"
        try:
            os.makedirs(base, exist_ok=True)
            pq.write_table(table, tmp, compression="zstd", filesystem=fs)
            os.replace(tmp, final)
        except OSError as exc:
            _remove_quietly(tmp)
            raise _write_failed(final, exc) from exc
    else:
        pq.write_table(table, final, compression="zstd", filesystem=fs)
    return final


def write_bytes(fs: pafs.FileSystem, base: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``base/name`` atomically; return the final path.

    Raises
    ------
    GenreError
        As :func:`write_table`.
    """
    final = f"{base}/{name}"
    if _is_local(fs):
        tmp = f"{base}/{_TMP}{uuid.uuid4().hex}-{name.replace('/', '_')}"
        try:
            os.makedirs(base, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        except OSError as exc:
            _remove_quietly(tmp)
            raise _write_failed(final, exc) from exc
    else:
        with fs.open_output_stream(final) as f:
            f.write(data)
    return final


def remove_temporaries(fs: pafs.FileSystem, base: str) -> int:
    """Delete the temporary files a killed writer left under ``base``; return how many.

    Call it only while holding the folder's :class:`FolderLock`: the temporaries of a
    live writer look the same.
    """
    if not _is_local(fs) or fs.get_file_info(base).type != pafs.FileType.Directory:
        return 0
    removed = 0
    for entry in fs.get_file_info(pafs.FileSelector(base)):
        if entry.base_name.startswith(_TMP):
            fs.delete_file(entry.path)
            removed += 1
    return removed


def drop_duplicates(
    table: pa.Table, *, keys: list[str], what: str, where: str, keep_last_by: str | None = None
) -> tuple[pa.Table, int]:
    """Keep one row per ``keys``; warn once, naming ``what`` and ``where``, when any go.

    Parameters
    ----------
    table : pa.Table
    keys : list of str
        Columns that identify a row (``track_id, segment`` for shards, ``path`` for results).
    what, where : str
        For the warning: "segments", "results"; the folder.
    keep_last_by : str or None
        Keep the row with the largest value of this column (``labeled_at``); otherwise
        the first row in the table's order.

    Returns
    -------
    table : pa.Table
        Without duplicates, rows in the input order.
    dropped : int
    """
    if len(table) == 0:
        return table, 0
    index = pa.array(range(len(table)), pa.int64())
    frame = table.select(keys).append_column("_row", index)
    if keep_last_by is not None:
        frame = frame.append_column("_by", table.column(keep_last_by))
        frame = frame.sort_by([("_by", "descending"), ("_row", "ascending")])
    first = frame.group_by(keys, use_threads=False).aggregate([("_row", "first")])
    dropped = len(table) - len(first)
    if not dropped:
        return table, 0
    keep = sorted(first.column("_row_first").to_pylist())
    warnings.warn(
        f"{dropped} duplicate {what} under {where} ignored (the same "
        f"{', '.join(keys)} in more than one part)",
        stacklevel=3,
    )
    return table.take(pa.array(keep, pa.int64())), dropped


# ----------------------------------------------------------------------------- object stores

#: How long a presigned link works: 7 days, the longest a SigV4 signature allows.
PRESIGN_EXPIRES_S = 7 * 24 * 3600
#: What S3 answers a conditional put whose key exists (412), or one that lost the race
#: to another conditional write of the same key still in flight (409).
_EXISTS = ("PreconditionFailed", "ConditionalRequestConflict")
_NOTED: set[str] = set()


def _note_once(text: str) -> None:
    """``note: text`` on stderr, once per process (a run may lock several folders)."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(f"note: {text}", file=sys.stderr)


def _s3_client(uri: str, *, region: str | None):
    """A boto3 client that reaches the S3 store of ``uri`` as pyarrow does; ``None``
    without boto3.

    The endpoint is the URI's ``?endpoint_override=`` (with its ``scheme=``) or else
    boto3's own reading of ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, the variables
    pyarrow reads; credentials are the URI's ``user:secret@`` or boto3's usual chain
    (variables, ``~/.aws``, the machine's role), as pyarrow's AWS SDK finds them.
    ``region`` is the one pyarrow resolved for the bucket: a link signed for another
    region is refused by S3. One client per store and process (making one costs
    ~0.1 s), made under a lock: boto3's default session is not safe across threads.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        return None
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    endpoint = query.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
    custom = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    key = (
        endpoint or None,
        query.get("region") or region or None,
        urllib.parse.unquote(parts.username) if parts.username else None,
        urllib.parse.unquote(parts.password) if parts.password else None,
        custom,
    )
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            config = Config(
                signature_version="s3v4",
                # Checksums only where S3 requires them: boto3's default CRC32 headers
                # are refused by S3-compatible stores that predate them.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=10,
                read_timeout=60,
                retries={"max_attempts": 3},
                # pyarrow addresses buckets by path on a custom endpoint (a MinIO host has
                # no per-bucket DNS names); boto3 would pick virtual hosts for a host name.
                s3={"addressing_style": "path" if custom else "auto"},
            )
            _CLIENTS[key] = boto3.client(
                "s3",
                endpoint_url=key[0],
                region_name=key[1],
                aws_access_key_id=key[2],
                aws_secret_access_key=key[3],
                config=config,
            )
        return _CLIENTS[key]


_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _s3_create(uri: str, fs: pafs.FileSystem, path: str, data: bytes) -> bool | None:
    """Create the object ``path`` (``bucket/key`` of the store of ``uri``) holding
    ``data`` unless one exists, in one request (``If-None-Match: *``): the store, not
    a check before the write, decides which of two writers gets it.

    Returns
    -------
    bool or None
        ``True`` created, ``False`` it exists; ``None``: no atomic create here (boto3
        not installed, or a store that does not implement conditional writes), with a
        note on stderr once: the caller falls back to check-then-write.

    Raises
    ------
    OSError
        The store refused the write (no permission, no such bucket) or cannot be reached.
    """
    client = _s3_client(uri, region=getattr(fs, "region", None))
    if client is None:
        _note_once(
            "boto3 is not installed, so the lock of an s3:// folder is checked, then written: "
            "two runs started in the same second may both write; pip install 'genre[aws]' "
            "for an atomic lock"
        )
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = path.split("/", 1)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _EXISTS:
            return False
        if code == "NotImplemented":
            _note_once(
                f"the store of {uri} does not implement conditional writes, so its lock is "
                "checked, then written: two runs started in the same second may both write"
            )
            return None
        raise OSError(first_line(exc)) from exc
    except BotoCoreError as exc:
        raise OSError(first_line(exc)) from exc
    return True


def presigned_urls(uris: list[str], *, expires_s: int = PRESIGN_EXPIRES_S) -> list[str] | None:
    """Links that fetch each ``s3://`` object of ``uris`` without credentials, for
    ``expires_s`` seconds (the review page's players).

    Signed locally with the credentials boto3 finds (no request per link); the links
    reach the endpoint the URIs are read from (see :func:`_s3_client`).

    Returns
    -------
    list of str, or None
        One link per URI, in order; ``None`` when one cannot be made: a URI not on S3
        (``gs://`` links are not made), boto3 not installed, or no credentials to sign
        with.
    """
    if not uris or any(urllib.parse.urlsplit(u).scheme != "s3" for u in uris):
        return None
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    # Before anything reaches the network (pyarrow resolves the bucket's region).
    if not urllib.parse.urlsplit(uris[0]).username and boto3.Session().get_credentials() is None:
        return None
    clients: dict[tuple[str, str], Any] = {}
    links = []
    try:
        for uri in uris:
            parts = urllib.parse.urlsplit(uri)
            store = (parts.netloc, parts.query)
            if store not in clients:
                bucket_uri = f"s3://{parts.netloc}/" + (f"?{parts.query}" if parts.query else "")
                fs, _ = filesystem(bucket_uri)
                clients[store] = _s3_client(uri, region=getattr(fs, "region", None))
            params = {
                "Bucket": parts.netloc.rsplit("@", 1)[-1],
                "Key": urllib.parse.unquote(parts.path.lstrip("/")),
            }
            links.append(
                clients[store].generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=expires_s
                )
            )
    except (BotoCoreError, ClientError, OSError):
        return None
    return links


# ----------------------------------------------------------------------------- the lock


def _pid_start(pid: int) -> str:
    """The start time of ``pid`` from /proc ("" where unknown): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _valid_pid(pid: object) -> bool:
    """Whether ``pid`` (from a lock file) can name a process: ``os.kill`` with 0 or a
    negative pid signals a whole group, and a huge one overflows."""
    return isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or not _pid_start(pid) or _pid_start(pid) == start


class FolderLock:
    """Single-writer lock on an output folder (``OUTPUT/_lock``).

    Locally the lock file is created with ``O_EXCL``, and on ``s3://`` with a
    conditional put (``If-None-Match: *``, through boto3), so of two runs started at
    the same moment exactly one wins. A lock left by a process of this host that is no
    longer running (killed, machine rebooted) is taken over with a message on stderr;
    a lock held by a live process, or by another host, is refused with one line.

    On ``gs://`` (and on ``s3://`` without boto3, or on a store that does not implement
    conditional writes) there is no atomic create-if-absent: the lock is written after
    checking that none exists, which stops a second run started later but not two
    started within the same second. A lock of a crashed run on another machine must be
    removed by hand on every store.

    Parameters
    ----------
    root : str
        The output folder; created if missing.
    command : str
        What holds the lock, for the message a refused run prints.

    Raises
    ------
    ParameterError
        From :meth:`acquire`: another run holds the folder.
    """

    def __init__(self, root: str, *, command: str):
        self.root = str(root)
        self.command = command
        self.fs, self.base = filesystem(self.root)
        self.path = f"{self.base}/{_LOCK}"
        self.token = uuid.uuid4().hex
        self.took_over: dict[str, Any] | None = None
        self._held = False

    def _record(self) -> bytes:
        pid = os.getpid()
        return json.dumps(
            {
                "pid": pid,
                "pid_start": _pid_start(pid),
                "host": socket.gethostname(),
                "command": self.command,
                "token": self.token,
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
        ).encode()

    def _holder(self) -> dict[str, Any] | None:
        """The lock's record; ``{}`` when it does not parse as one (half written, or
        not a lock of ours), which :meth:`_stale` judges by the file's age."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                holder = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        if not holder:  # created but never filled: its writer died at once
            info = self.fs.get_file_info(self.path)
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            return time.time() - mtime > _UNREADABLE_LOCK_S
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another machine lives
        pid = holder.get("pid")
        if not _valid_pid(pid):
            return True  # no process of this host can hold it
        return not _alive(pid, str(holder.get("pid_start", "")))

    def _create(self) -> bool:
        if _is_local(self.fs):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self._record())
            except OSError:
                os.remove(self.path)  # an empty lock would block the next run for a while
                raise
            return True
        if isinstance(self.fs, pafs.S3FileSystem):
            created = _s3_create(self.root, self.fs, self.path, self._record())
            if created is not None:
                return created
        if self.fs.get_file_info(self.path).type != pafs.FileType.NotFound:
            return False
        with self.fs.open_output_stream(self.path) as f:
            f.write(self._record())
        return True

    def acquire(self) -> FolderLock:
        """Take the lock (see the class docstring); return ``self``."""
        if self.fs.get_file_info(self.base).type == pafs.FileType.File:
            raise ParameterError(f"output {self.root!r} is a file, not a folder")
        try:
            self.fs.create_dir(self.base, recursive=True)
        except OSError as exc:
            raise self._not_writable(exc) from exc
        for _ in range(3):
            try:
                created = self._create()
            except OSError as exc:
                raise self._not_writable(exc) from exc
            if created:
                self._held = True
                return self
            holder = self._holder()
            if holder is None:
                continue  # released in between: try again
            if not self._stale(holder):
                raise ParameterError(_busy_message(self.root, self.path, holder))
            self.took_over = holder
            print(
                f"note: taking over the lock on {self.root} left by "
                f"{holder.get('command', 'a run')} "
                f"(pid {holder.get('pid', '?')}, since {holder.get('since', '?')}), "
                "which is no longer running",
                file=sys.stderr,
            )
            try:
                self.fs.delete_file(self.path)
            except OSError as exc:
                raise self._not_writable(exc) from exc
        raise ParameterError(f"could not lock {self.root!r}: another run keeps taking it")

    def _not_writable(self, exc: OSError) -> ParameterError:
        return ParameterError(
            f"output {self.root!r} is not writable ({first_line(exc)}): "
            "choose a folder you can write to"
        )

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        if not self._held:
            return
        self._held = False
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            self.fs.delete_file(self.path)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _busy_message(root: str, path: str, holder: dict[str, Any]) -> str:
    who = (
        f"{holder.get('command', 'another run')} "
        f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    )
    return (
        f"output {root!r} is being written by {who}, since {holder.get('since', '?')}): "
        f"wait for it to finish, or remove {path} if that run is gone"
    )


# ----------------------------------------------------------------------------- crash journal

T = TypeVar("T")
#: Test hook: a worker about to decode a file whose path contains this string exits at
#: once, as one killed by the OOM killer would (tests/test_failures.py).
_DIE_ON = "GENRE_TEST_DIE_ON"


def _fault_injection(path: str) -> None:
    needle = os.environ.get(_DIE_ON)
    if needle and needle in str(path):
        os._exit(137)


class AttemptJournal:
    """Which files were being decoded when their worker died (``OUTPUT/_attempts/``).

    A batch function calls :meth:`begin` before decoding a file and :meth:`end` once the
    file is decoded (or rejected with a reason). A marker therefore survives only when
    the process died in between: the OOM killer, a segfault in a decoder, a kill of the
    whole job. Ray retries the batch; a file whose marker records ``max_attempts``
    deaths is skipped as ``crashed`` and the rest of its batch goes on.

    Each file belongs to one batch and a batch runs in one task at a time, so a marker
    found by :meth:`begin` is always left by an earlier, dead attempt.
    """

    def __init__(self, root: str, *, max_attempts: int = 2):
        self.root = str(root)
        self.fs, base = filesystem(self.root)
        self.base = f"{base}/{_ATTEMPTS}"
        self.max_attempts = max_attempts
        self._made = False

    def _path(self, key: str) -> str:
        return f"{self.base}/{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def deaths(self, key: str) -> int:
        """How many attempts at ``key`` died mid-decode."""
        try:
            with self.fs.open_input_stream(self._path(key)) as f:
                return int(json.loads(f.read()).get("deaths", 0))
        except (FileNotFoundError, ValueError, OSError):
            return 0

    def begin(self, key: str, *, path: str) -> bool:
        """Record an attempt at ``key``.

        ``False`` when it already killed ``max_attempts`` workers.
        """
        deaths = self.deaths(key)
        if deaths >= self.max_attempts:
            return False
        if not self._made:
            self.fs.create_dir(self.base, recursive=True)
            self._made = True
        record = {
            "key": key,
            "path": path,
            "deaths": deaths + 1,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        with self.fs.open_output_stream(self._path(key)) as f:
            f.write(json.dumps(record).encode())
        return True

    def end(self, key: str) -> None:
        """The attempt at ``key`` finished (well or with a reason): forget it."""
        try:
            self.fs.delete_file(self._path(key))
        except (FileNotFoundError, OSError):
            pass

    def decode(self, key: str, path: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (the decoding of ``path``) between :meth:`begin` and :meth:`end`.

        Raises
        ------
        AudioFileError
            ``crashed``: earlier attempts at ``key`` killed their worker twice.
        """
        if not self.begin(key, path=path):
            raise AudioFileError(
                "crashed",
                f"{path}: the worker decoding this file died {self.max_attempts} times "
                "(out of memory or a decoder crash); skipped. Re-run with --retry-errors "
                f"to try it again (or delete {self._path(key)})",
            )
        _fault_injection(path)
        try:
            return fn()
        finally:  # an exception is a verdict on the file, not a death
            self.end(key)

    def clear(self) -> int:
        """Forget every recorded crash (``--retry-errors``); return how many."""
        if self.fs.get_file_info(self.base).type != pafs.FileType.Directory:
            return 0
        entries = self.fs.get_file_info(pafs.FileSelector(self.base))
        for entry in entries:
            self.fs.delete_file(entry.path)
        return len(entries)
