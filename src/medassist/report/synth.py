"""The synthetic-data study's report: reads the run folder's files (metrics.json, tables, figures) and nothing else.

One table holds every measured number with its 95% interval; the reflection is generated from those numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.report.html import write_report
from medassist.utils.format import (
    computed_on,
    fmt_int,
    fmt_metric,
    fmt_percent,
    fmt_seconds,
    fmt_value_ci,
    readable_table,
)
from medassist.utils.words import fit_sentences

NAMES = {"vae": "VAE", "gan": "GAN", "diffusion": "diffusion"}


def _name(g: str) -> str:
    if g.startswith("vae_dp_eps"):
        return f"VAE, DP-SGD ε={g.removeprefix('vae_dp_eps')}"
    return NAMES.get(g, g)


def under_trained(r: dict[str, Any]) -> bool:
    """Whether a generator's record says a time budget cut its training while validation still improved
    (:attr:`medassist.train.engine.FitResult.under_trained`); a record written before the rule reads as complete."""
    return bool(r.get("under_trained", False))


def _classifier_cut(r: dict[str, Any]) -> bool:
    """Whether the TSTR (or TRTR) classifier of a record was under-trained (older runs: not)."""
    return bool(((r.get("tstr") or r).get("unit") or {}).get("under_trained", False))


def training_status(r: dict[str, Any]) -> str:
    """The ``training`` cell of a generator's row: complete, or what its budget cut short."""
    parts = [
        p
        for p, on in (("under-trained", under_trained(r)), ("TSTR classifier under-trained", _classifier_cut(r)))
        if on
    ]
    return "; ".join(parts) or "complete"


def label(g: str, r: dict[str, Any]) -> str:
    """A generator's name in a legend, caption or sentence, marked when it was under-trained."""
    return f"{_name(g)} (under-trained)" if under_trained(r) else _name(g)


def _cut_sentence(cut: dict[str, dict[str, Any]], decide: str) -> str:
    """That the generators in ``cut`` were under-trained, why (budget, epochs), and that the budget was too short
    to ``decide``: no comparison may rest on them."""

    def why(r: dict[str, Any]) -> str:
        budget, planned = (r.get("config") or {}).get("time_budget"), r.get("planned_epochs")
        return (
            (f"{budget:g}-s budget" if budget else "time budget")
            + f" ended at epoch {r.get('epochs_run')}"
            + (f" of {planned}" if planned else "")
        )

    names = [f"the {_name(g)}" for g in cut]
    if len(names) == 1:
        who, why_all = names[0], f"its {why(next(iter(cut.values())))} while its validation score was still improving"
    else:
        who = ", ".join(names[:-1]) + " and " + names[-1]
        why_all = "; ".join(f"{_name(g)}: {why(r)}" for g, r in cut.items()) + ", each while still improving"
    return (
        f"{who[0].upper()}{who[1:]} {'was' if len(names) == 1 else 'were'} under-trained ({why_all}), so the budget "
        f"was too short to {decide}; no comparison below rests on {'it' if len(names) == 1 else 'them'}."
    )


def _v(h: dict[str, Any]) -> str:
    return fmt_value_ci(h["value"], h["ci_low"], h["ci_high"])


def _d(x: list[float]) -> str:
    return fmt_value_ci(x[0], x[1], x[2], kind="delta")


def _differs(x: list[float]) -> bool:
    return bool(x[1] > 0 or x[2] < 0)


