"""The deployment study: compress a study's model for the point of care, measure every variant the same way,
and ship the best one as a verified bundle.

Variants of an image model: ONNX export, static int8, channel pruning (torch-pruning) with a short fine-tune,
magnitude pruning stored sparse, a distilled student, and their combinations; every ONNX export of a model with
global average pooling before its head also returns its class-activation maps (Grad-CAM of that head). Variants of a
recurrent text model: ONNX export, dynamic int8 (ONNX Runtime and PyTorch), magnitude pruning stored sparse; and,
in the same table, the text study's Transformer (all-MiniLM-L6-v2): its ONNX export and dynamic int8, with its
WordPiece tokenizer.

The bundle's variant is chosen on the validation split (the fastest one whose validation accuracy and AUC stay
within the stated tolerances of the best fp32 model); so are its temperature (calibration) and its abstention
threshold (the lowest confidence at which accepted validation cases err at most ``target_error``). The test split is
only measured.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.config import TrainConfig, to_dict
from medassist.deploy.config import DeployConfig
from medassist.deploy.export import CAM_OUTPUT, export_onnx
from medassist.deploy.source import Source
from medassist.deploy.variants import BASELINE, TARGETS, Variant, measure_variants, select_variant
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.studies.deploy_source import load_source
from medassist.train import Labelled, fit
from medassist.train.device import on_device
from medassist.utils.cores import usable_cores
from medassist.utils.steps import step


@on_device
def run_deploy_study(cfg: DeployConfig) -> Path:
    """Build, measure and bundle the variants of the model in ``cfg.run``; return the deploy run folder."""
    if not cfg.run:
        raise MedAssistError("give the study run folder to deploy: medassist deploy --run runs/image-...")
    if cfg.threads < 0:
        raise MedAssistError(f"threads must be 0 (every core this process may use) or more; got {cfg.threads}")
    # The thread count is settled before anything is measured, and recorded in config.yaml as a number.
    cfg = dataclasses.replace(cfg, threads=cfg.threads or usable_cores())
    from medassist.run import run_kind

    if run_kind(cfg.run) == "detect":
        from medassist.studies.deploy_detect import run_detect_deploy

        return run_detect_deploy(cfg)
    if run_kind(cfg.run) == "segment":
        from medassist.studies.deploy_segment import run_segment_deploy

        return run_segment_deploy(cfg)
    source = load_source(cfg.run, data_dir=cfg.data_dir, n_teachers=cfg.n_teachers, progress=cfg.progress)
    run = Run.create(cfg.out, f"deploy-{source.kind}-{source.name}", to_dict(cfg), kind="deploy")
    with run:
        torch.set_num_threads(cfg.threads)
        build = _image_variants if source.kind == "image" else _text_variants
        variants = build(run, cfg, source)
        _stage(cfg, f"measuring {len(variants)} variants (size, latency, throughput, validation and test metrics)")
        table = measure_variants(variants, source, cfg)
        chosen = select_variant(table, cfg)
        _write_results(run, cfg, source, variants, table, chosen)
        from medassist.report.deploy import write_deploy_report

        write_deploy_report(run.dir)
    return run.dir


def _stage(cfg: DeployConfig, text: str) -> None:
    step("deploy", text, show=cfg.progress)


def _save_state(run: Run, model: torch.nn.Module, name: str) -> Path:
    """A plain fp32 state dict, the PyTorch file a device would load."""
    path = run.path(f"models/{name}.pt")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _train(
    cfg: DeployConfig,
    model: torch.nn.Module,
    source: Source,
    tcfg: TrainConfig,
    desc: str,
    *,
    kind: str = "fine-tune",
    train: Labelled | None = None,
    step_fn: Any = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train ``model`` with the engine; its history (one row per epoch, with how the training ended) and its
    record: the epochs run and planned, whether the time budget ended it, and whether that left it under-trained
    (the budget ended it while validation still improved: :attr:`medassist.train.engine.FitResult.under_trained`)."""
    result = fit(
        model,
        train or source.splits["train"],
        source.splits["val"],
        dataclasses.replace(tcfg, seed=cfg.seed, threads=cfg.threads),
        num_classes=source.num_classes,
        task=source.task,
        progress=cfg.progress,
        desc=desc,
        step_fn=step_fn,
    )
    model.cpu()  # trained on the run's device; exported, quantised and timed on the CPU it is deployed to
    record = {
        "training": desc,
        "kind": kind,
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(result.history),
        "planned_epochs": int(result.planned_epochs),
        "time_budget": float(tcfg.time_budget),
        "budget_reached": bool(result.budget_reached),
        "under_trained": bool(result.under_trained),
    }
    history = result.history.assign(
        variant=desc,
        planned_epochs=result.planned_epochs,
        budget_reached=result.budget_reached,
        under_trained=result.under_trained,
    )
    return history, record


