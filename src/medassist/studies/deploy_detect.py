"""The deploy study of a detection run: the detector's network exported to ONNX (its classification and box maps
per pyramid level, dynamic height and width) with parity checked, static int8 (QDQ, calibrated on training
images), and the benchmark: size, batch-1 latency on a whole image (post-processing included), validation and test
mAP@0.5 and the paired test drop with its interval. The variant chosen is the fastest within ``--max-map-drop`` of
fp32 on validation.

The post-processing (anchors, box decoding, score threshold, class-wise NMS) stays MONAI's
(:func:`medassist.train.detection.detections_from_heads`): a deployed network's maps go through the same step as
the PyTorch detector's, so the variants differ only in the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch import nn

from medassist.config import from_dict, to_dict
from medassist.deploy.config import DeployConfig
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.utils.steps import step

PARITY_TOLERANCE = 1e-3  # the largest difference of any map value between PyTorch and the fp32 ONNX graph
PYTORCH, ORT_FP32, ORT_INT8 = "fp32 (PyTorch)", "fp32 (ONNX Runtime)", "int8 static (ONNX Runtime)"


class HeadMaps(nn.Module):
    """A detector's network as one ONNX graph: images in [0, 1] -> the classification maps of every level, then the
    box maps of every level."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.network, self.cls_key, self.box_key = detector.network, detector.cls_key, detector.box_reg_key

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(images)
        return (*out[self.cls_key], *out[self.box_key])


def load_detect_run(run_dir: Path, data_dir: str = "") -> tuple[nn.Module, dict[str, Any], dict[str, Any], Any]:
    """The chosen detector of a finished detection run (eval mode), its description, its splits and the run's
    configuration."""
    import yaml

    from medassist.studies.detect import build_detector, load_detect_data
    from medassist.studies.detect_config import DetectStudyConfig

    meta_path = run_dir / "models" / "model.json"
    if not meta_path.is_file():
        raise MedAssistError(f"{run_dir} has no models/model.json: is it a finished `medassist detect` run?")
    meta = json.loads(meta_path.read_text())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = from_dict(DetectStudyConfig, {**saved, **({"data_dir": data_dir} if data_dir else {})})
    model = build_detector(
        cfg, width=meta["width"], pretrained=False, num_classes=meta["num_classes"], channels=meta["in_channels"]
    )
    model.load_state_dict(load_file(str(run_dir / "models" / "model.safetensors")))
    return model.eval(), meta, load_detect_data(cfg), cfg


def _padded(detector: nn.Module, image: np.ndarray) -> tuple[torch.Tensor, list[Any]]:
    from monai.apps.detection.utils.detector_utils import preprocess_images

    x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return preprocess_images([x], detector.spatial_dims, detector.size_divisible)


