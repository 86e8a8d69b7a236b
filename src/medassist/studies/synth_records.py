"""Synthetic patient records: SDV synthesizers (GaussianCopula, TVAE, CTGAN) on one row per PadChest study (age,
sex, projection, the most frequent findings as 0/1) or on a user's CSV; SDMetrics' quality report; DCR against
held-out records; TSTR on predicting a finding from the other columns; synthetic rows shown beside real ones."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.config import to_dict
from medassist.errors import DataError, MedAssistError
from medassist.run import Run
from medassist.studies.synth_config import RECORD_GENERATORS, SynthStudyConfig
from medassist.synth.common import PROVENANCE, SYNTHETIC_SUFFIX
from medassist.utils.io import atomic_write_text

SYNTHETIC_COLUMN = "synthetic"


def padchest_records(cfg: SynthStudyConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str], str, dict[str, Any]]:
    """One row per PadChest study, split by patient exactly as the text study splits the reports."""
    from medassist.data.padchest import PADCHEST_FILE, load_padchest
    from medassist.data.report_common import resolve_file

    data = load_padchest(seed=cfg.seed, top_k=cfg.records.findings)
    source = resolve_file(None, PADCHEST_FILE)
    proj = pd.read_csv(source, usecols=["ReportID", "Projection"], dtype={"Projection": str})
    proj = proj.drop_duplicates("ReportID")  # the first row of a report, as load_padchest keeps
    proj = proj.set_index("ReportID")["Projection"]
    frames, dropped = {}, {}
    for name, s in data.splits.items():
        df = pd.DataFrame(
            {
                "age": s.metadata["age"].to_numpy(),
                "sex": s.metadata["sex"].to_numpy(),
                "projection": s.metadata["report_id"].map(proj).to_numpy(),
            }
        )
        for j, label in enumerate(data.label_names):
            df[label] = s.labels[:, j].astype(int)
        keep = df[["age", "sex", "projection"]].notna().all(axis=1) & df["sex"].isin(["M", "F"])
        dropped[name] = int((~keep).sum())
        frames[name] = df[keep].reset_index(drop=True)
    kinds = {"age": "numerical", "sex": "categorical", "projection": "categorical"}
    kinds.update({label: "categorical" for label in data.label_names})
    target = cfg.records.target or data.label_names[0]
    if target not in kinds:
        raise DataError(f"records.target '{target}' is not a PadChest record column; choose one of {', '.join(kinds)}")
    info = {"source": "PadChest (one row per study)", "findings": data.label_names, "dropped_incomplete": dropped}
    return frames, kinds, target, info


HEART_COLUMNS = {
    "site": "categorical",
    "age": "numerical",
    "sex": "categorical",
    "cp": "categorical",
    "trestbps": "numerical",
    "fbs": "categorical",
    "restecg": "categorical",
    "thalach": "numerical",
    "exang": "categorical",
    "oldpeak": "numerical",
    "disease": "categorical",
}
"""The heart-disease columns modelled: cholesterol, the ST slope, the vessels and thalassemia are left out (missing
for every Swiss patient, and for most outside Cleveland respectively)."""


def heart_disease_records(
    cfg: SynthStudyConfig,
) -> tuple[dict[str, pd.DataFrame], dict[str, str], str, dict[str, Any]]:
    """UCI heart disease, one row per patient with its site; complete rows split 70/15/15 (seeded, by outcome)."""
    from medassist.data.heart_disease import load_heart_disease

    table = load_heart_disease(cfg.data_dir or None, progress=cfg.progress)
    table["disease"] = (table["num"] > 0).astype(int)
    df = table[list(HEART_COLUMNS)]
    complete = df.dropna().reset_index(drop=True)
    rng = np.random.default_rng(cfg.seed)
    split = np.full(len(complete), "train", dtype=object)
    for value in (0, 1):
        rows = rng.permutation(np.flatnonzero(complete["disease"].to_numpy() == value))
        n = len(rows)
        split[rows[int(0.7 * n) : int(0.85 * n)]] = "val"
        split[rows[int(0.85 * n) :]] = "test"
    frames = {s: complete[split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    target = cfg.records.target or "disease"
    if target not in HEART_COLUMNS:
        raise DataError(
            f"records.target '{target}' is not a heart-disease column; choose one of {', '.join(HEART_COLUMNS)}"
        )
    info = {
        "source": "UCI Heart Disease (four hospitals, one row per patient)",
        "dropped_incomplete": int(len(df) - len(complete)),
    }
    return frames, dict(HEART_COLUMNS), target, info


def csv_records(cfg: SynthStudyConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str], str, dict[str, Any]]:
    """A user's CSV of records: numerical and categorical columns, split by its split column or 70/15/15."""
    rc = cfg.records
    path = Path(rc.path)
    if not path.is_file():
        raise DataError(f"records file not found: {path} (give a CSV with one row per record)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc})") from None
    if rc.split_column and rc.split_column not in df.columns:
        raise DataError(f"{path}: no split column '{rc.split_column}'; columns: {', '.join(map(str, df.columns))}")
    wanted = rc.columns or [c for c in df.columns if c != rc.split_column]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataError(f"{path}: no column '{missing[0]}'; columns: {', '.join(map(str, df.columns))}")
    kinds: dict[str, str] = {}
    for c in wanted:
        col = df[c].dropna()
        n_unique = col.nunique()
        if n_unique < 2:
            continue  # a constant column carries nothing to model
        if pd.api.types.is_numeric_dtype(col) and n_unique > 10:
            kinds[c] = "numerical"
        elif n_unique <= max(20, len(col) // 20) and n_unique < len(col):
            kinds[c] = "categorical"  # ids and free text (a value per row) are not modelled
    if len(kinds) < 2:
        raise DataError(
            f"{path}: no usable columns: a record generator needs at least 2 columns that are numeric or "
            f"categorical with repeated values (ids, free text and constant columns are skipped; found "
            f"{', '.join(kinds) or 'none'}); name them with records.columns"
        )
    target = rc.target or next((c for c, k in kinds.items() if k == "categorical" and df[c].nunique() == 2), "")
    if not target or target not in kinds:
        raise DataError(
            f"{path}: give records.target, a categorical column with two values for TSTR "
            f"(usable columns: {', '.join(kinds)})"
        )
    df = df[list(kinds) + ([rc.split_column] if rc.split_column else [])].dropna().reset_index(drop=True)
    if rc.split_column:
        parts = {
            s: df[df[rc.split_column].astype(str) == s].drop(columns=rc.split_column) for s in ("train", "val", "test")
        }
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(df))
        a, b = int(0.7 * len(df)), int(0.85 * len(df))
        parts = {"train": df.iloc[order[:a]], "val": df.iloc[order[a:b]], "test": df.iloc[order[b:]]}
    for s, part in parts.items():
        if len(part) < 10:
            raise DataError(f"{path}: the '{s}' split has {len(part)} complete records; it needs at least 10")
    return {s: p.reset_index(drop=True) for s, p in parts.items()}, kinds, target, {"source": str(path)}


