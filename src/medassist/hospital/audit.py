"""An audit trail of every access to patient data: one JSON line per request that touched it.

``medassist serve`` and ``medassist pacs process`` call :meth:`AuditTrail.record` once per such request. The log is
append-only and hash-chained: each line carries ``seq`` (1, 2, ...), ``prev`` (the ``mac`` of the line before it)
and ``mac``, an HMAC-SHA256 under a secret key of the line's canonical JSON. Without the key no one can edit a line
(the last one included), remove one from the middle or swap two without :func:`verify` (``medassist audit verify``)
naming the first line at fault. A full file is renamed ``path.1`` (``path.1`` becomes ``path.2``, ...) and the chain
goes on in a new ``path``. Threads and processes (uvicorn workers) append to one log under an exclusive ``flock``.

The log never holds a patient's name or id, report text or pixels: :meth:`AuditTrail.record` takes only who (an API
key's name, never the key), what (route or command), which model and version, a status and the labels answered or
referred. A study is stored only as a keyed hash of its StudyInstanceUID and accession number (:func:`study_hash`):
whoever holds the key can find the accesses to a study; the log alone names none.

What a chain alone cannot show: a cut-off tail. Removing the last lines (or the newest files) leaves a shorter chain
that is intact; only a count or last ``mac`` anchored elsewhere (another system's log, a regular note of the last
``seq``) reveals it. And whoever can read the key can rewrite the whole chain: keep the key apart from the log.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medassist.errors import MedAssistError

KEY_ENV = "MEDASSIST_AUDIT_KEY"
GENESIS = "0" * 64
_FIELDS = ("seq", "time", "who", "action", "model", "version", "study", "status", "answered", "referred", "prev")
_SEP = "\\"  # DICOM allows no backslash in an accession number (SH) and a UID holds only digits and dots
_MAX_LINE = 1 << 20


def _mac(key: bytes, obj: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in obj.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def study_hash(key: bytes, study_uid: str | None, accession: str | None) -> str | None:
    """The keyed hash (HMAC-SHA256, hex) that stands for a study in the log; None when neither id is given."""
    if study_uid is None and accession is None:
        return None
    parts = (study_uid or "", accession or "")
    if any(_SEP in part for part in parts):
        raise ValueError("a StudyInstanceUID or accession number holds a backslash, which DICOM does not allow")
    return hmac.new(key, _SEP.join(parts).encode(), hashlib.sha256).hexdigest()


def _check(raw: bytes, key: bytes) -> tuple[dict[str, Any] | None, str]:
    """The audit line in ``raw`` (line end included) and "", or None and why it is not a valid one."""
    if not raw.endswith(b"\n"):
        return None, "it is cut short (no line end: a write interrupted?)"
    try:
        obj = json.loads(raw)
    except ValueError:
        return None, "it is not valid JSON"
    if not isinstance(obj, dict) or set(obj) != {*_FIELDS, "mac"} or type(obj["seq"]) is not int:
        return None, "it does not have the fields of an audit line"
    if not isinstance(obj["mac"], str) or not hmac.compare_digest(obj["mac"].encode(), _mac(key, obj).encode()):
        return None, "its mac does not match its content"
    return obj, ""


def _rotated(path: Path) -> list[Path]:
    """The rotated files ``path.N``, oldest (highest N) first."""
    if not path.parent.is_dir():
        return []
    prefix = path.name + "."
    found = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdecimal()]
    return sorted(found, key=lambda p: int(p.name[len(prefix) :]), reverse=True)


def _last_line(file: Path) -> bytes | None:
    """The last line of ``file`` (read backwards from its end), or None for a missing or empty file."""
    try:
        f = open(file, "rb")
    except FileNotFoundError:
        return None
    with f:
        pos, buf = f.seek(0, os.SEEK_END), b""
        while pos > 0 and len(buf) <= _MAX_LINE:
            step = min(8192, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut >= 0:
                return buf[cut + 1 :]
        return buf or None


def _labels(name: str, value: Sequence[str]) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of label strings, not {value!r}")
    return list(value)


class AuditTrail:
    """An append-only, hash-chained JSON-lines log at ``path``, rotated past ``max_bytes``."""

    def __init__(self, path: str | Path, key: bytes, max_bytes: int = 10 * 1024 * 1024) -> None:
        if not isinstance(key, bytes) or len(key) < 32:
            raise ValueError("the audit key must be at least 32 bytes (see load_key)")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._key = key
        self._lock = threading.Lock()

    def record(
        self,
        *,
        who: str,
        action: str,
        model: str | None = None,
        version: str | None = None,
        study_uid: str | None = None,
        accession: str | None = None,
        status: int | str,
        answered: Sequence[str] = (),
        referred: Sequence[str] = (),
    ) -> None:
        """Append one line for one request that touched patient data, and fsync it.

        Raises:
            TypeError, ValueError: an argument of the wrong type, or an empty ``who`` or ``action``.
            MedAssistError: the log ends in a line that is not a valid audit line (nothing is appended).
        """
        if not (isinstance(who, str) and who.strip() and isinstance(action, str) and action.strip()):
            raise ValueError(f"who and action must be non-empty strings, not {who!r} and {action!r}")
        for name, value in (("model", model), ("version", version), ("study_uid", study_uid), ("accession", accession)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")
        if isinstance(status, bool) or not isinstance(status, int | str):
            raise TypeError(f"status must be an int or a string, not {type(status).__name__}")
        labels = {"answered": _labels("answered", answered), "referred": _labels("referred", referred)}
        study = study_hash(self._key, study_uid, accession)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            seq, prev = self._tail()
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            obj: dict[str, Any] = {"seq": seq + 1, "time": now, "who": who, "action": action, "model": model}
            obj.update(version=version, study=study, status=status, **labels, prev=prev)
            obj["mac"] = _mac(self._key, obj)
            line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
            size = self.path.stat().st_size if self.path.exists() else 0
            rotate = size > 0 and size + len(line) > self.max_bytes
            if rotate:
                for old in _rotated(self.path):
                    n = int(old.name.rsplit(".", 1)[1])
                    os.replace(old, old.with_name(f"{self.path.name}.{n + 1}"))
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if rotate:
                folder = os.open(self.path.parent, os.O_RDONLY)
                os.fsync(folder)
                os.close(folder)

    def _tail(self) -> tuple[int, str]:
        """The seq and mac of the last line: of ``path``, or of ``path.1`` where ``path`` is missing or empty."""
        for file in (self.path, self.path.with_name(self.path.name + ".1")):
            raw = _last_line(file)
            if raw is None:
                continue
            obj, why = _check(raw, self._key)
            if obj is None:
                raise MedAssistError(
                    f"the audit log {file} ends in a line that is not a valid audit line ({why}), so nothing was "
                    f"appended: run `medassist audit verify {file}` to find the fault (a write cut short by a crash, "
                    "an edit, or a key that is not this log's)"
                )
            return obj["seq"], obj["mac"]
        return 0, GENESIS


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found: ``lines`` checked fine, the ``files`` in chain order, and the first problem (its
    1-based ``line`` within the chain and its ``file``), if any."""

    ok: bool
    lines: int
    files: list[Path]
    problem: str | None = None
    line: int | None = None
    file: Path | None = None


