"""The tabular study: from a table of patients to an audit in one command.

``medassist tabular --data heart_disease --target num>0`` (or a CSV with ``--target num>0`` naming one of its
columns) trains a tuned logistic regression and a gradient-boosted model (scikit-learn's
``HistGradientBoostingClassifier``) on the training split, chooses each one's settings and then the model on the
validation split, evaluates the chosen one on test with 95% bootstrap intervals, and saves the validation and test
predictions with the metadata (site, sex, age), so that ``medassist fairness --run`` audits it as it audits the
other studies.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medassist.config import RunOptions, option, to_dict
from medassist.errors import DataError, MedAssistError
from medassist.run import Run
from medassist.studies.predictions import write_predictions
from medassist.utils.steps import step

MODELS = ("logistic", "gradient_boosting")
SPLITS = ("train", "val", "test")
_TARGET = re.compile(r"^\s*([^<>=!]+?)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


@dataclass
class TabularConfig(RunOptions):
    """The tabular study: which table, which outcome, which models, where to write."""

    data: str = option("heart_disease", "heart_disease (UCI, four hospitals), or a CSV of one row per patient")
    target: str = option(
        "num>0", "the outcome: a 0/1 column, or a rule COLUMN>VALUE | >= | == | != | < | <= (e.g. num>0)"
    )
    features: list[str] = option(
        [], "columns the models read (default: every column but the target, the split and the groups' site)"
    )
    categorical: list[str] = option(
        [], "coded columns to one-hot encode (default: heart_disease's coded columns; a CSV's text columns)"
    )
    group_columns: list[str] = option(
        [], "columns saved beside the predictions for the audit (default: site, sex, age, race where present)"
    )
    split_column: str = option("", "a column of train/val/test (default: a seeded split, stratified by outcome)")
    val_fraction: float = option(0.2, "seeded split: the share of patients for validation")
    test_fraction: float = option(0.2, "seeded split: the share of patients for test")
    models: list[str] = option(list(MODELS), f"models compared: {', '.join(MODELS)}")
    logistic_C: list[float] = option([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "logistic regression: C values tried")
    boosting_learning_rate: list[float] = option([0.03, 0.1], "gradient boosting: learning rates tried")
    boosting_max_leaf_nodes: list[int] = option([7, 15, 31], "gradient boosting: leaves per tree tried")
    boosting_l2: list[float] = option([0.0, 1.0], "gradient boosting: L2 regularisation tried")
    n_boot: int = option(1000, "bootstrap resamples for the 95% intervals")
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    seed: int = option(0, "random seed (split, models, bootstrap)")


@dataclass
class Table:
    """A table ready to model: features, outcome, split and metadata, one row per patient."""

    name: str
    x: pd.DataFrame
    y: np.ndarray
    split: np.ndarray
    meta: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    target: str
    info: dict[str, Any]


def _stage(cfg: TabularConfig, text: str) -> None:
    step("tabular", text, show=cfg.progress)


def _raw(cfg: TabularConfig) -> tuple[str, pd.DataFrame, list[str]]:
    """The table's name, its rows and its default coded columns."""
    if cfg.data == "heart_disease":
        from medassist.data.heart_disease import CATEGORICAL, load_heart_disease

        return "heart_disease", load_heart_disease(cfg.data_dir or None, progress=cfg.progress), list(CATEGORICAL)
    path = Path(cfg.data)
    if not path.is_file():
        raise DataError(f"table {path} does not exist; give heart_disease or a CSV of one row per patient")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc})") from None
    text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    return path.stem, frame, text


def _columns(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns))


def outcome(frame: pd.DataFrame, target: str, where: str) -> tuple[np.ndarray, str, str]:
    """The 0/1 outcome of every row (NaN where the target is missing), its column and its description."""
    m = _TARGET.match(target)
    column = m.group(1) if m else target.strip()
    if column not in frame.columns:
        raise DataError(f"{where}: target column '{column}' is not in the table; its columns are: {_columns(frame)}")
    values = frame[column]
    if m:
        op, raw = m.group(2), m.group(3)
        ref: Any = raw
        if pd.api.types.is_numeric_dtype(values):
            try:
                ref = float(raw)
            except ValueError:
                raise DataError(f"{where}: target '{target}': '{column}' is numeric, '{raw}' is not") from None
        ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
        if op in ops and not pd.api.types.is_numeric_dtype(values):
            raise DataError(f"{where}: target '{target}': '{column}' is not numeric; use == or !=")
        compare = {**ops, "==": np.equal, "!=": np.not_equal}[op]
        y = np.where(values.isna(), np.nan, compare(values.to_numpy(), ref).astype(float))
        return y, column, target.strip()
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & ~numbers.isin([0, 1])
    if bad.any():
        raise DataError(
            f"{where}: target column '{column}' holds values other than 0 and 1 (e.g. {values[bad].iloc[0]!r}); "
            f"give a rule such as {column}>0 or {column}==yes"
        )
    return numbers.to_numpy(dtype=float), column, f"{column} = 1"