def encode(frames: list[pd.DataFrame], kinds: dict[str, str], reference: pd.DataFrame) -> list[np.ndarray]:
    """Numerical columns scaled to [0, 1] by the reference's range, categorical ones one-hot (each category 1 apart
    by L1, like one numeric unit), so that every column weighs about the same in a distance."""
    cols = list(kinds)
    out = []
    for df in frames:
        parts = []
        for c in cols:
            if kinds[c] == "numerical":
                lo, hi = float(reference[c].min()), float(reference[c].max())
                parts.append(((df[c].astype(float) - lo) / max(hi - lo, 1e-12)).to_numpy()[:, None])
            else:
                cats = sorted(reference[c].astype(str).unique())
                v = df[c].astype(str).to_numpy()
                parts.append(0.5 * np.stack([v == k for k in cats], 1).astype(float))
        out.append(np.concatenate(parts, 1))
    return out


def _dcr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L1 distance from each row of ``a`` to its nearest row of ``b``."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=1, metric="manhattan").fit(b).kneighbors(a)[0][:, 0]


def _tstr(train: pd.DataFrame, test: pd.DataFrame, kinds: dict[str, str], target: str, cfg: SynthStudyConfig) -> dict:
    """Logistic regression predicting ``target`` (its first-sorted value's complement as positive) from the other
    columns, tested on real records: AUC and accuracy with 95% bootstrap intervals."""
    from sklearn.linear_model import LogisticRegression

    from medassist.evaluate.metrics import headline_metrics_with_ci

    features = {c: k for c, k in kinds.items() if c != target}
    classes = sorted(test[target].astype(str).unique())
    positive = classes[-1]
    ytr = (train[target].astype(str) == positive).to_numpy().astype(int)
    yte = (test[target].astype(str) == positive).to_numpy().astype(int)
    if ytr.min() == ytr.max():
        return {"error": f"the training records hold one value of {target}"}
    xtr, xte = encode([train, test], features, pd.concat([train, test]))
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(xtr, ytr)
    p = clf.predict_proba(xte)
    return {
        "positive": positive,
        "probs": p,
        "test": headline_metrics_with_ci(yte, p, n_boot=cfg.n_boot, seed=cfg.seed),
    }