def measurement_rows(m: dict[str, Any]) -> pd.DataFrame:
    """One row per generator (and the real-vs-real floor): every number of the study, with intervals."""
    rows = []
    floor, trtr = m["real_floor"], m["trtr"]["test"]
    rows.append(
        {
            "generator": "real train vs real test (floor)",
            "training": "TRTR classifier under-trained" if _classifier_cut(m["trtr"]) else "complete",
            "n_synthetic": None,
            "frechet_distance": floor["frechet_distance"],
            "precision": floor["precision"],
            "recall": floor["recall"],
            "density": floor["density"],
            "coverage": floor["coverage"],
            "conditional_accuracy": floor["conditional_accuracy"],
            "near_duplicate_rate": floor["near_duplicate_rate"],
            "test_auc": trtr["auc"]["value"],
            "test_auc_lo": trtr["auc"]["ci_low"],
            "test_auc_hi": trtr["auc"]["ci_high"],
            "test_accuracy": trtr["accuracy"]["value"],
            "test_accuracy_lo": trtr["accuracy"]["ci_low"],
            "test_accuracy_hi": trtr["accuracy"]["ci_high"],
        }
    )
    for g, r in {**m["generators"], **m.get("dp", {})}.items():
        t, p = r["tstr"]["test"], r["privacy"]
        am = p.get("attack_model", {})
        rows.append(
            {
                "generator": _name(g),
                "training": training_status(r),
                "n_synthetic": r["n_synthetic"],
                "train_time_s": r["train_time"],
                "sample_s_per_1000": r["sample_seconds_per_1000"],
                "frechet_distance": r["frechet_distance"],
                "precision": r["precision"],
                "recall": r["recall"],
                "density": r["density"],
                "coverage": r["coverage"],
                "conditional_accuracy": r["conditional_accuracy"],
                "near_duplicate_rate": r["near_duplicate_rate"],
                "test_auc": t["auc"]["value"],
                "test_auc_lo": t["auc"]["ci_low"],
                "test_auc_hi": t["auc"]["ci_high"],
                "test_accuracy": t["accuracy"]["value"],
                "test_accuracy_lo": t["accuracy"]["ci_low"],
                "test_accuracy_hi": t["accuracy"]["ci_high"],
                "auc_minus_trtr": r["tstr_minus_trtr_auc"][0],
                "auc_minus_trtr_lo": r["tstr_minus_trtr_auc"][1],
                "auc_minus_trtr_hi": r["tstr_minus_trtr_auc"][2],
                "dcr_pixel_share_below_p5": p["pixel"]["share_below_holdout_p5"],
                "dcr_feature_share_below_p5": p["feature"]["share_below_holdout_p5"],
                "mia_distance_auc": p["attack_distance_feature"]["auc"],
                "mia_distance_auc_lo": p["attack_distance_feature"]["auc_lo"],
                "mia_distance_auc_hi": p["attack_distance_feature"]["auc_hi"],
                "mia_pixel_auc": p["attack_distance_pixel"]["auc"],
                "mia_pixel_auc_lo": p["attack_distance_pixel"]["auc_lo"],
                "mia_pixel_auc_hi": p["attack_distance_pixel"]["auc_hi"],
                "mia_model_auc": am.get("auc"),
                "mia_model_auc_lo": am.get("auc_lo"),
                "mia_model_auc_hi": am.get("auc_hi"),
                "epsilon": r.get("epsilon"),
            }
        )
    return pd.DataFrame(rows)


HEADERS = {
    "n_synthetic": "synthetic images",
    "train_time_s": "train time",
    "sample_s_per_1000": "sampling s / 1,000",
    "frechet_distance": "Fréchet distance",
    "conditional_accuracy": "conditional accuracy",
    "near_duplicate_rate": "near-duplicate rate",
    "test_auc": "TSTR test AUC",
    "test_accuracy": "TSTR test accuracy",
    "auc_minus_trtr": "AUC minus TRTR (paired)",
    "dcr_pixel_share_below_p5": "share < held-out DCR p5 (pixel)",
    "dcr_feature_share_below_p5": "share < held-out DCR p5 (features)",
    "mia_distance_auc": "attack AUC, distance (features)",
    "mia_pixel_auc": "attack AUC, distance (pixels)",
    "mia_model_auc": "attack AUC, model score",
    "epsilon": "ε (Opacus)",
}
KINDS = {
    "near_duplicate_rate": "percent",
    "dcr_pixel_share_below_p5": "percent",
    "dcr_feature_share_below_p5": "percent",
    "frechet_distance": "quantity",
    "density": "metric",
    "epsilon": "quantity",
    "sample_s_per_1000": "seconds",
    "n_synthetic": "int",
    "auc_minus_trtr": "delta",
}


MAX_WORDS = 200  # the brief's 150-200 words