def _split(cfg: TabularConfig, frame: pd.DataFrame, strata: np.ndarray, where: str) -> np.ndarray:
    if cfg.split_column:
        if cfg.split_column not in frame.columns:
            raise DataError(
                f"{where}: split column '{cfg.split_column}' is not in the table; columns: {_columns(frame)}"
            )
        split = (
            frame[cfg.split_column].astype(str).str.strip().str.lower().replace({"valid": "val", "validation": "val"})
        )
        unknown = sorted(set(split) - set(SPLITS))
        if unknown:
            raise DataError(
                f"{where}: split column '{cfg.split_column}' holds {', '.join(unknown[:5])}; use train, val, test"
            )
        return split.to_numpy(dtype=object)
    if cfg.val_fraction <= 0 or cfg.test_fraction <= 0 or cfg.val_fraction + cfg.test_fraction >= 1:
        raise MedAssistError(
            f"val_fraction and test_fraction must be positive and leave rows for training "
            f"(got {cfg.val_fraction}, {cfg.test_fraction})"
        )
    rng = np.random.default_rng(cfg.seed)
    out = np.full(len(frame), "train", dtype=object)
    for s in pd.unique(strata):  # stratified by outcome (and site), so every part sees each
        rows = rng.permutation(np.flatnonzero(strata == s))
        n_val, n_test = int(round(cfg.val_fraction * len(rows))), int(round(cfg.test_fraction * len(rows)))
        out[rows[:n_test]] = "test"
        out[rows[n_test : n_test + n_val]] = "val"
    return out


def load_table(cfg: TabularConfig) -> Table:
    """The configured table with its outcome, features, split and metadata; every problem named."""
    name, frame, coded = _raw(cfg)
    where = name if cfg.data == "heart_disease" else cfg.data
    if frame.empty:
        raise DataError(f"{where} has no rows")
    y, target_col, target = outcome(frame, cfg.target, where)
    keep = ~np.isnan(y)
    dropped = int((~keep).sum())
    frame, y = frame[keep].reset_index(drop=True), y[keep].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: the target '{target}' is {int(y[0])} for every row; nothing to predict")
    default_groups = [c for c in ("site", "sex", "age", "race", "ethnicity") if c in frame.columns]
    groups = list(cfg.group_columns) or default_groups
    missing = [c for c in [*groups, *cfg.features, *cfg.categorical] if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: column '{missing[0]}' is not in the table; its columns are: {_columns(frame)}")
    leave_out = {target_col, cfg.split_column, "site"} - {""}
    features = list(cfg.features) or [str(c) for c in frame.columns if c not in leave_out]
    categorical = [c for c in (cfg.categorical or coded) if c in features]
    numeric = [c for c in features if c not in categorical]
    not_numbers = [c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])]
    if not_numbers:
        raise DataError(f"{where}: column '{not_numbers[0]}' is not numeric; name it with --categorical")
    strata = y.astype(str) + ("|" + frame["site"].astype(str) if "site" in frame.columns else "")
    split = _split(cfg, frame, np.asarray(strata), where)
    for s in ("train", "val", "test"):
        part = y[split == s]
        if len(part) < 10 or len(np.unique(part)) < 2:
            raise DataError(
                f"{where}: the {s} split has {len(part)} rows with {len(np.unique(part))} outcome(s); it "
                "needs at least 10 rows and both outcomes"
            )
    info = {"rows": int(len(frame)), "dropped_missing_target": dropped, "target_column": target_col}
    return Table(name, frame[features], y, split, frame[groups], numeric, categorical, target, info)


def _preprocess(table: Table) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                table.numeric,
            ),
            (
                "coded",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                table.categorical,
            ),
        ]
    )


def candidates(cfg: TabularConfig) -> list[tuple[str, dict[str, Any]]]:
    """(model, settings) of every setting tried on validation."""
    unknown = sorted(set(cfg.models) - set(MODELS))
    if unknown or not cfg.models:
        raise MedAssistError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    out: list[tuple[str, dict[str, Any]]] = []
    if "logistic" in cfg.models:
        out += [("logistic", {"C": c, "class_weight": w}) for w in (None, "balanced") for c in cfg.logistic_C]
    if "gradient_boosting" in cfg.models:
        grid = itertools.product(cfg.boosting_learning_rate, cfg.boosting_max_leaf_nodes, cfg.boosting_l2)
        out += [
            ("gradient_boosting", {"learning_rate": lr, "max_leaf_nodes": leaves, "l2_regularization": l2})
            for lr, leaves, l2 in grid
        ]
    return out