def _synthesizer(name: str, metadata: Any, cfg: SynthStudyConfig) -> Any:
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    if name == "gaussian_copula":
        return GaussianCopulaSynthesizer(metadata)
    if name == "tvae":
        return TVAESynthesizer(metadata, epochs=cfg.records.epochs, enable_gpu=False)
    return CTGANSynthesizer(metadata, epochs=cfg.records.epochs, enable_gpu=False)


def run_records_study(cfg: SynthStudyConfig) -> Path:
    """The patient-record half of the study: every SDV synthesizer in ``records.generators``, measured."""
    import torch
    from sdmetrics.reports.single_table import QualityReport
    from sdv.metadata import Metadata

    from medassist.evaluate.metrics import auc, paired_bootstrap_difference
    from medassist.synth.privacy import auc_with_ci

    t0 = time.perf_counter()
    unknown = sorted(set(cfg.records.generators) - set(RECORD_GENERATORS))
    if unknown:
        raise MedAssistError(f"unknown record generator '{unknown[0]}'; choose from {', '.join(RECORD_GENERATORS)}")
    if cfg.data == "records" and not cfg.records.path:
        raise MedAssistError("data 'records' needs records.path, a CSV of records (or use --data padchest-records)")
    loader = {"records": csv_records, "heart_disease": heart_disease_records}.get(cfg.data, padchest_records)
    frames, kinds, target, info = loader(cfg)
    rng = np.random.default_rng(cfg.seed)
    full_sizes = {s: len(f) for s, f in frames.items()}
    if cfg.records.max_train and len(frames["train"]) > cfg.records.max_train:
        frames["train"] = frames["train"].iloc[
            np.sort(rng.choice(len(frames["train"]), cfg.records.max_train, replace=False))
        ]
    for s in ("val", "test"):
        if cfg.records.max_eval and len(frames[s]) > cfg.records.max_eval:
            frames[s] = frames[s].iloc[np.sort(rng.choice(len(frames[s]), cfg.records.max_eval, replace=False))]
    frames = {s: f.reset_index(drop=True) for s, f in frames.items()}
    for c, k in kinds.items():
        if k == "categorical":
            for f in frames.values():
                f[c] = f[c].astype(str)
    train, test = frames["train"], frames["test"]
    name = cfg.data if cfg.data in ("padchest-records", "heart_disease") else Path(cfg.records.path).stem
    run = Run.create(cfg.out, f"synth-{name}", to_dict(cfg), kind="synth_records", resume=cfg.resume or None)
    with run:
        table_meta = {"columns": {c: {"sdtype": k} for c, k in kinds.items()}}
        metadata = Metadata.load_from_dict({"tables": {"records": table_meta}})
        torch.manual_seed(cfg.seed)
        real_tstr = _tstr(train, test, kinds, target, cfg)
        x_train, x_test = encode([train, test], kinds, train)
        d_hold = _dcr(x_test, x_train)
        p5 = float(np.quantile(d_hold, 0.05))
        n_mia = min(len(test), len(train))
        members = train.iloc[np.sort(rng.choice(len(train), n_mia, replace=False))]
        (x_members,) = encode([members], kinds, train)
        metrics: dict[str, Any] = {
            "kind": "records",
            "data": {
                "name": name,
                **info,
                "columns": kinds,
                "target": target,
                "full_sizes": full_sizes,
                "sizes": {s: len(f) for s, f in frames.items()},
            },
            "trtr": {k: v for k, v in real_tstr.items() if k != "probs"},
            "holdout": {"dcr_median": float(np.median(d_hold)), "p5": p5, "exact_copies": float((d_hold == 0).mean())},
            "generators": {},
        }
        rows = []
        for g in cfg.records.generators:
            t1 = time.perf_counter()
            synth = _synthesizer(g, metadata, cfg)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                synth.fit({"records": train})  # SDV 2 takes a table name -> frame mapping
                fit_time = time.perf_counter() - t1
                fake = synth.sample(num_rows=len(train))
            fake = (fake["records"] if isinstance(fake, dict) else fake).reset_index(drop=True)
            for c, k in kinds.items():
                if k == "categorical":
                    fake[c] = fake[c].astype(str)
            report = QualityReport()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report.generate(train, fake, table_meta, verbose=False)
            props = report.get_properties()
            (x_fake,) = encode([fake], kinds, train)
            d_syn = _dcr(x_fake, x_train)
            attack = auc_with_ci(-_dcr(x_members, x_fake), -_dcr(x_test, x_fake), n_boot=cfg.n_boot, seed=cfg.seed)
            t = _tstr(fake, test, kinds, target, cfg)
            r: dict[str, Any] = {
                "fit_time": fit_time,
                "quality_score": float(report.get_score()),
                "properties": {str(p): float(s) for p, s in zip(props["Property"], props["Score"], strict=True)},
                "dcr_median": float(np.median(d_syn)),
                "share_below_holdout_p5": float((d_syn < p5).mean()),
                "exact_copies": float((d_syn == 0).mean()),
                "attack_distance": attack,
            }
            if "test" in t and "test" in real_tstr:
                r["tstr"] = t["test"]
                yte = (test[target].astype(str) == t["positive"]).to_numpy().astype(int)
                r["tstr_minus_trtr_auc"] = list(
                    paired_bootstrap_difference(
                        yte, t["probs"], real_tstr["probs"], auc, n_boot=cfg.n_boot, seed=cfg.seed
                    )
                )
            metrics["generators"][g] = r
            out = fake.assign(**{SYNTHETIC_COLUMN: True})
            atomic_write_text(run.path(f"synthetic/{g}{SYNTHETIC_SUFFIX}.csv"), out.to_csv(index=False))
            rows.append(out.head(cfg.records.n_show).assign(source=f"{g} (synthetic)"))
            run.write_metrics({**metrics, "partial": True})
        shown = pd.concat(
            [train.head(cfg.records.n_show).assign(**{SYNTHETIC_COLUMN: False}, source="real (train)"), *rows]
        )
        run.write_table("records_side_by_side", shown[["source", SYNTHETIC_COLUMN, *kinds]])
        atomic_write_text(
            run.dir / PROVENANCE,
            "# SYNTHETIC DATA — not real patient records\n\nEvery file under `synthetic/` was generated by "
            "medassist's synthetic-data study (`medassist synth`) with SDV synthesizers fitted to the records named "
            f"in config.yaml; each row has `{SYNTHETIC_COLUMN}` = true and the file names end in `{SYNTHETIC_SUFFIX}`. "
            "They describe no real patient and must not be presented as real records or merged into real data "
            "without this mark.\n\n"
            + "\n".join(f"- `synthetic/{g}{SYNTHETIC_SUFFIX}.csv`" for g in cfg.records.generators)
            + "\n",
        )
        metrics["wall_time"] = time.perf_counter() - t0
        run.write_metrics(metrics)
        from medassist.report.synth import write_synth_report

        write_synth_report(run.dir)
    return run.dir
