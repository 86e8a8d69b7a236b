"""``medassist pacs process``: a PACS's images through a bundle, and the results back into the PACS, by DICOMweb
(dicomweb-client): QIDO-RS finds the instances, WADO-RS retrieves each one, the bundle answers, STOW-RS stores its
SEG and SR into the instance's study.

Each instance is processed once. A job table (SQLite, one row per instance and model version) records what is done
only after the PACS has accepted the results, and the results' UIDs depend only on the instance and the model
(:func:`medassist.hospital.dicom_out.result_uid`): a run that stops anywhere (killed, the PACS gone) is run again
and resumes, and an instance whose results were stored just before the stop is stored again under the same UIDs,
which the PACS keeps as one. Network errors and 5xx answers are retried with exponential back-off.

Credentials come from a file (``--credentials``: ``{"username": ..., "password": ...}`` or ``{"token": ...}``) or
the environment (``MEDASSIST_PACS_USER`` and ``MEDASSIST_PACS_PASSWORD``, or ``MEDASSIST_PACS_TOKEN``), never the
command line; no log line holds them or any patient identifier.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from medassist.errors import MedAssistError
from medassist.hospital.dicom_out import ModelIdentity

log = logging.getLogger("medassist.pacs")
T = TypeVar("T")

# Result objects and documents are not images to process (a run must not answer its own SEG and SR).
NOT_IMAGES = {"SEG", "SR", "KO", "PR", "DOC", "RTSTRUCT", "RTPLAN", "REG"}
_SOP_CLASS, _MODALITY, _STUDY, _SERIES, _SOP = "00080016", "00080060", "0020000D", "0020000E", "00080018"


@dataclass(frozen=True)
class Instance:
    """One instance found by QIDO-RS."""

    study: str
    series: str
    sop: str
    modality: str


@dataclass
class Summary:
    """What a run did.

    Attributes:
        found: image instances the query found.
        done_before: of those, already processed by this model version (skipped).
        processed: processed now, results stored.
        failed: refused by the bundle (unreadable pixels, a multi-frame instance, ...), each with its reason.
        stored: result objects stored.
        seconds: wall time of the run.
    """

    found: int = 0
    done_before: int = 0
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stored: int = 0
    seconds: float = 0.0


def credentials(path: str | None = None) -> dict[str, str]:
    """The PACS credentials from ``path`` (JSON) or the environment; empty when there are none."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise MedAssistError(f"credentials file {p} does not exist")
        try:
            found = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise MedAssistError(
                f'credentials file {p} is not JSON; write {{"username": ..., "password": ...}} or {{"token": ...}}'
            ) from None
        if not isinstance(found, dict) or not ({"username", "password"} <= set(found) or "token" in found):
            raise MedAssistError(f'credentials file {p} needs "username" and "password", or "token"')
        return {k: str(v) for k, v in found.items() if k in ("username", "password", "token")}
    env = os.environ
    if env.get("MEDASSIST_PACS_TOKEN"):
        return {"token": env["MEDASSIST_PACS_TOKEN"]}
    if env.get("MEDASSIST_PACS_USER"):
        return {"username": env["MEDASSIST_PACS_USER"], "password": env.get("MEDASSIST_PACS_PASSWORD", "")}
    return {}