def _onnx_pair(run: Run, cfg: DeployConfig, source: Source, model: torch.nn.Module, stem: str) -> tuple[Path, Path]:
    """fp32 ONNX export of ``model`` and its int8 version (static for images, dynamic for text)."""
    from medassist.deploy.quantize import calibration_sample, quantize_dynamic_int8, quantize_static_int8

    text = source.kind == "text"
    fp32 = export_onnx(model, source.example(), run.path(f"models/{stem}.onnx"), text=text, cam=not text)
    int8 = run.path(f"models/{stem}.int8.onnx")
    if source.kind == "image":
        calib = calibration_sample(source.images["train"], cfg.calibration_images, cfg.seed)
        quantize_static_int8(fp32, int8, calib)
    else:
        quantize_dynamic_int8(fp32, int8)
    return fp32, int8


def _pair(
    run: Run,
    cfg: DeployConfig,
    source: Source,
    model: torch.nn.Module,
    stem: str,
    label: str,
    technique: str,
    note: str = "",
    trainings: list[dict[str, Any]] | None = None,
) -> list[Variant]:
    """A trained model as two variants: its fp32 PyTorch file, and its int8 ONNX export checked against it; both
    rest on the ``trainings`` that made the model (so both are under-trained when one of them was)."""
    _, int8 = _onnx_pair(run, cfg, source, model, stem)
    fp32_name = f"{label} (PyTorch)"
    rests = list(trainings or [])
    return [
        Variant(
            fp32_name, technique, "pytorch", [_save_state(run, model, stem)], model=model.eval(), note=note,
            trainings=rests,
        ),
        Variant(
            f"{label} int8 (ONNX Runtime)", f"{technique} + int8", "onnxruntime", [int8], parity_with=fp32_name,
            trainings=rests,
        ),
    ]  # fmt: skip


def _baselines(run: Run, cfg: DeployConfig, source: Source, int8_label: str, int8_technique: str) -> list[Variant]:
    """The fp32 PyTorch model (the baseline every drop is measured from), its ONNX export and its int8 version."""
    fp32, int8 = _onnx_pair(run, cfg, source, source.model, "baseline")
    base = [_save_state(run, source.model, "baseline")]
    return [
        Variant(BASELINE, "baseline", "pytorch", base, model=source.model),
        Variant("fp32 (ONNX Runtime)", "ONNX export", "onnxruntime", [fp32], parity_with=BASELINE),
        Variant(int8_label, int8_technique, "onnxruntime", [int8], parity_with=BASELINE),
    ]


def _torch_int8(run: Run, model: torch.nn.Module, stem: str) -> tuple[torch.nn.Module, Path]:
    """PyTorch's dynamic int8 of ``model`` (a copy) and the file of its state dict."""
    from medassist.deploy.quantize import torch_dynamic_int8

    q = torch_dynamic_int8(copy.deepcopy(model)).eval()
    path = run.path(f"models/{stem}.torch_int8.pt")
    torch.save(q.state_dict(), path)
    return q, path