def _entries(files: list[Path], key: bytes) -> Iterator[tuple[Path, int, dict[str, Any] | None, str]]:
    """Each line of ``files`` in turn: its file, its number there, and what :func:`_check` makes of it."""
    for file in files:
        try:
            with open(file, "rb") as f:
                for n, raw in enumerate(f, 1):
                    yield file, n, *_check(raw, key)
        except OSError as exc:
            raise MedAssistError(f"cannot read the audit log {file}: {exc.strerror}") from None


def verify(path: str | Path, key: bytes) -> VerifyResult:
    """Check the log at ``path`` and its rotated files (``path.N`` ... ``path.1``, then ``path``) as one chain.

    The first problem is named "edited" (a line whose mac does not match its content, or not an audit line at all),
    "removed" (the seq jumps forward) or "reordered" (the seq goes backwards or repeats, or a later line holds the
    missing seq). A tail cut off is not seen (see the module's docstring).
    """
    path = Path(path)
    files = _rotated(path) + ([path] if path.exists() else [])
    if not files:
        return VerifyResult(False, 0, [], f"there is no audit log at {path} (nor any {path.name}.1, {path.name}.2 ...)")
    prev_seq, prev_mac, i = 0, GENESIS, 0
    for i, (file, n, obj, why) in enumerate(_entries(files, key)):
        where = f"line {n} of {file.name}" + (f" (seq {obj['seq']})" if obj else "")
        problem = None
        if obj is None:
            first = i == 0 and why.startswith("its mac")
            problem = f"edited: {why}" + (" (or the key is not this log's key)" if first else "")
        elif obj["seq"] <= prev_seq:
            problem = f"reordered: seq {obj['seq']} " + (
                "repeats" if obj["seq"] == prev_seq else f"comes after seq {prev_seq}"
            )
        elif obj["seq"] > prev_seq + 1:
            rest = itertools.islice(_entries(files, key), i + 1, None)
            later = next((o for _, _, o, _ in rest if o and prev_seq < o["seq"] < obj["seq"]), None)
            if later is not None:
                problem = f"reordered: seq {obj['seq']} comes before seq {later['seq']}"
            elif prev_seq == 0:
                problem = f"removed: the chain starts at seq {obj['seq']}, lines 1 to {obj['seq'] - 1} are missing"
            else:
                problem = (
                    f"removed: seq jumps from {prev_seq} to {obj['seq']}, {obj['seq'] - prev_seq - 1} line(s) missing"
                )
        elif obj["prev"] != prev_mac:
            problem = "edited: its prev does not match the mac of the line before it"
        if problem:
            return VerifyResult(False, i, files, f"{where}: {problem}", i + 1, file)
        prev_seq, prev_mac = obj["seq"], obj["mac"]
    if prev_seq == 0:
        return VerifyResult(False, 0, files, f"the audit log {path} is empty: no line to verify", None, path)
    return VerifyResult(True, i + 1, files)


