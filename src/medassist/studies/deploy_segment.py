"""The deploy study of a segmentation run: ONNX export with parity, static int8 (QDQ), the same benchmark (size,
latency at batch 1 on a whole image, test Dice with its interval and its paired drop), the variant chosen on
validation Dice, and the verified bundle (kind ``segmentation``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from medassist.config import from_dict, to_dict
from medassist.deploy.config import DeployConfig
from medassist.errors import MedAssistError
from medassist.evaluate.segmentation import mean_with_ci, per_image
from medassist.run import Run

PAD = 16  # the networks halve four times
PRUNED = "pruned + fine-tuned (ONNX Runtime)"
PRUNED_INT8 = "pruned + fine-tuned int8 static (ONNX Runtime)"


def _pruned(model: torch.nn.Module, meta: dict[str, Any], sets: dict[str, Any], seg_cfg: Any, cfg: DeployConfig) -> Any:
    """A copy of the network with ``cfg.channel_ratio`` of its channels removed (torch-pruning), fine-tuned by the
    engine on the run's training patches for ``cfg.finetune.epochs`` epochs, the epoch chosen on validation Dice."""
    import copy
    import dataclasses

    from medassist.deploy.prune import prune_channels
    from medassist.studies.segment import dice_validator, patch_data
    from medassist.train import fit
    from medassist.train.patches import SegmentationStep

    pruned = copy.deepcopy(model)
    prune_channels(pruned, torch.zeros(1, meta["in_channels"], 64, 64), cfg.channel_ratio)
    tcfg = dataclasses.replace(seg_cfg.train, epochs=cfg.finetune.epochs, lr=seg_cfg.train.lr / 4)
    fit(
        pruned,
        patch_data(sets["train"], seg_cfg, tcfg),
        patch_data(sets["val"], seg_cfg, tcfg),
        tcfg,
        num_classes=meta["num_classes"],
        progress=cfg.progress,
        desc="pruned fine-tune",
        step_fn=SegmentationStep(meta["num_classes"]),
        validate=dice_validator(sets["val"]),
    )
    return pruned.eval().cpu()  # fine-tuned on the run's device; exported and timed on the CPU


def load_segment_run(run_dir: Path, data_dir: str = "") -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], Any]:
    """The chosen network of a finished segmentation run (eval mode), its description, its data splits and the
    run's configuration."""
    from medassist.models import create_model
    from medassist.studies.segment import load_segment_data
    from medassist.studies.segment_config import SegmentStudyConfig

    meta_path = run_dir / "models" / "model.json"
    if not meta_path.is_file():
        raise MedAssistError(f"{run_dir} has no models/model.json: is it a finished `medassist segment` run?")
    meta = json.loads(meta_path.read_text())
    model = create_model(
        meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"], width=meta["width"]
    )
    model.load_state_dict(load_file(str(run_dir / "models" / "model.safetensors")))
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = from_dict(SegmentStudyConfig, {**saved, **({"data_dir": data_dir} if data_dir else {})})
    return model.eval(), meta, load_segment_data(cfg), cfg


def _ort_probs(session: Any, images: np.ndarray) -> np.ndarray:
    from medassist.models.segmentation import pad_to_multiple, unpad
    from medassist.train.data import to_tensor

    out = []
    for i in range(len(images)):
        x, size = pad_to_multiple(to_tensor(images[i : i + 1]))
        logits = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
        out.append(torch.softmax(unpad(logits, size), dim=1).numpy())
    return np.concatenate(out)


def _paired_drop(ref: list[float], cand: list[float], *, n_boot: int, seed: int) -> dict[str, float]:
    """Mean Dice of the reference minus the candidate, with a 95% interval from resampling images (paired)."""
    d = np.asarray(ref) - np.asarray(cand)
    return {f"dice_drop_{k}": v for k, v in mean_with_ci(d, n_boot=n_boot, seed=seed).items() if k != "n"}