def _student_kwargs(cfg: DeployConfig) -> dict[str, Any]:
    return {"width": cfg.student_width} if cfg.student == "cnn_gap" else {}


def _magnitude(run: Run, cfg: DeployConfig, source: Source, tcfg: TrainConfig) -> tuple[Variant, pd.DataFrame]:
    """Unstructured magnitude pruning, fine-tuned with its masks, stored as bitmask + values."""
    from medassist.deploy.prune import add_magnitude_masks, load_sparse, remove_masks, save_sparse

    model = copy.deepcopy(source.model)
    params = add_magnitude_masks(model, cfg.magnitude_amount)
    hist, rec = _train(cfg, model, source, tcfg, f"magnitude-pruned {cfg.magnitude_amount:.0%}")
    sparsity = remove_masks(params)
    path = save_sparse(model.state_dict(), run.path("models/magnitude_pruned.sparse.zip"))
    model.load_state_dict(load_sparse(path))  # what runs is what the file holds
    return (
        Variant(
            name=f"magnitude-pruned {sparsity:.0%}, sparse file (PyTorch)",
            technique="unstructured magnitude pruning + fine-tune",
            runtime="pytorch",
            files=[path],
            model=model.eval(),
            note=f"{sparsity:.1%} of the prunable weights are zero; dense kernels compute them anyway",
            trainings=[rec],
        ),
        hist,
    )


def _image_variants(run: Run, cfg: DeployConfig, source: Source) -> list[Variant]:
    from medassist.deploy.distill import TeacherBatcher, distillation_step, ensemble_logits
    from medassist.deploy.prune import prune_channels
    from medassist.models import create_model

    histories = []
    _stage(cfg, f"fp32 baseline, ONNX export and static int8 of {source.model_name}")
    variants = _baselines(run, cfg, source, "int8 static (ONNX Runtime)", "static int8 quantization")

    _stage(cfg, f"channel pruning ({cfg.channel_ratio:.0%}) + fine-tune")
    pruned = copy.deepcopy(source.model)
    counts = prune_channels(pruned, source.example()[0], cfg.channel_ratio)
    hist, pruned_rec = _train(cfg, pruned, source, cfg.finetune, f"channel-pruned {cfg.channel_ratio:.0%}")
    histories.append(hist)
    note = f"parameters {counts['params_before']:,} -> {counts['params_after']:,}"
    label = f"channel-pruned {cfg.channel_ratio:.0%}"
    technique = "structured pruning + fine-tune"
    variants += _pair(run, cfg, source, pruned, "channel_pruned", label, technique, note, trainings=[pruned_rec])

    _stage(cfg, f"magnitude pruning ({cfg.magnitude_amount:.0%}) + fine-tune")
    v, h = _magnitude(run, cfg, source, cfg.finetune)
    variants.append(v)
    histories.append(h)

    if not source.teachers:
        raise MedAssistError(f"{source.run_dir} has no other trained model to act as a distillation teacher")
    teacher_names = [n for n, _ in source.teachers]
    _stage(cfg, f"distillation: teachers {', '.join(teacher_names)} -> {source.model_name} student")
    student_kw = _student_kwargs(cfg)
    tcfg = dataclasses.replace(cfg.student_train, augment=False)  # the stored teacher logits fit unaugmented images

    def student() -> torch.nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(
            cfg.student, num_classes=source.num_classes, in_channels=source.preprocessing["channels"], **student_kw
        )

    alone = student()
    hist, alone_rec = _train(cfg, alone, source, tcfg, "student alone", kind="student")
    histories.append(hist)
    teacher_logits = ensemble_logits([m for _, m in source.teachers], source.images["train"])
    kd_train = Labelled(TeacherBatcher(source.images["train"], teacher_logits), source.splits["train"].labels)
    step = distillation_step(cfg.temperature, cfg.alpha)
    distilled = student()
    hist, kd_rec = _train(
        cfg, distilled, source, tcfg, "student distilled", kind="student", train=kd_train, step_fn=step
    )
    histories.append(hist)
    variants.append(
        Variant("student alone (PyTorch)", "small model, no teacher", "pytorch",
                [_save_state(run, alone, "student_alone")], model=alone.eval(), trainings=[alone_rec])
    )  # fmt: skip
    variants += _pair(
        run, cfg, source, distilled, "distilled", "distilled student", "knowledge distillation", trainings=[kd_rec]
    )

    _stage(cfg, "distilled + channel-pruned + int8")
    dp = copy.deepcopy(distilled)
    prune_channels(dp, source.example()[0], cfg.channel_ratio)
    ft = dataclasses.replace(cfg.finetune, augment=False)
    hist, dp_rec = _train(cfg, dp, source, ft, "distilled + pruned", train=kd_train, step_fn=step)
    histories.append(hist)
    label = "distilled + channel-pruned"
    technique = "distillation + structured pruning"
    variants += _pair(run, cfg, source, dp, "distilled_pruned", label, technique, trainings=[kd_rec, dp_rec])
    pd.concat(histories).to_csv(run.path("history/finetune.csv"), index=False)
    return variants


