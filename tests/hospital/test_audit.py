"""The audit trail: a hash chain that names the first line edited, removed or reordered, across rotated files;
threads and processes appending to one log; no identifier in clear; the key; the ``audit`` commands."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import stat
import threading
from pathlib import Path

import pytest

from medassist.errors import MedAssistError
from medassist.hospital.audit import (
    GENESIS,
    AuditTrail,
    add_audit_commands,
    load_key,
    new_key,
    study_hash,
    verify,
)

KEY = bytes(range(32))
UID = "1.2.826.0.1.3680043.8.498.12345"
ACCESSION = "ACC-4711"

# run by each spawned process (the target must be importable there; this test module is not)
WORKER = """
from medassist.hospital.audit import AuditTrail
trail = AuditTrail(path, key)
for i in range(20):
    trail.record(who=who, action="pacs process", study_uid=f"1.2.3.{i}", status="done", answered=["nodule"])
"""


def _fill(path: Path, n: int = 10, **kwargs) -> AuditTrail:
    trail = AuditTrail(path, KEY, **kwargs)
    for i in range(n):
        trail.record(
            who="ward-3",
            action="POST /v1/images",
            model="xray",
            version="1.0",
            study_uid=f"{UID}.{i}",
            accession=ACCESSION,
            status=200,
            answered=["pneumonia"],
            referred=["effusion"] if i % 2 else [],
        )
    return trail


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _edit(path: Path, index: int, **changes) -> None:
    lines = _lines(path)
    lines[index] = json.dumps({**json.loads(lines[index]), **changes}, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))


def test_a_chain_of_ten_records_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    result = verify(log, KEY)
    assert (result.ok, result.lines, result.files, result.problem, result.line) == (True, 10, [log], None, None)
    rows = [json.loads(line) for line in _lines(log)]
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert rows[0]["prev"] == GENESIS and all(b["prev"] == a["mac"] for a, b in zip(rows, rows[1:], strict=False))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0]["time"])
    assert rows[1]["who"] == "ward-3" and rows[1]["answered"] == ["pneumonia"] and rows[1]["referred"] == ["effusion"]
    assert (rows[1]["model"], rows[1]["version"], rows[1]["status"]) == ("xray", "1.0", 200)


def test_an_edited_middle_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    _edit(log, 4, status=500)
    result = verify(log, KEY)
    assert not result.ok and (result.line, result.file, result.lines) == (5, log, 4)
    assert result.problem == "line 5 of audit.log: edited: its mac does not match its content"


def test_an_edited_last_line_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    _edit(log, 9, who="someone-else")
    result = verify(log, KEY)
    assert not result.ok and result.line == 10 and "edited" in result.problem


def test_a_removed_middle_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    lines = _lines(log)
    log.write_text("".join(lines[:4] + lines[5:]))
    result = verify(log, KEY)
    assert not result.ok and result.line == 5
    assert result.problem == "line 5 of audit.log (seq 6): removed: seq jumps from 4 to 6, 1 line(s) missing"


def test_swapped_lines_are_named_reordered(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    lines = _lines(log)
    lines[3], lines[4] = lines[4], lines[3]
    log.write_text("".join(lines))
    result = verify(log, KEY)
    assert not result.ok and result.line == 4
    assert result.problem == "line 4 of audit.log (seq 5): reordered: seq 5 comes before seq 4"


def test_a_repeated_line_is_named_reordered(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log)
    lines = _lines(log)
    log.write_text("".join(lines[:5] + lines[4:]))
    assert "reordered: seq 5 repeats" in verify(log, KEY).problem


def test_rotation_keeps_one_chain_and_a_deleted_rotated_file_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    line_size = len(_lines(_fill(tmp_path / "one.log", 1).path)[0])
    _fill(log, 10, max_bytes=int(2.5 * line_size))  # two lines a file
    files = [tmp_path / f"audit.log.{n}" for n in (4, 3, 2, 1)] + [log]
    result = verify(log, KEY)
    assert result.ok and result.lines == 10 and result.files == files
    assert [len(_lines(f)) for f in files] == [2] * 5
    assert json.loads(_lines(log)[0])["prev"] == json.loads(_lines(files[3])[-1])["mac"]
    assert [json.loads(line)["seq"] for f in files for line in _lines(f)] == list(range(1, 11))

    files[1].unlink()
    result = verify(log, KEY)
    assert not result.ok and (result.file, result.line) == (files[2], 3)
    assert result.problem == "line 1 of audit.log.2 (seq 5): removed: seq jumps from 2 to 5, 2 line(s) missing"
    files[0].unlink()
    assert verify(log, KEY).problem.endswith("removed: the chain starts at seq 5, lines 1 to 4 are missing")


def test_a_wrong_key_fails(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _fill(log, 3)
    result = verify(log, b"another key, of at least 32 bytes")
    assert not result.ok and result.line == 1 and "not this log's key" in result.problem
    with pytest.raises(MedAssistError, match="not a valid audit line"):
        AuditTrail(log, b"another key, of at least 32 bytes").record(who="a", action="b", status=200)


def test_four_threads_append_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    trail = AuditTrail(log, KEY)

    def work(name: str) -> None:
        for _ in range(25):
            trail.record(who=name, action="POST /v1/reports", status=200)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify(log, KEY).ok
    assert [json.loads(line)["seq"] for line in _lines(log)] == list(range(1, 101))


@pytest.mark.process
def test_two_processes_append_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=exec, args=(WORKER, {"path": str(log), "key": KEY, "who": w})) for w in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    result = verify(log, KEY)
    assert result.ok and result.lines == 40
    assert sorted(json.loads(line)["who"] for line in _lines(log)) == ["a"] * 20 + ["b"] * 20


def test_a_half_written_last_line_stops_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    trail = _fill(log, 3)
    with open(log, "a") as f:
        f.write('{"seq":4,"time":"2025-')
    before = log.read_bytes()
    with pytest.raises(MedAssistError, match=f"{re.escape(str(log))}.*medassist audit verify"):
        trail.record(who="ward-3", action="POST /v1/images", status=200)
    assert log.read_bytes() == before
    assert (
        verify(log, KEY).problem == "line 4 of audit.log: edited: it is cut short (no line end: a write interrupted?)"
    )


def test_no_identifier_in_clear(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    trail = AuditTrail(log, KEY)
    trail.record(who="pacs", action="pacs process", study_uid=UID, accession=ACCESSION, status="done")
    trail.record(who="pacs", action="pacs process", study_uid=UID, accession=ACCESSION, status="done")
    text = log.read_text()
    assert UID not in text and ACCESSION not in text and "12345" not in text and "4711" not in text
    first, second = (json.loads(line)["study"] for line in _lines(log))
    assert first == second == study_hash(KEY, UID, ACCESSION) and re.fullmatch(r"[0-9a-f]{64}", first)
    assert study_hash(bytes(32), UID, ACCESSION) != first
    assert study_hash(KEY, UID, None) != study_hash(KEY, None, UID) and study_hash(KEY, None, None) is None
    with pytest.raises(TypeError):
        trail.record(who="pacs", action="x", status=200, patient_name="Doe^John")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"who": ""}, ValueError),
        ({"action": " "}, ValueError),
        ({"answered": "pneumonia"}, TypeError),
        ({"referred": [3]}, TypeError),
        ({"status": True}, TypeError),
        ({"model": 1}, TypeError),
    ],
)
def test_record_checks_its_fields(tmp_path: Path, fields: dict, error: type) -> None:
    with pytest.raises(error):
        AuditTrail(tmp_path / "audit.log", KEY).record(**{"who": "w", "action": "a", "status": 200, **fields})
    assert not (tmp_path / "audit.log").exists()


def test_a_missing_or_empty_log_is_said_so(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    result = verify(log, KEY)
    assert not result.ok and result.files == [] and "no audit log at" in result.problem
    log.touch()
    assert "is empty" in verify(log, KEY).problem


def test_load_key_from_a_file_the_environment_or_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDASSIST_AUDIT_KEY", raising=False)
    key_file = new_key(tmp_path / "audit.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_key(key_file) == bytes.fromhex(key_file.read_text().strip()) and len(load_key(key_file)) == 32
    with pytest.raises(MedAssistError, match="is kept"):
        new_key(key_file)
    raw = tmp_path / "raw.key"
    raw.write_text("  a passphrase of thirty-two bytes or more \n")
    assert load_key(raw) == b"a passphrase of thirty-two bytes or more"
    raw.write_text("ab" * 20)
    with pytest.raises(MedAssistError, match="40 hex digits"):
        load_key(raw)
    with pytest.raises(MedAssistError, match=r"no audit key file .*medassist audit key"):
        load_key(tmp_path / "absent.key")
    with pytest.raises(MedAssistError, match=r"MEDASSIST_AUDIT_KEY.*medassist audit key FILE"):
        load_key(None)
    monkeypatch.setenv("MEDASSIST_AUDIT_KEY", "0f" * 32)
    assert load_key(None) == bytes([15] * 32)
    monkeypatch.setenv("MEDASSIST_AUDIT_KEY", "short")
    with pytest.raises(MedAssistError, match="fewer than 32"):
        load_key(None)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="medassist")
    add_audit_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_audit_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "audit.key"
    assert _run("audit", "key", str(key_file)) == 0
    assert str(key_file) in capsys.readouterr().out
    log = tmp_path / "audit.log"
    trail = AuditTrail(log, load_key(key_file), max_bytes=2000)
    for i in range(12):
        trail.record(who="ward-3", action="POST /v1/images", study_uid=f"1.2.{i}", status=200)
    files = len(verify(log, load_key(key_file)).files)
    assert files > 1
    assert _run("audit", "verify", str(log), "--key-file", str(key_file)) == 0
    assert capsys.readouterr().out == f"{log}: 12 lines in {files} files, the chain is intact\n"
    _edit(log, 0, status=404)
    assert _run("audit", "verify", str(log), "--key-file", str(key_file)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{log}: line 1 of audit.log") and "edited" in err
    with pytest.raises(SystemExit):
        _run("audit", "verify")