def run_segment_deploy(cfg: DeployConfig) -> Path:
    """Build, measure and bundle the variants of a segmentation run; return the deploy run folder."""
    import onnxruntime as ort

    from medassist.deploy.bundle import write_bundle
    from medassist.deploy.export import export_onnx
    from medassist.deploy.measure import file_mb, summarise_times, time_rounds
    from medassist.deploy.quantize import quantize_static_int8
    from medassist.evaluate.segmentation import predict_probabilities
    from medassist.models.segmentation import pad_to_multiple
    from medassist.train.data import to_tensor

    source = Path(cfg.run)
    model, meta, sets, seg_cfg = load_segment_run(source, cfg.data_dir)
    data = json.loads((source / "data.json").read_text())
    run = Run.create(cfg.out, f"deploy-segment-{data['name']}", to_dict(cfg), kind="deploy")
    with run:
        torch.set_num_threads(cfg.threads)
        example = torch.zeros(1, meta["in_channels"], *(-(-v // PAD) * PAD for v in data["image_shape"]))
        fp32 = export_onnx(model, (example,), run.path("models/fp32.onnx"), spatial=True)
        calib = sets["train"].images[: max(1, min(len(sets["train"]), cfg.calibration_images))]
        calib = np.stack([pad_to_multiple(torch.from_numpy(c[None].astype(np.float32)))[0][0].numpy() for c in calib])
        int8 = quantize_static_int8(fp32, run.path("models/int8.onnx"), calib.astype(np.uint8), batch_size=1)
        pruned = _pruned(model, meta, sets, seg_cfg, cfg)
        pruned_fp32 = export_onnx(pruned, (example,), run.path("models/pruned.onnx"), spatial=True)
        pruned_int8 = quantize_static_int8(
            pruned_fp32, run.path("models/pruned_int8.onnx"), calib.astype(np.uint8), batch_size=1
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = cfg.threads, 3
        sessions = {
            n: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for n, p in (
                ("fp32 (ONNX Runtime)", fp32),
                ("int8 static (ONNX Runtime)", int8),
                (PRUNED, pruned_fp32),
                (PRUNED_INT8, pruned_int8),
            )
        }
        state = run.path("models/fp32.pt")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, state)
        files = {
            "fp32 (PyTorch)": [state],
            "fp32 (ONNX Runtime)": [fp32],
            "int8 static (ONNX Runtime)": [int8],
            PRUNED: [pruned_fp32],
            PRUNED_INT8: [pruned_int8],
        }

        def probs(name: str, images: np.ndarray) -> np.ndarray:
            if name == "fp32 (PyTorch)":
                return predict_probabilities(model, images)
            return _ort_probs(sessions[name], images)

        one = pad_to_multiple(to_tensor(sets["test"].images[:1]))[0]
        with torch.no_grad():
            fns = {"fp32 (PyTorch)": lambda: model(one)}
            for n, sess in sessions.items():
                fns[n] = lambda s=sess: s.run(["logits"], {"images": one.numpy()})
            times = time_rounds(fns, warmup=cfg.warmup // 4 or 1, rounds=cfg.rounds, per_round=max(1, cfg.repeats // 8))
        rows, per_variant, reference = [], {}, {}
        for name in files:
            row: dict[str, Any] = {"variant": name, "size_mb": file_mb(*files[name])}
            row.update({f"latency_b1_{k}": v for k, v in summarise_times(times[name]).items()})
            for split in ("val", "test"):
                d = sets[split]
                p = probs(name, d.images)
                dice = [r["dice"] for r in per_image(p, d.masks, d.fov, d.names)]
                per_variant[(name, split)] = dice
                row[f"{split}_dice"] = float(np.nanmean(dice))
                if split == "test":
                    reference.setdefault("probs", p)
                    row["test_max_abs_prob_diff"] = float(np.abs(p - reference["probs"]).max())
            rows.append(row)
        base = "fp32 (PyTorch)"
        for row in rows:
            row.update(
                _paired_drop(
                    per_variant[(base, "test")], per_variant[(row["variant"], "test")], n_boot=cfg.n_boot, seed=cfg.seed
                )
            )
            row["size_ratio"] = rows[0]["size_mb"] / row["size_mb"]
            row["speedup_b1"] = rows[0]["latency_b1_median_ms"] / row["latency_b1_median_ms"]
            row["val_dice_drop"] = rows[0]["val_dice"] - row["val_dice"]
        table = pd.DataFrame(rows)
        run.write_table("benchmark", table)
        ok = table[(table.variant != base) & (table.val_dice_drop <= cfg.max_dice_drop)]
        chosen = str(ok.sort_values("latency_b1_median_ms").iloc[0].variant) if len(ok) else "fp32 (ONNX Runtime)"
        onnx_file = {name: paths[0] for name, paths in files.items()}[chosen]
        labels = ["background", *(f"class {k}" for k in range(1, meta["num_classes"]))]
        if meta["num_classes"] == 2:  # DRIVE's masks are its retinal vessels: named so (and coded in DICOM and FHIR)
            labels = ["background", "vessel" if str(data["name"]).lower() == "drive" else "foreground"]
        pick = table.set_index("variant").loc[chosen]
        bundle = write_bundle(
            run.path("bundle/x").parent,
            model_path=onnx_file,
            kind="segmentation",
            task="segmentation",
            labels=labels,
            preprocessing={
                "image_shape": data["image_shape"],
                "channels": meta["in_channels"],
                "scale": 1 / 255,
                "mean": 0.5,
                "std": 0.5,
                "multiple": PAD,
            },
            metrics={"test_dice": float(pick.test_dice), "val_dice": float(pick.val_dice)},
            info={"variant": chosen, "source_run": str(source), "model": meta["model"], "dataset": data["name"]},
            name=f"{data['name']} {meta['model']} ({chosen})",
        )
        run.write_metrics(
            {
                "kind": "segment",
                "dataset": data["name"],
                "model": meta["model"],
                "chosen": chosen,
                "source_run": str(source),
                "bundle": str(bundle),
                "variants": rows,
                "selection": {"max_dice_drop": cfg.max_dice_drop},
                "threads": cfg.threads,
            }
        )
        from medassist.report.deploy_segment import write_segment_deploy_report

        write_segment_deploy_report(run.dir)
    return run.dir