def _text_variants(run: Run, cfg: DeployConfig, source: Source) -> list[Variant]:
    _stage(cfg, f"fp32 baseline, ONNX export and dynamic int8 of {source.model_name}")
    variants = _baselines(run, cfg, source, "int8 dynamic (ONNX Runtime)", "dynamic int8 quantization")
    q, qpath = _torch_int8(run, source.model, "baseline")
    variants.append(
        Variant("int8 dynamic (PyTorch)", "dynamic int8 quantization", "pytorch", [qpath], model=q,
                parity_with=BASELINE)
    )  # fmt: skip
    _stage(cfg, f"magnitude pruning ({cfg.magnitude_amount:.0%}) + fine-tune")
    v, h = _magnitude(run, cfg, source, cfg.text_finetune)
    variants.append(v)
    h.to_csv(run.path("history/finetune.csv"), index=False)
    return variants + _transformer_variants(run, cfg, source)


def _transformer_variants(run: Run, cfg: DeployConfig, lstm: Source) -> list[Variant]:
    """The text study's Transformer (a WordPiece model with its tokenizer.json), then the study's other models
    that validation may choose: the ensemble of TF-IDF and the Transformer, and the frozen encoder."""
    from medassist.studies.deploy_source import load_frozen_encoder, load_text_transformer

    source = load_text_transformer(lstm)
    variants = []
    if source is not None:
        _stage(cfg, f"the Transformer ({source.model_name}): ONNX export and dynamic int8")
        if source.preprocessing["tokenizer"] == "wordpiece":
            source.extra_files = _tokenizer_file(run)
        variants += _second_model(run, cfg, source, "transformer")
        variants += _ensemble_variants(cfg, source, variants[-3:])
    frozen = load_frozen_encoder(lstm, source)
    if frozen is not None:
        _stage(cfg, "the frozen MiniLM + logistic regression: one ONNX graph and its dynamic int8")
        frozen.extra_files = _tokenizer_file(run)
        variants += _second_model(run, cfg, frozen, "frozen")
    return variants


def _second_model(run: Run, cfg: DeployConfig, source: Source, stem: str) -> list[Variant]:
    """A text study's model beside the recurrent one, reading its own inputs of the same reports: fp32 PyTorch (its
    own baseline), its ONNX export (one graph: the frozen encoder's head included) and that export's dynamic int8."""
    fp32, int8 = _onnx_pair(run, cfg, source, source.model, stem)
    name, label = f"{source.model_name} {BASELINE}", source.model_name
    return [
        Variant(name, "baseline", "pytorch", [_save_state(run, source.model, stem)], model=source.model, source=source),
        Variant(f"{label} fp32 (ONNX Runtime)", "ONNX export", "onnxruntime", [fp32], parity_with=name, source=source),
        Variant(
            f"{label} int8 dynamic (ONNX Runtime)",
            "dynamic int8 quantization",
            "onnxruntime",
            [int8],
            parity_with=name,
            source=source,
        ),
    ]


