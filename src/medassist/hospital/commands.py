"""The hospital's commands: ``medassist pacs process``, ``medassist predict --dicom-out DIR --fhir`` and
``medassist audit`` (:mod:`medassist.hospital.audit`); the parser in :mod:`medassist.cli` calls these."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from medassist.errors import MedAssistError


def audit_trail(log: str | None, key_file: str | None) -> Any:
    """The audit trail at ``log`` (None: no audit trail), keyed from ``key_file`` or ``MEDASSIST_AUDIT_KEY``."""
    if not log:
        return None
    from medassist.hospital.audit import AuditTrail, load_key

    return AuditTrail(Path(log), load_key(key_file))


def _is_dicom(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def predict_for_hospital(bundle: Any, args: argparse.Namespace) -> int:
    """``medassist predict`` with ``--dicom-out DIR`` (the SEG and SR of a DICOM input) and/or ``--fhir`` (print the
    FHIR DiagnosticReport of the answer)."""
    from medassist.hospital.dicom_out import ModelIdentity, read_source, write_objects
    from medassist.hospital.fhir import diagnostic_report
    from medassist.hospital.instances import answer_instance, predict_file

    model = ModelIdentity.of(bundle)
    study_uid = None
    if args.dicom_out:
        if bundle.kind == "text":
            raise MedAssistError(
                f"{args.bundle} is a text bundle: its findings are about a report, not an image, so there is no DICOM "
                "SEG or SR to write; use --fhir for a FHIR DiagnosticReport"
            )
        if args.input is None or not Path(args.input).is_file() or not _is_dicom(args.input):
            raise MedAssistError("--dicom-out needs a DICOM image as INPUT (the results reference it)")
        answered = answer_instance(bundle, read_source(args.input), model, overlay=args.dicom_overlay)
        result, study_uid = answered.result, answered.study_uid
        written = write_objects(answered.objects, Path(args.dicom_out), Path(args.input).stem)
        for path in written:  # beside a FHIR answer on stdout, the files are named on stderr
            print(f"wrote {path}", file=sys.stderr if args.fhir else sys.stdout)
    elif bundle.kind == "text":
        result = bundle.predict_text(args.text) if args.text is not None else bundle.predict_text_file(args.input)
    else:
        if args.input is None:
            raise MedAssistError(f"{args.bundle} is an image bundle; give an image file")
        result = predict_file(bundle, args.input)
        if _is_dicom(args.input):
            study_uid = str(read_source(args.input).StudyInstanceUID)
    if args.fhir:
        report = diagnostic_report(
            result,
            kind=bundle.kind,
            task=bundle.task,
            model_name=model.name,
            model_version=model.version,
            labels=list(bundle.labels),
            study_uid=study_uid,
        )
        print(json.dumps(report, indent=2))
    return 0


def cmd_data_dicom(args: argparse.Namespace) -> int:
    """Wrap image files as DICOM instances: one study (and series) for all, or one study per file."""
    from pydicom.uid import generate_uid

    from medassist.hospital.dicom_in import wrap_file

    out = Path(args.out)
    study, series = str(generate_uid()), str(generate_uid())
    for n, image in enumerate(args.images, start=1):
        if args.study_per_file:
            study, series = str(generate_uid()), str(generate_uid())
        path = wrap_file(
            image,
            out / f"{Path(image).stem}.dcm",
            patient_id=args.patient_id or (f"{args.patient_prefix}{n}" if args.study_per_file else args.patient_prefix),
            study_uid=study,
            series_uid=series,
            modality=args.modality,
            accession=f"{args.patient_prefix}{n}" if args.study_per_file else None,
            instance_number=1 if args.study_per_file else n,
        )
        print(path)
    return 0


def add_data_dicom(dsub: Any) -> None:
    """``medassist data dicom``."""
    from medassist.hospital.dicom_in import MODALITIES

    p = dsub.add_parser(
        "dicom",
        help="wrap images (PNG, JPEG, TIFF) as DICOM Secondary Capture instances, e.g. to load a PACS",
        epilog="example:\n  medassist data dicom ../shared/data/drive/test/images/*.tif --out dicom --modality OP",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the .dcm files")
    p.add_argument("--modality", default="OT", choices=MODALITIES, help="the instances' modality (default: OT)")
    p.add_argument("--study-per-file", action="store_true", help="one study per file (default: one study for all)")
    p.add_argument("--patient-id", help="the patient id of every instance (default: PREFIX or PREFIX<n>)")
    p.add_argument("--patient-prefix", default="ANON-", help="prefix of generated patient ids (default: ANON-)")
    p.set_defaults(func=cmd_data_dicom)


def cmd_pacs_process(args: argparse.Namespace) -> int:
    from medassist.deploy.bundle import load_bundle
    from medassist.hospital.pacs import credentials, process

    since = None
    if args.since:
        try:
            since = dt.date.fromisoformat(args.since)
        except ValueError:
            raise MedAssistError(f"--since {args.since!r} is not a date; give YYYY-MM-DD") from None
    bundle = load_bundle(args.bundle, threads=args.threads)
    summary = process(
        args.dicomweb,
        bundle,
        jobs=args.jobs,
        studies=args.study or (),
        modality=args.modality,
        since=since,
        creds=credentials(args.credentials),
        audit=audit_trail(args.audit_log, args.audit_key_file),
        overlay=args.overlay,
        progress=args.progress,
    )
    print(
        f"{summary.found} image instances found; {summary.done_before} done before; {summary.processed} processed "
        f"now ({summary.stored} result objects stored); {len(summary.failed)} refused; {summary.seconds:.1f} s"
    )
    for sop, why in summary.failed:
        print(f"  refused {sop}: {why}")
    return 0


def add_pacs_commands(sub: Any) -> None:
    """``medassist pacs process``."""
    p = sub.add_parser("pacs", help="process a PACS's images by DICOMweb and store the results back (SEG, SR)")
    psub = p.add_subparsers(dest="pacs", metavar="ACTION", required=True)
    p = psub.add_parser(
        "process",
        help="QIDO-RS query, WADO-RS retrieve, predict, STOW-RS store; each instance once (resumable)",
        description="Find a PACS's image instances by QIDO-RS, retrieve each by WADO-RS, run the bundle, and store\n"
        "its DICOM SEG and SR into the instance's study by STOW-RS. A job table records what is done: run the\n"
        "same command again after a stop and it resumes. Credentials: --credentials FILE or MEDASSIST_PACS_USER\n"
        "and MEDASSIST_PACS_PASSWORD (or MEDASSIST_PACS_TOKEN), never on the command line.",
        epilog="example:\n  medassist pacs process --dicomweb http://127.0.0.1:8042/dicom-web \\\n"
        "      --bundle runs/deploy-image-.../bundle --modality CR --since 2026-01-01 --credentials pacs.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dicomweb", required=True, metavar="URL", help="the PACS's DICOMweb root")
    p.add_argument("--bundle", required=True, metavar="FOLDER", help="an image, segmentation or detection bundle")
    p.add_argument("--study", action="append", metavar="UID", help="only this study (repeat for several)")
    p.add_argument("--modality", help="only instances of this modality (e.g. CR, DX, OP)")
    p.add_argument("--since", metavar="DATE", help="only studies dated DATE (YYYY-MM-DD) or later")
    p.add_argument(
        "--jobs", default="medassist-pacs-jobs.sqlite", metavar="FILE", help="the job table (default: %(default)s)"
    )
    p.add_argument("--credentials", metavar="FILE", help='JSON: {"username": ..., "password": ...} or {"token": ...}')
    p.add_argument("--audit-log", metavar="FILE", help="append one audit line per instance to FILE")
    p.add_argument("--audit-key-file", metavar="FILE", help="the audit key (default: $MEDASSIST_AUDIT_KEY)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="ONNX Runtime threads (0: its choice)")
    p.add_argument(
        "--overlay", action="store_true", help="also store a Secondary Capture of the outline or boxes over the image"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="a progress bar")
    p.set_defaults(func=cmd_pacs_process)
