"""The synthetic-data report, on a fake run folder: every number in the table, a reflection of 150-200 words whose
verdicts follow the intervals."""

from __future__ import annotations

import json
from pathlib import Path

from medassist.report.synth import build_synth_report, measurement_rows, reflection


def _h(v: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": v, "ci_low": lo, "ci_high": hi}


def _gen(fd: float, tstr: float, diff: list[float], attack: list[float], **extra) -> dict:
    a = dict(zip(["auc", "auc_lo", "auc_hi"], attack, strict=True))
    return {
        "n_synthetic": 100,
        "train_time": 10.0,
        "sample_seconds_per_1000": 1.0,
        "params": 1000,
        "epochs_run": 3,
        "best_epoch": 3,
        "frechet_distance": fd,
        "precision": 0.7,
        "recall": 0.6,
        "density": 0.8,
        "coverage": 0.5,
        "conditional_accuracy": 0.9,
        "near_duplicate_rate": 0.05,
        "per_class": {},
        "tstr": {"test": {"auc": _h(tstr, tstr - 0.02, tstr + 0.02), "accuracy": _h(0.8, 0.78, 0.82)}, "val_auc": tstr},
        "tstr_minus_trtr_auc": diff,
        "privacy": {
            "pixel": {"share_below_holdout_p5": 0.04},
            "feature": {"share_below_holdout_p5": 0.05},
            "attack_distance_feature": a,
            "attack_distance_pixel": a,
            "attack_model": {"kind": "x", **a},
        },
        **extra,
    }


def _metrics(gan_diff: list[float], gan_attack: list[float]) -> dict:
    return {
        "data": {"name": "tiny", "class_names": ["a", "b"], "splits": {"train": 10, "val": 5, "test": 5}},
        "trtr": {"unit": {"model": "cnn_gap"}, "test": {"auc": _h(0.96, 0.94, 0.98), "accuracy": _h(0.9, 0.88, 0.92)}},
        "real_floor": {
            "frechet_distance": 0.01,
            "precision": 0.9,
            "recall": 0.9,
            "density": 1.0,
            "coverage": 0.8,
            "conditional_accuracy": 0.9,
            "near_duplicate_rate": 0.05,
            "per_class": {},
        },
        "generators": {
            "vae": _gen(0.5, 0.90, [-0.06, -0.08, -0.04], [0.5, 0.46, 0.54], active_units=30, latent_dim=32),
            "gan": _gen(0.1, 0.955, gan_diff, gan_attack),
        },
        "dp": {
            "vae_dp_eps8": _gen(
                0.9,
                0.8,
                [-0.1, -0.12, -0.08],
                [0.5, 0.47, 0.53],
                epsilon=7.99,
                noise_multiplier=0.6,
                active_units=5,
                latent_dim=32,
            )
        },
    }


def test_reflection_follows_the_intervals_and_has_150_to_200_words() -> None:
    same = reflection(_metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54]))
    assert 150 <= len(same.split()) <= 200
    assert "shows no difference from training on real images" in same and "blur" in same
    assert "No attack tells training images from held-out ones above chance" in same
    leaky = reflection(_metrics([-0.03, -0.05, -0.01], [0.6, 0.56, 0.64]))
    assert (
        "differs from training on real images" in leaky and "Membership can be inferred above chance for GAN" in leaky
    )


def test_the_table_holds_every_generator_and_the_report_reads_the_run_folder(tmp_path: Path) -> None:
    m = _metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54])
    rows = measurement_rows(m)
    assert list(rows["generator"]) == ["real train vs real test (floor)", "VAE", "GAN", "VAE, DP-SGD ε=8"]
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    report = build_synth_report(tmp_path)
    assert "0.955 [0.935, 0.975]" in report and "7.99" in report and "-0.004 [-0.012, +0.003]" in report


def test_benchmark_rows_carry_every_generator_and_the_peak_memory() -> None:
    from medassist.bench.synth import rows_of

    m = _metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54])
    rows = rows_of(m, seed=1, wall=600.0, peak_mb=2048.0)
    assert [r["generator"] for r in rows] == ["vae", "gan", "vae_dp_eps8"]
    assert rows[1]["tstr_auc"] == 0.955 and rows[1]["trtr_auc"] == 0.96 and rows[2]["epsilon"] == 7.99
    assert all(r["peak_memory_mb"] == 2048.0 and r["seed"] == 1 for r in rows)


def _cut(m: dict, g: str = "gan") -> dict:
    """``m`` with generator ``g`` under-trained: its 90-s budget ended at epoch 12 of 30, the best one."""
    m["generators"][g].update(
        under_trained=True, budget_reached=True, best_epoch=12, epochs_run=12, planned_epochs=30,
        config={"time_budget": 90.0},
    )  # fmt: skip
    return m


def test_an_under_trained_generator_is_marked_and_no_comparison_rests_on_it(tmp_path: Path) -> None:
    from medassist.utils.words import count_words

    m = _cut(_metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54]))  # the GAN is best on FD and on TSTR
    m["augmentation"] = {
        "generator": "gan",
        "minority_class": "b",
        "n_added": 5,
        "test": {"auc": _h(0.97, 0.95, 0.99), "accuracy": _h(0.9, 0.88, 0.92)},
        "minus_real_auc": [0.01, 0.005, 0.02],
        "minus_real_accuracy": [0.0, -0.01, 0.01],
    }
    rows = measurement_rows(m).set_index("generator")
    assert rows.loc["GAN", "training"] == "under-trained" and rows.loc["VAE", "training"] == "complete"
    text = reflection(m)
    assert 150 <= count_words(text) <= 200
    assert text.startswith(
        "The GAN was under-trained (its 90-s budget ended at epoch 12 of 30 while its validation score was still "
        "improving), so the budget was too short to decide between the generators"
    )
    # neither the 'most realistic' verdict nor the TSTR-against-real verdict rests on the GAN
    assert "most realistic" not in text and "training on real images" not in text
    assert "GAN (under-trained) 0.100" in text  # the numbers are given, marked
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    report = build_synth_report(tmp_path)
    assert "| GAN | under-trained |" in report and "| VAE | complete |" in report
    assert "**under-trained**" in report  # the training section
    assert "too short to decide what augmentation gives" in report and "an improvement" not in report


def test_an_under_trained_tstr_classifier_leaves_the_tstr_verdict_undecided() -> None:
    m = _metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54])
    m["generators"]["gan"]["tstr"]["unit"] = {"under_trained": True}
    assert measurement_rows(m).set_index("generator").loc["GAN", "training"] == "TSTR classifier under-trained"
    text = reflection(m)
    assert "a classifier of this comparison was under-trained, so the budget was too short" in text
    assert "training on real images" not in text


def test_a_result_written_before_the_rule_reads_as_complete(tmp_path: Path) -> None:
    m = _metrics([-0.004, -0.012, 0.003], [0.51, 0.48, 0.54])
    assert all("under_trained" not in r and "planned_epochs" not in r for r in m["generators"].values())
    assert set(measurement_rows(m)["training"]) == {"complete"}
    text = reflection(m)
    assert "under-trained" not in text and "most realistic" in text
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert "under-trained" not in build_synth_report(tmp_path)