def _tokenizer_file(run: Run) -> dict[str, Path]:
    """MiniLM's tokenizer.json in the run folder (written once), as a WordPiece model's extra file."""
    from medassist.deploy.tokenizer import TOKENIZER_FILE, save_minilm_tokenizer

    path = run.path(f"models/{TOKENIZER_FILE}")
    return {TOKENIZER_FILE: path if path.is_file() else save_minilm_tokenizer(path)}


def _ensemble_variants(cfg: DeployConfig, transformer: Source, made: list[Variant]) -> list[Variant]:
    """The text study's ensemble (when it compared one): each of the Transformer's three variants ``made`` beside
    the tuned TF-IDF model (saved as data, :mod:`medassist.deploy.ensemble`), their probabilities averaged at the
    weight validation chose."""
    from medassist.deploy.ensemble import TFIDF_FILE, TfidfPart, save_tfidf
    from medassist.studies.deploy_source import ENSEMBLE, load_ensemble

    loaded = load_ensemble(transformer)
    if loaded is None:
        return []
    source, tfidf, weight = loaded
    _stage(cfg, f"the ensemble: TF-IDF (weight {weight:g}) + {transformer.model_name}")
    path = save_tfidf(tfidf, made[0].files[0].parent / TFIDF_FILE)
    part = TfidfPart.load(path)
    source.extra_files = {**transformer.extra_files, TFIDF_FILE: path}
    note = f"TF-IDF weight {weight:g}, {transformer.model_name} {1 - weight:g}"

    def renamed(name: str | None) -> str | None:
        return None if name is None else name.replace(transformer.model_name, ENSEMBLE, 1)

    return [
        dataclasses.replace(
            v,
            name=renamed(v.name),
            parity_with=renamed(v.parity_with),
            files=[*v.files, path],
            ensemble=(part, weight),
            network=v.name,
            source=source,
            note=note,
            logits={},
        )
        for v in made
    ]


def _write_results(
    run: Run, cfg: DeployConfig, source: Source, variants: list[Variant], table: pd.DataFrame, chosen: str
) -> None:
    """Tables, figure, parity, bundle and metrics.json of the deploy run."""
    from medassist.deploy.bundle import write_bundle
    from medassist.deploy.variants import test_intervals
    from medassist.evaluate.plots import plot_tradeoff

    teachers = None
    if source.teachers:
        names = [n for n, _ in source.teachers]
        teachers = {"teachers": names, "student": cfg.student, "student_kwargs": _student_kwargs(cfg)}
    run.write_table("benchmark", table)
    # The legend marks a variant whose fine-tune or student its time budget cut while validation still improved.
    marked = {v.name: f"{v.name} (under-trained)" if v.under_trained else v.name for v in variants}
    plot_tradeoff(table.assign(variant=table.variant.map(marked)), run.figure("size_latency"), highlight=marked[chosen])
    step("deploy", "test intervals of the baseline and the chosen variant", show=False)
    intervals = test_intervals(variants, source, chosen, n_boot=cfg.n_boot, seed=cfg.seed)
    run.write_table("test_intervals", pd.DataFrame(intervals))
    row = table.set_index("variant").loc[chosen]
    var = next(v for v in variants if v.name == chosen)
    shipped = var.source or source
    bundle_metrics = {
        k: float(row[k]) for k in ("test_accuracy", "test_auc", "test_macro_f1", "val_accuracy", "val_auc")
    }
    _stage(cfg, f"calibration and abstention of '{chosen}' (fitted on validation)")
    calibration, threshold = _calibrate(run, cfg, shipped, var)
    _stage(cfg, f"writing the bundle of '{chosen}'")
    bundle = write_bundle(
        run.path("bundle/x").parent,
        model_path=var.onnx_file,
        kind=shipped.kind,
        task=shipped.task,
        labels=shipped.labels,
        preprocessing=shipped.preprocessing,
        threshold=threshold,
        metrics=bundle_metrics,
        extra_files=shipped.extra_files,
        info={"variant": chosen, "source_run": str(shipped.run_dir), "model": shipped.model_name},
        name=f"{shipped.name} {shipped.model_name} ({chosen})",
        calibration={
            "temperature": calibration["temperature"],
            "abstain": calibration["per_finding"]["rule"],
            **({"cam_output": CAM_OUTPUT} if _has_cam(var.onnx_file) else {}),
        },
        ensemble=_ensemble_entry(var),
    )
    run.write_metrics(
        {
            "kind": source.kind,
            "dataset": source.name,
            "model": source.model_name,
            "shipped_model": shipped.model_name,
            "calibration": calibration,
            "source_run": str(source.run_dir),
            "task": source.task,
            "threads": cfg.threads,
            "targets": TARGETS,
            "selection": {"max_accuracy_drop": cfg.max_accuracy_drop, "max_auc_drop": cfg.max_auc_drop},
            "chosen": chosen,
            "bundle": str(bundle),
            "variants": table.to_dict("records"),
            "test_intervals": intervals,
            "teachers": teachers,
            # Every training of this study (fine-tunes after pruning, students), each with whether its time budget
            # left it under-trained; a variant's row in `variants` says whether one it rests on was.
            "trainings": _trainings(variants),
        },
    )