def client(url: str, creds: dict[str, str] | None = None, *, timeout: float = 30.0) -> Any:
    """A DICOMweb client of ``url`` (the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    if not url.startswith(("http://", "https://")):
        raise MedAssistError(f"the DICOMweb URL must start with http:// or https://, got {url[:80]!r}")
    creds = creds or {}
    if "username" in creds:
        session = create_session_from_user_pass(creds["username"], creds["password"])
    else:
        session = create_session()
    headers = {"Authorization": f"Bearer {creds['token']}"} if "token" in creds else None
    web = DICOMwebClient(url.rstrip("/"), session=session, headers=headers, timeout=timeout)
    web.set_http_retry_params(retry=False)  # one back-off, :func:`with_retries`, for refused connections and 5xx
    return web


def with_retries(call: Callable[[], T], what: str, url: str, *, tries: int = 5, base: float = 0.5) -> T:
    """``call()``, retried on a refused connection, a timeout or a 5xx answer with exponential back-off; a 4xx
    answer (a refusal that repeating does not change) and the last failure raise :class:`MedAssistError`."""
    import requests

    for attempt in range(1, tries + 1):
        try:
            return call()
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status == 401 or status == 403:
                raise MedAssistError(
                    f"the PACS at {url} refused {what} ({status}); give credentials with --credentials FILE or "
                    "MEDASSIST_PACS_USER and MEDASSIST_PACS_PASSWORD"
                ) from None
            if status < 500 or attempt == tries:
                raise MedAssistError(f"the PACS at {url} answered {status} to {what} (after {attempt} tries)") from None
            why = f"HTTP {status}"
        except (requests.ConnectionError, requests.Timeout) as err:
            if attempt == tries:
                raise MedAssistError(
                    f"the PACS at {url} could not be reached for {what} after {tries} tries "
                    f"({type(err).__name__}); nothing was lost: run the same command again to resume"
                ) from None
            why = type(err).__name__
        wait = base * 2 ** (attempt - 1)
        log.warning("pacs retry", extra={"fields": {"what": what, "why": why, "attempt": attempt, "wait_s": wait}})
        time.sleep(wait)
    raise AssertionError("unreachable")


class JobTable:
    """The instances done, per model version, in SQLite (safe for a run that stops at any point)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS done (sop TEXT NOT NULL, model_version TEXT NOT NULL, study TEXT NOT NULL, "
            "results TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (sop, model_version))"
        )
        self.db.commit()

    def is_done(self, sop: str, version: str) -> bool:
        row = self.db.execute("SELECT 1 FROM done WHERE sop = ? AND model_version = ?", (sop, version)).fetchone()
        return row is not None

    def mark_done(self, inst: Instance, version: str, results: Sequence[str]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.db.execute(
            "INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?)",
            (inst.sop, version, inst.study, json.dumps(list(results)), now),
        )
        self.db.commit()

    def count(self, version: str | None = None) -> int:
        if version is None:
            return int(self.db.execute("SELECT COUNT(*) FROM done").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM done WHERE model_version = ?", (version,)).fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _value(row: dict[str, Any], tag: str) -> str:
    values = row.get(tag, {}).get("Value") or [""]
    return str(values[0])


def find_instances(
    web: Any, url: str, *, studies: Sequence[str] = (), modality: str | None = None, since: dt.date | None = None
) -> list[Instance]:
    """The image instances of ``studies`` (all studies when none is given), of ``modality`` and of studies dated
    ``since`` or later, by QIDO-RS; result objects and documents (SEG, SR, ...) are left out."""
    filters: dict[str, Any] = {}
    if modality:
        filters["Modality"] = modality
    if since:
        filters["StudyDate"] = f"{since:%Y%m%d}-"
    fields = [_MODALITY, _SOP_CLASS]
    rows: list[dict[str, Any]] = []
    for study in studies or [None]:
        rows += with_retries(
            lambda study=study: web.search_for_instances(
                study_instance_uid=study, search_filters=filters, fields=fields, get_remaining=True
            ),
            "a QIDO-RS search for instances",
            url,
        )
    found = {}
    for row in rows:
        mod = _value(row, _MODALITY)
        if mod in NOT_IMAGES:
            continue
        inst = Instance(_value(row, _STUDY), _value(row, _SERIES), _value(row, _SOP), mod)
        if inst.sop:
            found[inst.sop] = inst
    return list(found.values())


def process(
    url: str,
    bundle: Any,
    *,
    jobs: str | Path,
    studies: Sequence[str] = (),
    modality: str | None = None,
    since: dt.date | None = None,
    creds: dict[str, str] | None = None,
    audit: Any = None,
    who: str = "pacs",
    tries: int = 5,
    overlay: bool = False,
    progress: bool = True,
) -> Summary:
    """Process every image instance the query finds that this model version has not processed yet; see the module
    docstring. ``audit``: an :class:`~medassist.hospital.audit.AuditTrail` that records each instance; ``overlay``:
    also store a Secondary Capture of a segmentation's outline or the boxes over the image."""
    from tqdm import tqdm

    from medassist.hospital.dicom_out import check_source
    from medassist.hospital.instances import answer_instance

    start = time.perf_counter()
    model = ModelIdentity.of(bundle)
    web = client(url, creds)
    table = JobTable(jobs)
    summary = Summary()
    try:
        found = find_instances(web, url, studies=studies, modality=modality, since=since)
        summary.found = len(found)
        todo = [i for i in found if not table.is_done(i.sop, model.version)]
        summary.done_before = len(found) - len(todo)
        for inst in tqdm(todo, desc="instances", unit="instance", disable=not progress):
            ds = with_retries(
                lambda inst=inst: web.retrieve_instance(inst.study, inst.series, inst.sop),
                "a WADO-RS retrieve",
                url,
                tries=tries,
            )
            try:
                answered = answer_instance(bundle, check_source(_with_file_meta(ds)), model, overlay=overlay)
            except MedAssistError as err:
                summary.failed.append((inst.sop, str(err)))
                _audit(audit, who, model, ds, 422, None)
                continue
            with_retries(
                lambda a=answered: web.store_instances(a.objects, study_instance_uid=a.study_uid),
                "a STOW-RS store of the results",
                url,
                tries=tries,
            )
            table.mark_done(inst, model.version, [str(o.SOPInstanceUID) for o in answered.objects])
            summary.processed += 1
            summary.stored += len(answered.objects)
            _audit(audit, who, model, ds, 200, answered.result)
    finally:
        table.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _with_file_meta(ds: Any) -> Any:
    """A retrieved instance with the file meta information a Part 10 file needs (WADO-RS answers may lack it)."""
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    return ds


def _audit(audit: Any, who: str, model: ModelIdentity, ds: Any, status: int, result: Any) -> None:
    if audit is None:
        return
    from medassist.hospital.instances import findings

    answered, referred = findings(result)
    audit.record(
        who=who,
        action="pacs process",
        model=model.name,
        version=model.short_version,
        study_uid=str(ds.get("StudyInstanceUID", "")) or None,
        accession=str(ds.get("AccessionNumber", "") or "") or None,
        status=status,
        answered=answered,
        referred=referred,
    )