def _parse_key(raw: bytes, source: str) -> bytes:
    make = "make a new one with `medassist audit key FILE`"
    if re.fullmatch(rb"[0-9a-fA-F]+", raw):
        if len(raw) < 64 or len(raw) % 2:
            raise MedAssistError(f"the audit key in {source} has {len(raw)} hex digits, not an even 64 or more: {make}")
        return bytes.fromhex(raw.decode())
    if len(raw) < 32:
        raise MedAssistError(f"the audit key in {source} is {len(raw)} bytes long, fewer than 32: {make}")
    return raw


def load_key(key_file: str | Path | None) -> bytes:
    """The audit key: the stripped contents of ``key_file`` (hex of 64+ digits, or 32+ raw bytes), else of the
    environment variable ``MEDASSIST_AUDIT_KEY``.

    Raises:
        MedAssistError: no key, an unreadable key file, or a key too short.
    """
    if key_file is not None:
        try:
            return _parse_key(Path(key_file).read_bytes().strip(), str(key_file))
        except FileNotFoundError:
            raise MedAssistError(
                f"no audit key file {key_file}: make one with `medassist audit key {key_file}`"
            ) from None
        except OSError as exc:
            raise MedAssistError(f"cannot read the audit key file {key_file}: {exc.strerror}") from None
    if os.environ.get(KEY_ENV, "").strip():
        return _parse_key(os.environ[KEY_ENV].strip().encode(), f"${KEY_ENV}")
    raise MedAssistError(
        f"no audit key: pass --key-file FILE or set ${KEY_ENV}; make a key with `medassist audit key FILE` and keep "
        "it apart from the log"
    )


def new_key(path: str | Path) -> Path:
    """Write a new key (32 random bytes, hex) to ``path``, a new file of mode 0o600; an existing file is kept."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MedAssistError(
            f"{path} exists and is kept (a log signed with it would no longer verify): choose another file"
        ) from None
    except OSError as exc:
        raise MedAssistError(f"cannot create the audit key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def cmd_audit_verify(args: argparse.Namespace) -> int:
    result = verify(args.file, load_key(args.key_file))
    if not result.ok:
        print(f"{args.file}: {result.problem}", file=sys.stderr)
        return 1
    lines, files = result.lines, len(result.files)
    print(f"{args.file}: {lines:,} line{'s' * (lines != 1)} in {files} file{'s' * (files != 1)}, the chain is intact")
    return 0


def cmd_audit_key(args: argparse.Namespace) -> int:
    path = new_key(args.file)
    print(f"a new audit key in {path} (readable by you only); pass it as --key-file {path} or set ${KEY_ENV}.")
    print("Keep it apart from the audit log: whoever can read the key can rewrite the log undetected.")
    return 0


def add_audit_commands(sub: Any) -> None:
    """Add ``audit verify FILE [--key-file K]`` and ``audit key FILE`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "audit",
        help="the audit trail of accesses to patient data: verify its chain, make its key",
        description="Verify the hash chain of an audit log, or make the key that signs one.",
    )
    actions = p.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify",
        help="check a log and its rotated files as one chain; exit 1 naming the first line edited, removed or moved",
    )
    check.add_argument("file", help="the log (its rotated files FILE.1, FILE.2 ... are read with it)")
    check.add_argument("--key-file", metavar="K", help=f"the key file (default: ${KEY_ENV})")
    check.set_defaults(func=cmd_audit_verify)
    key = actions.add_parser(
        "key",
        help="write a new random key to a new file (mode 600); keep it apart from the log",
    )
    key.add_argument("file", help="the new key file (an existing file is never overwritten)")
    key.set_defaults(func=cmd_audit_key)