def _ensemble_entry(var: Variant) -> dict[str, Any] | None:
    """bundle.json's ensemble entry of a shipped ensemble variant (its TF-IDF file and weight), else None."""
    if var.ensemble is None:
        return None
    from medassist.deploy.ensemble import TFIDF_FILE

    return {"tfidf_file": TFIDF_FILE, "tfidf_weight": var.ensemble[1]}


def _trainings(variants: list[Variant]) -> list[dict[str, Any]]:
    """The records of the trainings the variants rest on, each once, in the order they ran."""
    seen: dict[str, dict[str, Any]] = {}
    for v in variants:
        for rec in v.trainings:
            seen.setdefault(rec["training"], rec)
    return list(seen.values())


def _has_cam(onnx_file: Path) -> bool:
    import onnx

    return CAM_OUTPUT in {o.name for o in onnx.load(str(onnx_file), load_external_data=False).graph.output}


def _calibrate(run: Run, cfg: DeployConfig, source: Source, var: Variant) -> tuple[dict[str, Any], Any]:
    """Temperature and abstention threshold of the shipped variant, fitted on its validation logits; on test, ECE
    and reliability before and after, the risk-coverage curve, and coverage and accepted error with 95% intervals.

    Returns the calibration summary (metrics.json) and the bundle's decision threshold(s) on the scaled
    probabilities (multi-label: the same decisions as the study's thresholds on the unscaled ones).
    """
    from medassist.deploy.calibrate import (
        choose_abstention,
        confidence_and_error,
        fit_temperature,
        probabilities,
        risk_coverage,
        selective_summary,
        threshold_after_temperature,
    )
    from medassist.evaluate.calibration import expected_calibration_error
    from medassist.evaluate.plots import plot_reliability

    task = source.task
    labels = {s: source.splits[s].labels for s in ("val", "test")}
    temperature = fit_temperature(var.logits["val"], labels["val"], task)
    raw = source.thresholds or 0.5
    threshold = threshold_after_temperature(raw, temperature) if task == "multi-label" else raw

    def probs(split: str, t: float) -> np.ndarray:
        return probabilities(var.logits[split] / t, task)

    def as_classes(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Multi-label: every (report, finding) pair as a two-class case, so ECE and reliability read it."""
        if task == "multi-class":
            return y.reshape(-1), p
        flat = p.reshape(-1)
        return y.reshape(-1).astype(np.int64), np.stack([1.0 - flat, flat], axis=1)

    conf_val, wrong_val = confidence_and_error(probs("val", temperature), labels["val"], task, threshold)
    min_conf = choose_abstention(conf_val, wrong_val, cfg.target_error)
    conf, wrong = confidence_and_error(probs("test", temperature), labels["test"], task, threshold)
    ece = {}
    for when, t in (("before", 1.0), ("after", temperature)):
        y, p = as_classes(labels["test"], probs("test", t))
        ece[when] = expected_calibration_error(y, p)
        plot_reliability(y, p, run.figure(f"reliability_{when}"))
    curves = []
    for split, (c, w) in {"val": (conf_val, wrong_val), "test": (conf, wrong)}.items():
        curves.append(pd.DataFrame(risk_coverage(c, w)).assign(split=split))
    curve = pd.concat(curves, ignore_index=True)
    run.write_table("risk_coverage", curve)
    _plot_risk_coverage(curve, cfg.target_error, run.figure("risk_coverage"))
    test = selective_summary(conf, wrong, min_conf, n_boot=cfg.n_boot, seed=cfg.seed)
    val = selective_summary(conf_val, wrong_val, min_conf, n_boot=1, seed=cfg.seed)
    per_finding = _per_finding(run, cfg, source, {s: probs(s, temperature) for s in ("val", "test")}, threshold)
    return {
        "temperature": temperature,
        "ece_test_before": ece["before"],
        "ece_test_after": ece["after"],
        "ece_unit": "top-label" if task == "multi-class" else "every (report, finding) pair",
        "min_confidence": min_conf,
        "target_error": cfg.target_error,
        "val_coverage": val["coverage"],
        "val_accepted_error": val["accepted_error"],
        "val_error_without_abstention": val["error_without_abstention"],
        "val_n": val["n"],
        "test": test,
        "per_finding": per_finding,
    }, threshold


def _per_finding(
    run: Run, cfg: DeployConfig, source: Source, probs: dict[str, np.ndarray], threshold: Any
) -> dict[str, Any]:
    """The bundle's abstention rule, per finding (multi-label) or per class (multi-class), chosen on the
    temperature-scaled validation probabilities; measured on validation and on test (table ``per_finding``)."""
    from medassist.deploy.abstention import choose_class_thresholds, choose_label_bands, selective_report

    labels, task = list(source.labels), source.task
    y = {s: source.splits[s].labels for s in ("val", "test")}
    targets = {"target_miss": cfg.target_miss, "target_false": cfg.target_false, "min_positives": cfg.min_positives}
    if task == "multi-label":
        rule = choose_label_bands(probs["val"], y["val"], labels, threshold, **targets)
    else:
        rule = choose_class_thresholds(probs["val"], y["val"], labels, **targets)
    measured = {}
    for split in ("val", "test"):
        boots = cfg.n_boot if split == "test" else 1  # validation chose the rule: its point values are what matter
        measured[split] = selective_report(
            probs[split], y[split], task, labels, threshold, rule, n_boot=boots, seed=cfg.seed
        )
    rows = []
    for split, m in measured.items():
        for row in m["findings"]:
            flat = {k: v for k, v in row.items() if not k.endswith("_ci95")}
            for k in ("coverage", "miss", "false"):
                flat[f"{k}_ci_low"], flat[f"{k}_ci_high"] = row[f"{k}_ci95"]
            rows.append({"split": split, **flat})
    run.write_table("per_finding", pd.DataFrame(rows))
    return {"rule": rule, **measured}


def _plot_risk_coverage(curve: pd.DataFrame, target: float, path: Path) -> Path:
    """The error of accepted cases against the share accepted, validation and test, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    for split, df in curve.groupby("split", sort=False):
        ax.step(df.coverage, df.risk, where="post", label=split)
    ax.axhline(target, color="grey", linestyle="--", label=f"target error {target:.0%}")
    ax.set_xlabel("coverage (share of cases answered)")
    ax.set_ylabel("error of answered cases")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(curve.risk.max()) * 1.05))
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