def reflection(m: dict[str, Any]) -> str:
    """150-200 words from the measured numbers: the largest training challenge and what addressed it, fidelity,
    diversity, plausibility, usefulness and what the privacy numbers mean for sharing."""
    gens, floor = m["generators"], m["real_floor"]
    if not gens:
        return "No generator was trained in this run, so there is nothing to reflect on."
    best_fd = min(gens, key=lambda g: gens[g]["frechet_distance"])
    # A comparison between generators rests on every generator compared: with one under-trained (its budget ended
    # while validation still improved) the numbers are reported, and no generator is called better.
    # (A DP-SGD run cut short is said so in the DP-SGD sentence.)
    cut = {g: r for g, r in gens.items() if under_trained(r)}
    compare = not cut

    def n(g: str) -> str:
        return label(g, gens[g])

    decide = "decide between the generators" if len(gens) > 1 else f"judge what the {_name(next(iter(gens)))} can do"
    s: list[str] = [_cut_sentence(cut, decide)] if cut else []
    vae, gan = gens.get("vae"), gens.get("gan")
    active = vae and vae.get("active_units")
    if vae and active is not None and active / vae["latent_dim"] < 0.5:
        s.append(
            f"The largest training challenge the measurements show is posterior collapse: only {active} of the VAE's "
            f"{vae['latent_dim']} latent units stayed active, even with KL warm-up and free bits."
        )
    elif gan and gan["near_duplicate_rate"] > 2 * max(floor["near_duplicate_rate"], 0.01):
        s.append(
            "The largest training challenge the measurements show is mode collapse: "
            f"{fmt_percent(gan['near_duplicate_rate'])} of the GAN's samples have a near-duplicate, against "
            f"{fmt_percent(floor['near_duplicate_rate'])} of real images."
        )
    elif compare and vae and vae["frechet_distance"] > 2 * gens[best_fd]["frechet_distance"]:
        s.append(
            f"The largest training challenge the measurements show is blur: the VAE's Fréchet distance is "
            f"{fmt_metric(vae['frechet_distance'])} against {fmt_metric(gens[best_fd]['frechet_distance'])} for the "
            f"{_name(best_fd)}, with precision {fmt_metric(vae['precision'])}; KL warm-up and free bits kept "
            f"{active} of {vae['latent_dim']} latent units active, so collapse was not the cause."
        )
    elif gan:
        tricks = [
            t
            for t, on in (
                ("minibatch standard deviation", gan.get("minibatch_std")),
                ("weight averaging", (gan.get("config") or {}).get("ema")),
            )
            if on
        ]
        s.append(
            "No generator collapses"
            + (f": with {' and '.join(tricks)}, " if tricks else ": ")
            + f"{fmt_percent(gan['near_duplicate_rate'])} of GAN samples have a near-duplicate (real "
            f"{fmt_percent(floor['near_duplicate_rate'])})."
        )
    else:
        s.append("No generator shows collapse or blur beyond the others by the rules of this report.")
    b = gens[best_fd]
    if compare:
        s.append(
            f"The {_name(best_fd)}'s samples are the most realistic: Fréchet distance "
            f"{fmt_metric(b['frechet_distance'])} on the domain classifier's features (real-vs-real floor "
            f"{fmt_metric(floor['frechet_distance'])}), precision {fmt_metric(b['precision'])}."
        )
    else:
        fd = ", ".join(f"{n(g)} {fmt_metric(r['frechet_distance'])}" for g, r in gens.items())
        s.append(
            f"Fréchet distance on the domain classifier's features: {fd} (real-vs-real floor "
            f"{fmt_metric(floor['frechet_distance'])})."
        )
    # The first sentence names any generator cut short; the lists below name them plainly, to keep within the limit.
    cov = ", ".join(f"{_name(g)} {fmt_metric(r['coverage'])}" for g, r in gens.items())
    s.append(f"Diversity, as coverage of the real test images: {cov} (real floor {fmt_metric(floor['coverage'])}).")
    acc = ", ".join(f"{_name(g)} {fmt_metric(r['conditional_accuracy'])}" for g, r in gens.items())
    optional = [len(s)] if cut else []  # the under-trained sentence needs the words: plausibility goes second
    s.append(
        f"The real-trained classifier recognises the requested class in {acc} of the samples "
        f"(real test accuracy {fmt_metric(floor['conditional_accuracy'])}), as far as a classifier can judge "
        "medical plausibility."
    )
    best_t = max(gens, key=lambda g: gens[g]["tstr"]["val_auc"])
    t, d = gens[best_t]["tstr"]["test"], gens[best_t]["tstr_minus_trtr_auc"]
    chosen = "chosen on validation" if compare else "best on validation in this run"
    if best_t in cut:
        s.append(
            f"Trained on the {_name(best_t)}'s images ({chosen}), the classifier reaches test AUC {_v(t['auc'])} "
            f"(paired difference from real images {_d(d)}): a measure of its budget, not of synthetic images."
        )
    elif _classifier_cut(gens[best_t]) or _classifier_cut(m["trtr"]):
        s.append(
            f"Trained on the {_name(best_t)}'s images ({chosen}), the classifier reaches test AUC {_v(t['auc'])} "
            f"(paired difference {_d(d)}), but a classifier of this comparison was under-trained, so the budget was "
            "too short to decide whether synthetic images match real ones."
        )
    else:
        verdict = ("differs from" if _differs(d) else "shows no difference from") + " training on real images"
        s.append(
            f"Trained on the {_name(best_t)}'s images ({chosen}), the classifier reaches test AUC "
            f"{_v(t['auc'])}, "
            f"which {verdict} (paired difference {_d(d)})."
        )
    leaky = [
        g
        for g, r in gens.items()
        if r["privacy"]["attack_distance_feature"]["auc_lo"] > 0.5
        or r["privacy"].get("attack_model", {}).get("auc_lo", 0) > 0.5
    ]
    worst = max(
        (max(r["privacy"]["attack_distance_feature"]["auc"], r["privacy"].get("attack_model", {}).get("auc", 0)), g)
        for g, r in gens.items()
    )
    if leaky:
        s.append(
            f"Membership can be inferred above chance for {', '.join(n(g) for g in leaky)} (highest attack AUC "
            f"{fmt_metric(worst[0])}, interval above 0.5), so these samples should not be shared as anonymous."
        )
    else:
        s.append(
            "No attack tells training images from held-out ones above chance (highest AUC "
            f"{fmt_metric(worst[0])}, every "
            "interval includes 0.5), which supports sharing but proves no formal guarantee."
        )
    dcr = ", ".join(
        f"{_name(g)} {fmt_percent(r['privacy']['pixel']['share_below_holdout_p5'])}" for g, r in gens.items()
    )
    feat = max(r["privacy"]["feature"]["share_below_holdout_p5"] for r in gens.values())
    optional.append(len(s))  # dropped first if the reflection runs over the brief's length
    s.append(
        f"Closer to a training image than the 5th percentile of held-out images (about 5% expected without copying): "
        f"{dcr} of the samples in pixel space, at most {fmt_percent(feat)} in feature space."
    )
    dp = m.get("dp", {})
    if dp:
        parts = ", ".join(
            f"ε={r['epsilon']:.2g}{' (under-trained)' if under_trained(r) else ''} gives TSTR AUC "
            f"{fmt_metric(r['tstr']['test']['auc']['value'])}"
            for r in dp.values()
        )
        dp_cut = [g for g, r in dp.items() if under_trained(r)]
        s.append(
            f"Only DP-SGD gives a guarantee: {parts}"
            + ("; the budget was too short to decide what DP-SGD costs." if dp_cut else ".")
        )
    return fit_sentences(s, optional, MAX_WORDS)