def _estimator(model: str, settings: dict[str, Any], table: Table, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if model == "logistic":
        head = LogisticRegression(max_iter=5000, **settings)
    else:
        head = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=seed, **settings)
    return make_pipeline(_preprocess(table), head)


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def choose(
    val_auc: dict[str, float], p_val: dict[str, np.ndarray], y_val: np.ndarray, cfg: TabularConfig
) -> tuple[str, dict]:
    """The simplest model (in the order of :data:`MODELS`) whose validation AUC is not clearly below the best one's:
    clearly below when the paired bootstrap interval of (best - it) on the validation patients lies above zero."""
    from medassist.evaluate.metrics import auc, paired_bootstrap_difference

    best = max(val_auc, key=val_auc.get)  # type: ignore[arg-type]
    gaps = {}
    for m in [m for m in MODELS if m in val_auc]:
        if m == best:
            gaps[m] = (0.0, 0.0, 0.0)
            break
        gaps[m] = paired_bootstrap_difference(y_val, p_val[best], p_val[m], auc, n_boot=cfg.n_boot, seed=cfg.seed)
        if gaps[m][1] <= 0:  # not clearly below the best
            break
    chosen = list(gaps)[-1]
    rule = {
        "rule": "the simplest model whose validation AUC is not clearly below the best (paired bootstrap interval)",
        "best_on_validation": best,
        "gaps_to_best": {m: list(g) for m, g in gaps.items()},
    }
    return chosen, rule


def run_tabular_study(cfg: TabularConfig) -> Path:
    """Tune, choose and test the models on ``cfg.data``; write the run folder and its report; return it."""
    from medassist.evaluate.metrics import auc, headline_metrics_with_ci, paired_bootstrap_difference

    table = load_table(cfg)
    grid = candidates(cfg)
    parts = {s: np.flatnonzero(table.split == s) for s in SPLITS}
    run = Run.create(cfg.out, f"tabular-{table.name}", to_dict(cfg), kind="tabular")
    with run:
        _stage(cfg, f"{len(grid)} settings fitted on {len(parts['train'])} patients, scored on validation")
        rows, fitted = [], {}
        x, y = table.x, table.y
        for model, settings in tqdm(grid, desc="settings", disable=not cfg.progress, leave=False):
            t0 = time.perf_counter()
            est = _estimator(model, settings, table, cfg.seed).fit(x.iloc[parts["train"]], y[parts["train"]])
            p_val = est.predict_proba(x.iloc[parts["val"]])
            score = float(auc(y[parts["val"]], p_val))
            row = {"model": model, "settings": _settings(settings), "val_auc": score}
            rows.append(row | {"fit_s": time.perf_counter() - t0})
            if model not in fitted or score > fitted[model][1]:  # ties keep the earlier (simpler) setting
                fitted[model] = (est, score, settings, p_val)
        run.write_table("search", pd.DataFrame(rows))
        probs = {m: {"val": f[3], "test": f[0].predict_proba(x.iloc[parts["test"]])} for m, f in fitted.items()}
        val_aucs = {m: f[1] for m, f in fitted.items()}
        chosen, rule = choose(val_aucs, {m: p["val"] for m, p in probs.items()}, y[parts["val"]], cfg)
        _stage(cfg, f"chosen on validation: {chosen} (AUC {fitted[chosen][1]:.3f}); test with intervals")
        y_test = y[parts["test"]]
        comparison = []
        for m, (_, val_auc, settings, _) in fitted.items():
            h = headline_metrics_with_ci(y_test, probs[m]["test"], n_boot=cfg.n_boot, seed=cfg.seed)
            row: dict[str, Any] = {"model": m, "settings": settings, "val_auc": val_auc}
            row |= {f"test_{k}": v["value"] for k, v in h.items()}
            row |= {f"test_{k}_lo": v["ci_low"] for k, v in h.items()} | {
                f"test_{k}_hi": v["ci_high"] for k, v in h.items()
            }
            if m != chosen:
                d = paired_bootstrap_difference(
                    y_test, probs[chosen]["test"], probs[m]["test"], auc, n_boot=cfg.n_boot, seed=cfg.seed
                )
                row |= {"chosen_minus_auc": d[0], "chosen_minus_auc_lo": d[1], "chosen_minus_auc_hi": d[2]}
            comparison.append(row)
        run.write_table("comparison", pd.DataFrame(comparison).drop(columns="settings"))
        names = [f"not {table.target}", table.target]
        splits = {
            s: (y[parts[s]], probs[chosen][s], table.meta.iloc[parts[s]].reset_index(drop=True))
            for s in ("val", "test")
        }
        write_predictions(
            run,
            task="multi-class",
            label_names=names,
            splits=splits,
            model=chosen,
            kind="tabular",
            extra={"dataset": table.name},
        )
        if "site" in table.meta.columns:
            by_site = (
                pd.DataFrame({"site": table.meta["site"], "y": y})
                .groupby("site")
                .agg(patients=("y", "size"), prevalence=("y", "mean"))
                .reset_index()
            )
            run.write_table("sites", by_site)
        run.write_metrics(
            {
                "kind": "tabular",
                "dataset": table.name,
                "target": table.target,
                "sizes": {s: int(len(v)) for s, v in parts.items()},
                "prevalence": {s: float(y[v].mean()) for s, v in parts.items()},
                "features": {"numeric": table.numeric, "categorical": table.categorical},
                "groups": list(table.meta.columns),
                "data": table.info,
                "settings_tried": len(grid),
                "selected": {"model": chosen, "settings": fitted[chosen][2], "val_auc": fitted[chosen][1]},
                "choice_rule": rule,
                "comparison": comparison,
                "n_boot": cfg.n_boot,
            }
        )
        from medassist.report.tabular import write_tabular_report

        write_tabular_report(run.dir)
    return run.dir