def ort_predict(session: Any, detector: nn.Module, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Detections of an ONNX Runtime session of :class:`HeadMaps`, one image at a time, post-processed by MONAI."""
    from medassist.train.detection import detections_from_heads

    out = []
    for image in images:
        padded, sizes = _padded(detector, image)
        maps = [torch.from_numpy(m) for m in session.run(None, {"images": padded.numpy()})]
        half = len(maps) // 2
        head = {detector.cls_key: maps[:half], detector.box_reg_key: maps[half:]}
        out += detections_from_heads(detector, padded, sizes, head)
    return out


def run_detect_deploy(cfg: DeployConfig) -> Path:
    """Export, quantize and measure a detection run's detector; return the deploy run folder."""
    import onnxruntime as ort

    from medassist.deploy.bundle import write_bundle
    from medassist.deploy.export import export_onnx
    from medassist.deploy.measure import file_mb, summarise_times, time_rounds
    from medassist.deploy.quantize import calibration_sample, quantize_static_int8
    from medassist.evaluate.detection import evaluate_set, paired_map_difference
    from medassist.train.detection import predict_boxes

    source = Path(cfg.run)
    model, meta, sets, _ = load_detect_run(source, cfg.data_dir)
    data = json.loads((source / "data.json").read_text())
    run = Run.create(cfg.out, f"deploy-detect-{data['name']}", to_dict(cfg), kind="deploy")
    with run:
        torch.set_num_threads(cfg.threads)
        step("deploy", "export to ONNX and quantize to int8", show=cfg.progress)
        example, _ = _padded(model, sets["test"].images[0])
        levels = len(model.network(example)[model.cls_key])
        names = [f"cls_{k}" for k in range(levels)] + [f"box_{k}" for k in range(levels)]
        fp32 = export_onnx(HeadMaps(model), (example,), run.path("models/fp32.onnx"), spatial=True, outputs=names)
        train = sets["train"]
        shapes = {im.shape for im in train.images}
        calib_pool = (
            train.images if len(shapes) == 1 else [im for im in train.images if im.shape == train.images[0].shape]
        )
        calib = calibration_sample(np.stack(calib_pool), cfg.calibration_images, cfg.seed)
        calib = np.stack([_padded(model, c)[0][0].mul(255).round().byte().numpy() for c in calib])
        int8 = quantize_static_int8(
            fp32, run.path("models/int8.onnx"), calib, batch_size=1, prepare=lambda b: b.astype(np.float32) / 255.0
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = cfg.threads, 3
        sessions = {
            n: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for n, p in ((ORT_FP32, fp32), (ORT_INT8, int8))
        }
        with torch.no_grad():
            want = HeadMaps(model)(example)
        got = sessions[ORT_FP32].run(None, {"images": example.numpy()})
        parity = max(float(np.abs(w.numpy() - g).max()) for w, g in zip(want, got, strict=True))
        if parity > PARITY_TOLERANCE:
            raise MedAssistError(
                f"the ONNX export of {source} differs from PyTorch by {parity:.2e} (tolerance {PARITY_TOLERANCE:g}) on "
                "a test image; the exported graph is not the trained network"
            )
        state = run.path("models/fp32.pt")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, state)
        files = {PYTORCH: state, ORT_FP32: fp32, ORT_INT8: int8}

        def predict(name: str, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            return predict_boxes(model, images) if name == PYTORCH else ort_predict(sessions[name], model, images)

        step("deploy", f"measuring {len(files)} variants (size, latency, validation and test mAP)", show=cfg.progress)
        one = [sets["test"].images[0]]
        fns = {n: (lambda n=n: predict(n, one)) for n in files}
        times = time_rounds(fns, warmup=max(1, cfg.warmup // 4), rounds=cfg.rounds, per_round=max(1, cfg.repeats // 8))
        rows, evs = [], {}
        for name, path in files.items():
            row: dict[str, Any] = {"variant": name, "size_mb": file_mb(path)}
            row.update({f"latency_b1_{k}": v for k, v in summarise_times(times[name]).items()})
            for split in ("val", "test"):
                evs[(name, split)], ap = evaluate_set(sets[split], predict(name, sets[split].images))
                row[f"{split}_map50"] = float(ap["map50"] or 0.0)
            rows.append(row)
        for row in rows:
            drop = paired_map_difference(
                evs[(PYTORCH, "test")],
                evs[(row["variant"], "test")],
                sets["test"].classes,
                n_boot=cfg.n_boot,
                seed=cfg.seed,
            )
            row.update({f"map50_drop_{k}": v for k, v in drop.items()})
            row["size_ratio"] = rows[0]["size_mb"] / row["size_mb"]
            row["speedup_b1"] = rows[0]["latency_b1_median_ms"] / row["latency_b1_median_ms"]
            row["val_map50_drop"] = rows[0]["val_map50"] - row["val_map50"]
        table = pd.DataFrame(rows)
        run.write_table("benchmark", table)
        ok = table[(table.variant != PYTORCH) & (table.val_map50_drop <= cfg.max_map_drop)]
        chosen = str(ok.sort_values("latency_b1_median_ms").iloc[0].variant) if len(ok) else ORT_FP32
        source_metrics = json.loads((source / "metrics.json").read_text())
        thresholds = source_metrics["test"]["count_thresholds"]  # chosen on validation by the study
        onnx_file = {PYTORCH: fp32, ORT_FP32: fp32, ORT_INT8: int8}[chosen]
        pick = table.set_index("variant").loc[chosen]
        bundle = write_bundle(
            run.path("bundle/x").parent,
            model_path=onnx_file,
            kind="detection",
            task="detection",
            labels=list(meta["classes"]),
            threshold=[float(thresholds[c]) for c in meta["classes"]],
            preprocessing={
                "image_size": int(meta["image_size"]),
                "channels": int(meta["in_channels"]),
                "scale": 1 / 255,
                "multiple": int(max(model.size_divisible)),
                "detector": {
                    "model": meta["model"],
                    "backbone": meta["backbone"],
                    "width": int(meta["width"]),
                    "anchor_sizes": [int(a) for a in meta["anchor_sizes"]],
                },
            },
            metrics={"test_map50": float(pick.test_map50), "val_map50": float(pick.val_map50)},
            info={"variant": chosen, "source_run": str(source), "model": meta["model"], "dataset": data["name"]},
            name=f"{data['name']} {meta['model']} ({chosen})",
        )
        run.write_metrics(
            {
                "kind": "detect",
                "dataset": data["name"],
                "model": meta["model"],
                "chosen": chosen,
                "source_run": str(source),
                "bundle": str(bundle),
                "variants": rows,
                "selection": {"max_map_drop": cfg.max_map_drop},
                "threads": cfg.threads,
                "parity_max_abs_diff": parity,
            }
        )
        from medassist.report.deploy_detect import write_detect_deploy_report

        write_detect_deploy_report(run.dir)
    return run.dir
