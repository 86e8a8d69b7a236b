"""The command table: ``medassist env | image | text | deploy | predict | serve | bench | data | models | report``.

Commands are plain typed functions; their options are generated from the dataclass configs (every field becomes
``--name`` or ``--section.name``, with the field's help text), so the CLI, YAML files and code share one schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import os
import sys
import typing
from pathlib import Path
from typing import Any

from medassist.config import (
    RESUME_FREE_KEYS,
    apply_overrides,
    flatten,
    from_dict,
    load_yaml,
    merge,
    profile_path,
    to_dict,
)
from medassist.errors import MedAssistError
from medassist.studies.table import GROUPS, STUDIES, Study, load

PROFILES_HELP = "shipped profile: debug (seconds), quick (minutes), full (the complete study)"


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "", group: Any = None) -> None:
    """Add ``--field`` (and ``--section.field`` for nested configs, in their own help group) to ``parser``."""
    hints = typing.get_type_hints(cls)
    target = group or parser
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if dataclasses.is_dataclass(hint):
            sub = parser.add_argument_group(f"{prefix}{f.name}", help_text)
            _add_dataclass_options(parser, hint, f"{prefix}{f.name}.", sub)  # type: ignore[arg-type]
            continue
        flag = f"--{prefix}{f.name}".replace("_", "-")
        if hint is bool:  # --mlflow, --mlflow true|false, and --no-mlflow
            target.add_argument(
                flag,
                dest=f"opt:{prefix}{f.name}",
                default=None,
                nargs="?",
                const="true",
                metavar="true|false",
                help=f"{help_text} (default: {_fmt_default(f)}; --no-{prefix}{f.name.replace('_', '-')}: false)",
            )
            negative = f"--no-{prefix}{f.name}".replace("_", "-")
            target.add_argument(
                negative, dest=f"opt:{prefix}{f.name}", action="store_const", const="false", help=argparse.SUPPRESS
            )
            continue
        meta = "LIST" if typing.get_origin(hint) is list else f.name.upper()
        target.add_argument(
            flag,
            dest=f"opt:{prefix}{f.name}",
            default=None,
            metavar=meta,
            help=f"{help_text} (default: {_fmt_default(f)})",
        )


def _fmt_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default) if f.default != "" else "unset"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        v = f.default_factory()  # type: ignore[misc]
        return ",".join(map(str, v)) if isinstance(v, list) else repr(v)
    return "required"


def _resolve(cls: type, args: argparse.Namespace, study: str, expand: Any = None) -> Any:
    """Profile YAML (the command's default profile unless one is given), then --config YAML, then --section.key
    options, then --set overrides; ``expand`` (if given) rewrites the merged mapping before it is read (the
    pipeline's sections name the studies' profiles)."""
    data: dict[str, Any] = {}
    profile = getattr(args, "profile", None) or getattr(args, "default_profile", None)
    if profile:
        data = load_yaml(profile_path(study, profile))
    if getattr(args, "config", None):
        data = merge(data, load_yaml(args.config))
    flags = [f"{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("opt:") and v is not None]
    data = apply_overrides(data, flags + list(getattr(args, "set", None) or []))
    return from_dict(cls, expand(data) if expand else data)


def _given_options(args: argparse.Namespace, study: str) -> list[tuple[str, dict[str, Any]]]:
    """What the command line gave, one ``(option as typed, the mapping it sets)`` per option; the default profile
    counts only when ``--profile`` was given."""
    given: list[tuple[str, dict[str, Any]]] = []
    if getattr(args, "profile", None):
        given.append((f"--profile {args.profile}", load_yaml(profile_path(study, args.profile))))
    if getattr(args, "config", None):
        given.append((f"--config {args.config}", load_yaml(args.config)))
    for k, v in vars(args).items():
        if k.startswith("opt:") and v is not None:
            given.append((f"--{k[4:].replace('_', '-')} {v}", apply_overrides({}, [f"{k[4:]}={v}"])))
    for item in getattr(args, "set", None) or []:
        given.append((f"--set {item}", apply_overrides({}, [item])))
    return given


def _resumed(cls: type, args: argparse.Namespace, study: str, cfg: Any, expand: Any = None) -> Any:
    """The configuration of the run ``cfg.resume`` continues: the one saved in its config.yaml.

    Options on the command line may repeat it; one that contradicts it is refused, with each contradicting option
    and both values, so that a run never continues under another configuration. Only the keys that do not change
    results (``RESUME_FREE_KEYS``: where the run and its data are, progress bars) take the command line's value.
    """
    from medassist.run import CONFIG, Run

    run_dir = Path(cfg.resume)
    try:
        saved = from_dict(cls, Run.saved_config(run_dir))
    except MedAssistError as exc:
        if str(exc).startswith("cannot resume"):
            raise
        raise MedAssistError(f"cannot resume {run_dir}: its {CONFIG} does not load ({exc})") from None
    base = to_dict(saved)
    flat_base = flatten(base)
    conflicts, free = [], {"resume"}
    overridden: set[str] = set()  # keys a later option sets: an earlier one's value for them does not count
    checked = []
    given = [(label, expand(data) if expand else data) for label, data in _given_options(args, study)]
    for label, data in reversed(given):
        keys = [k for k in flatten(data) if k not in overridden]
        overridden.update(flatten(data))
        checked.append((label, data, keys))
    for label, data, keys in reversed(checked):
        flat_given = flatten(to_dict(from_dict(cls, merge(base, data))))
        for key in keys:
            if key.split(".", 1)[0] in RESUME_FREE_KEYS:
                free.add(key.split(".", 1)[0])
            elif key in flat_base and flat_given[key] != flat_base[key]:
                conflicts.append(f"{label}: {key} is {flat_given[key]!r}, the run's is {flat_base[key]!r}")
    if conflicts:
        raise MedAssistError(
            f"cannot resume {run_dir} under other options than it was started with ({run_dir / CONFIG}):\n  "
            + "\n  ".join(conflicts)
            + "\nleave these options out to continue the run as it was started, or start a new run"
        )
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in sorted(free) if hasattr(cfg, k)})


def _study_parser(
    sub: argparse._SubParsersAction, name: str, config: str, help_text: str, default_profile: str, chosen: bool
) -> argparse.ArgumentParser:
    """A study command; its dataclass options (``config`` = "module:Class") are imported only when ``chosen``,
    so that ``medassist --help`` and the other commands do not import every study's dependencies."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    # No argparse default: a profile given explicitly is told apart from the default (which --resume ignores).
    p.add_argument("--profile", default=None, help=f"{PROFILES_HELP} (default: {default_profile})")
    p.set_defaults(default_profile=default_profile)
    p.add_argument("--config", help="a YAML file of options (applied over the profile)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any option, e.g. train.lr=3e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    if chosen:
        module, cls = config.split(":")
        _add_dataclass_options(p, getattr(importlib.import_module(module), cls))
    return p


def _command_path(argv: list[str]) -> tuple[str, ...]:
    """The command words of ``argv``, e.g. ("bench", "medmnist"): its first two tokens that are not options."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break  # options follow the command words
        words.append(token)
    return tuple(words[:2])


def _run(
    args: argparse.Namespace, cls: type, study: str, runner: Any, expand: Any = None, exit_code: Any = None
) -> int:
    """Resolve the config of ``study`` (on ``--resume``, the run's saved one); print it (``--print-config``) or
    run it. ``exit_code(out)`` (if given) turns what the runner returned into the exit status (0 by default)."""
    cfg = _resolve(cls, args, study, expand)
    if getattr(cfg, "resume", ""):
        cfg = _resumed(cls, args, study, cfg, expand)
    main_rank = True
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and hasattr(cfg, "out"):  # under torchrun
        from medassist.train.distributed import scratch_out, setup

        main_rank = setup(getattr(cfg, "device", "auto")).is_main
        if not main_rank:  # only rank 0 writes the run folder; the others write into a scratch folder
            out, resume = scratch_out(cfg.out, getattr(cfg, "resume", ""))
            changes = {"out": out, "resume": resume, "progress": False}
            cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if hasattr(cfg, k)})
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    out = runner(cfg)
    if isinstance(out, Path) and main_rank:
        print(f"run complete: {out}\nreport: {out / 'report.md'} and {out / 'report.html'}")
    return exit_code(out) if exit_code is not None and main_rank else 0


def run_study(args: argparse.Namespace, study: Study) -> int:
    """A study command of the study table: resolve its options and run it."""
    if study.preset:  # after the user's options, so that they win
        args.set = [*(args.set or []), *study.preset]
    expand = load(study.expand) if study.expand else None
    exit_status = load(study.exit_status) if study.exit_status else None
    return _run(args, load(study.config), study.profile_folder, load(study.runner), expand, exit_status)


def cmd_data_list(args: argparse.Namespace) -> int:
    from medassist.data import INFO, available, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    have = set(available(root))
    print(f"data directory: {root}")
    for name, info in INFO.items():
        sizes = "/".join(str(info.n_samples[s]) for s in ("train", "val", "test"))
        print(
            f"  {'*' if name in have else ' '} {name:16s} {info.task:26s} ch={info.n_channels} "
            f"classes={len(info.labels):2d} train/val/test={sizes}"
        )
    from medassist.data.heart_disease import heart_disease_present

    mark = "*" if heart_disease_present(root) else " "
    kind = "tabular, binary (num > 0)"
    print(f"  {mark} {'heart_disease':16s} {kind:26s} 920 patients of 4 hospitals (sex, age, site)")
    print("(* = present)")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from medassist.data import load_medmnist

    for name in args.names:
        if name == "heart_disease":
            from medassist.data.heart_disease import heart_disease_dir, load_heart_disease

            table = load_heart_disease(args.data_dir, download=True)
            print(f"{name}: ok ({len(table)} patients, {heart_disease_dir(args.data_dir)})")
            continue
        data = load_medmnist(name, data_dir=args.data_dir, download=True)
        print(f"{name}: ok ({data.info.get('path')})")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from medassist.data.datasheet import load_datasheet, render_datasheet

    print(render_datasheet(load_datasheet(args.name)))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from medassist.env import describe_env

    print(describe_env(args.data_dir))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from medassist.models import count_parameters, create_model, list_models
    from medassist.text import TEXT_TOKENIZER

    for name in list_models():
        # text models are shown at a typical vocabulary size; their inputs are token ids
        extra = {"vocab_size": 20000} if TEXT_TOKENIZER.get(name) == "word" else {}
        model = create_model(name, num_classes=2, in_channels=1, **extra)
        doc = (model.__class__.__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} {count_parameters(model):>11,d} params  {doc}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from medassist.studies.runs import open_run
    from medassist.studies.table import REPORTS

    if (Path(args.run_dir) / "pipeline.json").is_file():  # a `medassist all` folder: the one report of Parts 1-5
        from medassist.report.pipeline import write_pipeline_report

        print(write_pipeline_report(args.run_dir, pdf=not args.no_pdf))
        return 0
    if not (Path(args.run_dir) / "metrics.json").is_file():
        raise MedAssistError(
            f"{args.run_dir} has no metrics.json (a finished study's run folder) and no pipeline.json (a `medassist "
            "all` folder): nothing to render"
        )
    kinds = tuple(REPORTS)
    run = open_run(
        args.run_dir, kinds=kinds, complete=False, expect=f"a report renders a run of kind {', '.join(kinds)}"
    )
    print(load(REPORTS[run.kind])(run.dir))
    return 0


def _predict_segmentation(bundle: Any, args: argparse.Namespace) -> int:
    """Segment one image: write the mask PNG and an overlay beside ``--out`` (default: next to the input), print the
    area of each class in pixels (and in mm² when the image is a DICOM with a pixel spacing)."""
    import json

    from medassist.data.image_file import read_pixels
    from medassist.deploy.segmentation import overlay_outline_png
    from medassist.utils.io import atomic_path

    if args.input is None or args.text is not None:
        raise MedAssistError(f"{args.bundle} is a segmentation bundle; give an image file (PNG, JPEG, TIFF or DICOM)")
    result = bundle.segment_image_file(args.input)
    src = Path(args.input)
    stem = Path(args.out) if args.out else src.with_name(src.stem)
    pixels = read_pixels(src)
    image = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    written = {"mask": stem.with_name(stem.name + "_mask.png"), "overlay": stem.with_name(stem.name + "_overlay.png")}
    for what, data in (("mask", result.mask_png()), ("overlay", overlay_outline_png(image, result.mask))):
        with atomic_path(written[what]) as tmp:
            tmp.write_bytes(data)
    out = {
        "bundle": str(bundle.path),
        "name": bundle.meta["name"],
        "kind": "segmentation",
        "input": args.input,
        "area_pixels": result.area_pixels,
        "area_mm2": result.area_mm2,
        "latency_ms": result.latency_ms,
        **{k: str(v) for k, v in written.items()},
    }
    if args.json:
        print(json.dumps(out))
        return 0
    for name, area in result.area_pixels.items():
        mm2 = f" ({result.area_mm2[name]:.2f} mm²)" if result.area_mm2 else " (no pixel spacing: not in mm²)"
        print(f"{name}: {area:,} pixels{mm2}")
    print(f"mask: {written['mask']}\noverlay: {written['overlay']}\nlatency: {result.latency_ms:.2f} ms")
    return 0


def _predict_detection(bundle: Any, args: argparse.Namespace) -> int:
    """Detect in one image: print the count of each class and write the image with its boxes (PATH_boxes.png)."""
    import json

    from medassist.data.image_file import read_pixels
    from medassist.deploy.detection import boxes_png
    from medassist.utils.io import atomic_path

    if args.input is None or args.text is not None:
        raise MedAssistError(f"{args.bundle} is a detection bundle; give an image file (PNG, JPEG, TIFF or DICOM)")
    result = bundle.detect_image_file(args.input)
    src = Path(args.input)
    stem = Path(args.out) if args.out else src.with_name(src.stem)
    pixels = read_pixels(src)
    image = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    drawn = stem.with_name(stem.name + "_boxes.png")
    with atomic_path(drawn) as tmp:
        tmp.write_bytes(boxes_png(image, result))
    if args.json:
        out = {"bundle": str(bundle.path), "name": bundle.meta["name"], "kind": "detection", "input": args.input}
        print(json.dumps({**out, **result.as_dict(), "boxes_image": str(drawn)}))
        return 0
    for name, n in result.counts.items():
        print(f"{name}: {n} (score >= {result.thresholds[name]:.2f})")
    print(f"boxes: {drawn}\nlatency: {result.latency_ms:.2f} ms")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from medassist.deploy.bundle import load_bundle

    if args.input is not None and args.text is not None:
        raise MedAssistError("give either an INPUT file or --text, not both")
    if args.input is None and args.text is None:
        raise MedAssistError(
            "nothing to predict: give an INPUT file (an image, or a UTF-8 text file for a text bundle) or --text TEXT"
        )
    bundle = load_bundle(args.bundle, threads=args.threads)
    if args.dicom_out or args.fhir:
        from medassist.hospital.commands import predict_for_hospital

        return predict_for_hospital(bundle, args)
    if bundle.kind == "segmentation":
        return _predict_segmentation(bundle, args)
    if bundle.kind == "detection":
        return _predict_detection(bundle, args)
    if bundle.kind == "image" and args.text is not None:
        raise MedAssistError(f"{args.bundle} is an image bundle; give an image file (PNG, JPEG or DICOM), not --text")
    if bundle.kind == "image":
        prediction = bundle.predict_image_file(args.input)
    elif args.text is not None:
        prediction = bundle.predict_text(args.text)
    else:
        prediction = bundle.predict_text_file(args.input)
    if args.json:
        out = {"bundle": str(bundle.path), "name": bundle.meta["name"], "kind": bundle.kind, "task": bundle.task}
        out["input"] = args.input  # None when the text came from --text
        if bundle.task == "multi-label":
            out["threshold"] = bundle.threshold
        print(json.dumps({**out, **prediction.to_dict()}))
        return 0
    if bundle.task == "multi-class":
        print(f"label: {prediction.label}")
    else:
        t = bundle.threshold
        rule = f"probability >= {t:g}" if isinstance(t, float) else "probability >= each label's threshold"
        print(f"labels ({rule}): {', '.join(prediction.label) or 'none'}")
    print("probabilities:")
    width = max(len(name) for name in bundle.labels)
    for name, p in prediction.ranked():
        print(f"  {name:<{width}}  {p:.4f}" + ("  uncertain" if name in prediction.referred else ""))
    if prediction.abstained and bundle.min_confidence is not None:
        print(f"abstained: {prediction.reason} (confidence {prediction.confidence:.3f} < {bundle.min_confidence:.3f})")
    elif prediction.abstained:
        print(f"abstained: {prediction.reason}")
    print(f"latency: {prediction.latency_ms:.2f} ms")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from medassist.serve import ServeConfig, serve

    flags = [f"{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("opt:") and v is not None]
    named = []
    for spec in args.bundle or []:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise MedAssistError(
                f"--bundle {spec!r}: give NAME=FOLDER, e.g. --bundle chest-xray=runs/deploy-.../bundle"
            )
        named.append((name, folder))
    serve([*args.bundles, *named], from_dict(ServeConfig, apply_overrides({}, flags)))
    return 0


def cmd_serve_keys_add(args: argparse.Namespace) -> int:
    from medassist.serve.auth import add_key

    key = add_key(args.api_keys, args.name, args.role)
    print(f"API key for {args.name} ({args.role}); it is shown only now and stored only as a hash in {args.api_keys}:")
    print(key)
    return 0


def _add_serve_keys(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="the point-of-care service (here: its API keys)",
        description="Manage the API keys of medassist serve.",
    )
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="keys")
    k = keys.add_parser("keys", help="API keys").add_subparsers(dest="keys_action", required=True, metavar="add")
    add = k.add_parser(
        "add",
        help="make a new API key: print it once, append its name, role and hash to the key file",
        epilog="example:\n  medassist serve keys add ward-3 --api-keys keys.txt --role client",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", help="the key's name (shown in the access log; letters, digits, _ . @ -)")
    add.add_argument("--api-keys", required=True, metavar="FILE", help="the key file (created if missing)")
    add.add_argument(
        "--role",
        default="client",
        choices=["client", "metrics", "admin"],
        help="client: predict and list models; metrics: GET /metrics; admin: both and reload (default: client)",
    )
    add.set_defaults(func=cmd_serve_keys_add)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``medassist``; a study command's options are built only when ``argv`` selects it
    (``argv=None`` reads ``sys.argv``)."""
    from medassist import __version__

    path = _command_path(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="medassist",
        description="Build, study and ship the models of an intelligent healthcare assistant.",
    )
    parser.add_argument("--version", action="version", version=f"medassist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    groups: dict[str, Any] = {}
    for study in STUDIES:  # the study table: one command each
        parent = sub
        if len(study.command) > 1:
            name = study.command[0]
            if name not in groups:
                group = sub.add_parser(name, help=GROUPS[name], description=GROUPS[name])
                meta = "STUDY" if name == "tune" else "BENCHMARK"
                groups[name] = group.add_subparsers(dest=name, metavar=meta, required=True)
            parent = groups[name]
        chosen = path[: len(study.command)] == study.command
        p = _study_parser(parent, study.command[-1], study.config, study.help, study.default_profile, chosen)
        p.set_defaults(func=functools.partial(run_study, study=study))

    data = sub.add_parser("data", help="list and fetch data sets", description="list and fetch data sets")
    dsub = data.add_subparsers(dest="data", metavar="ACTION", required=True)
    p = dsub.add_parser("list", help="the MedMNIST v2 data sets and which are present")
    p.add_argument("--data-dir", help="data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    p.set_defaults(func=cmd_data_list)
    p = dsub.add_parser("fetch", help="download MedMNIST files or UCI Heart Disease (MD5-checked)")
    p.add_argument("names", nargs="+", help="data set names, e.g. pneumoniamnist breastmnist heart_disease")
    p.add_argument("--data-dir", help="data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    p.set_defaults(func=cmd_data_fetch)
    p = dsub.add_parser("info", help="the datasheet of a data set: source, licence, demographics, gaps, label noise")
    p.add_argument("name", help="openi, padchest, or a MedMNIST set (e.g. pneumoniamnist)")
    p.set_defaults(func=cmd_data_info)
    from medassist.hospital.commands import add_data_dicom

    add_data_dicom(dsub)

    p = sub.add_parser(
        "env", help="what this machine offers: devices and their precisions, threads, libraries, the data directory"
    )
    p.add_argument("--data-dir", help="data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("report", help="re-render the report of a run folder")
    p.add_argument("run_dir", help="a study's run folder, or a `medassist all` folder (runs/all-<time>)")
    p.add_argument("--no-pdf", action="store_true", help="a `medassist all` folder: write report.md and .html only")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "predict",
        help="predict one image or report with a deployed bundle (ONNX Runtime)",
        description="Verify a deployed bundle (every file against its manifest, the model against bundle.json),\n"
        "then predict one input with ONNX Runtime. Prints the predicted label(s), every label's probability\n"
        "(most probable first) and the latency of the model run; --json prints one JSON object instead.",
        epilog="examples:\n"
        "  medassist predict bundles/pneumonia xray.png\n"
        "  medassist predict bundles/pneumonia scan.dcm --json\n"
        "  medassist predict bundles/reports report.txt\n"
        "  medassist predict bundles/reports --text 'No acute cardiopulmonary process.'\n"
        "  medassist predict runs/deploy-segment-drive-.../bundle 01_test.tif --out /tmp/01\n"
        "  medassist predict runs/deploy-segment-drive-.../bundle 01_test.dcm --dicom-out results --fhir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle folder (model.onnx, bundle.json, manifest.json)")
    p.add_argument(
        "input",
        metavar="INPUT",
        nargs="?",
        help="an image file (PNG, JPEG or DICOM) for an image bundle, or a UTF-8 text file for a text bundle",
    )
    p.add_argument("--text", help="the report text itself, instead of INPUT (text bundles)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--out",
        metavar="PATH",
        help="segmentation bundles: PATH_mask.png and PATH_overlay.png are written (default: beside the input)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="ONNX Runtime intra-op threads (default: 0, ONNX Runtime's choice)",
    )
    p.add_argument(
        "--dicom-out",
        metavar="DIR",
        help="a DICOM INPUT: write the answer as DICOM (SEG for segmentations, an SR Measurement Report) into DIR",
    )
    p.add_argument(
        "--dicom-overlay",
        action="store_true",
        help="with --dicom-out: also a Secondary Capture of the outline or boxes drawn over the image",
    )
    p.add_argument("--fhir", action="store_true", help="print the answer as a FHIR R4 DiagnosticReport (JSON)")
    p.set_defaults(func=cmd_predict)

    from medassist.hospital.audit import add_audit_commands
    from medassist.hospital.commands import add_pacs_commands

    add_pacs_commands(sub)
    add_audit_commands(sub)

    if path == ("serve", "keys"):
        _add_serve_keys(sub)
        return parser
    p = sub.add_parser(
        "serve",
        help="the point-of-care service: an HTTP API and a web page over verified bundles",
        description="Verify every bundle against its manifest (a problem stops here, before anything listens), then\n"
        "serve POST /v1/images, /v1/segmentations, /v1/detections and /v1/reports (JSON, or FHIR with Accept:\n"
        "application/fhir+json, or DICOM SR/SEG with Accept: application/dicom), STOW-RS at POST /dicomweb/studies,\n"
        "GET /v1/models, /metrics, POST /v1/admin/reload, /healthz, /readyz, the OpenAPI schema (/docs) and the web\n"
        "page at /. Off 127.0.0.1 callers need an API key: medassist serve keys add NAME --api-keys keys.txt.",
        epilog="examples:\n  medassist serve runs/deploy-image-.../bundle runs/deploy-text-.../bundle --port 8000\n"
        "  medassist serve --bundle xray=runs/deploy-image-a/bundle --bundle xray=runs/deploy-image-b/bundle \\\n"
        "      --host 0.0.0.0 --api-keys keys.txt --rate-limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundles", metavar="BUNDLE", nargs="*", help="bundle folders (image and text), known by name")
    p.add_argument(
        "--bundle",
        action="append",
        metavar="NAME=FOLDER",
        help="a bundle known as NAME; repeat a NAME for several versions of one model (the first is the default)",
    )
    if path[:1] == ("serve",):
        _add_dataclass_options(p, importlib.import_module("medassist.serve.config").ServeConfig)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medassist`` command."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MedAssistError as exc:
        print(f"medassist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medassist: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