def holdout_split(m: dict[str, Any]) -> str:
    """The split the privacy measurements held out (runs before the validation hold-out used the test split)."""
    return m.get("privacy_holdout", "test")


def _fig(run_dir: Path, name: str, caption: str) -> str:
    rel = f"figures/{name}.png"
    return f"![{caption}]({rel})\n\n*{caption}*\n" if (run_dir / rel).is_file() else ""


def build_synth_report(run_dir: str | Path) -> str:
    """The report of a synthetic-data run folder, as Markdown."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    if m.get("kind") == "records":
        from medassist.report.synth_records import build_records_report

        return build_records_report(run_dir, m)
    data = m["data"]
    gens = {**m["generators"], **m.get("dp", {})}
    out = [
        f"# Synthetic data: {data['name']}",
        "",
        "> **Every image under `synthetic/` is synthetic** (see `SYNTHETIC.md`): generated, not a patient's.",
        "",
        f"Real images: train {fmt_int(data['splits']['train'])}, validation {fmt_int(data['splits']['val'])}, test "
        f"{fmt_int(data['splits']['test'])}; classes {', '.join(data['class_names'])}. Wall time "
        f"{fmt_seconds(m.get('wall_time'))} s. " + computed_on(m),
        "",
        "The domain classifier (features for the Fréchet distance, precision/recall/density/coverage, the "
        f"conditional accuracy) is `{m['trtr']['unit']['model']}` trained on the real training split (TRTR); TSTR "
        "trains the same model with the same budget on each generator's images; both are chosen on real validation "
        "images and tested on the real test split. Privacy (DCR and the membership attacks) is measured against "
        + (
            "the validation images as held-out records: never trained on, and from the training images' "
            "distribution, unlike the test split, so that an attack sees memorisation rather than a shift "
            "between splits (the validation images do select each generator's epoch)."
            if holdout_split(m) == "val"
            else "the test images as held-out records."
        ),
        "",
        "## Reflection",
        "",
        reflection(m),
        "",
        "## Every number",
        "",
        "95% bootstrap intervals in brackets. Fidelity, diversity and DCR use the domain classifier's features; "
        "attack AUC 0.5 means no leakage the attack can see.",
        "",
        readable_table(measurement_rows(m), headers={**HEADERS}, kinds=KINDS),
        "",
    ]
    aug = m.get("augmentation")
    if aug:
        da = aug["minus_real_auc"]
        dacc = aug["minus_real_accuracy"]
        used = aug["generator"]
        others = [_name(g) for g, r in m["generators"].items() if under_trained(r) and g != used]
        if under_trained(m["generators"].get(used, {})):
            verdict = (
                f" — the {_name(used)} was under-trained (its time budget ended while its validation score was still "
                "improving), so the budget was too short to decide what augmentation gives."
            )
        else:
            verdict = (
                " — "
                + (
                    "an improvement"
                    if da[1] > 0 or dacc[1] > 0
                    else "a loss"
                    if da[2] < 0 or dacc[2] < 0
                    else "no difference"
                )
                + " by the interval rule."
            )
        if others:
            verdict += (
                f" The choice of generator is not a finding: the {' and the '.join(others)} "
                f"{'was' if len(others) == 1 else 'were'} under-trained."
            )
        out += [
            "## Augmentation",
            "",
            f"{fmt_int(aug['n_added'])} synthetic '{aug['minority_class']}' images from the "
            f"{label(used, m['generators'].get(used, {}))} "
            f"(the generator with the best TSTR validation AUC) added to the real training images: test AUC "
            f"{_v(aug['test']['auc'])}, accuracy {_v(aug['test']['accuracy'])}; minus real alone (paired): AUC "
            f"{_d(da)}, accuracy {_d(dacc)}" + verdict,
            "",
        ]
    per = []
    for g, r in {"real floor": m["real_floor"], **gens}.items():
        status = "complete" if g == "real floor" else training_status(r)
        for cls, v in r.get("per_class", {}).items():
            per.append({"generator": _name(g), "class": cls, "training": status, **v})
    if per:
        out += [
            "## Per class",
            "",
            readable_table(
                pd.DataFrame(per),
                headers={"frechet_distance": "Fréchet distance"},
                kinds={"frechet_distance": "quantity", "density": "metric"},
                key=2,
            ),
            "",
        ]
    out += ["## Training", ""]
    for g, r in gens.items():
        line = (
            f"- **{_name(g)}**: {fmt_int(r['params'])} parameters, {r['epochs_run']} epochs in "
            f"{fmt_seconds(r['train_time'])} s (best epoch {r['best_epoch']}"
            + (", stopped by its time budget" if r.get("budget_reached") else "")
            + ")"
        )
        if under_trained(r):
            line += (
                f"; **under-trained**: its budget ended it before its {r.get('planned_epochs') or 'planned'} epochs "
                "while its validation score was still improving"
            )
        if g.startswith("vae"):
            line += f"; {r.get('active_units')} of {r.get('latent_dim')} latent units active"
        if r.get("epsilon") is not None:
            line += (
                f"; ε = {r['epsilon']:.3g} at δ = 1/N (Opacus RDP accountant), noise multiplier "
                f"{r['noise_multiplier']:.3g}"
            )
        out.append(line + ".")
    out.append("")
    for g in gens:
        out += [_fig(run_dir, f"curves_{g}", f"{label(g, gens[g])}: training curves")]
    out += ["## Samples", ""]
    for g, r in gens.items():
        out += [_fig(run_dir, f"samples_{g}", f"{label(g, r)}: synthetic samples, one row per class")]
        out += [_fig(run_dir, f"reconstructions_{g}", f"{label(g, r)}: test images above their reconstructions")]
    out += [
        "## Closest synthetic-training pairs",
        "",
        "For a person to check for copies: each generator's synthetic images with the smallest pixel distance "
        "to a training image, above that training image.",
        "",
    ]
    for g, r in gens.items():
        out += [_fig(run_dir, f"closest_{g}", f"{label(g, r)}: closest pairs")]
    return "\n".join(out) + "\n"


def write_synth_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    return write_report(run_dir, build_synth_report(run_dir), title=run_dir.name)
