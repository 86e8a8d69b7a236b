"""Generated predictions files to try ``medassist fairness --predictions`` on (no patient's data).

- :func:`sepsis_predictions`: a binary outcome with sex, race, site, numeric age and a val/test split, scored by a
  model that is noisier for one group.
- :func:`readmission_predictions`: shaped like a hospital extract of a readmission model's predictions: low
  prevalence (about 11%) and scores that seldom pass 0.5, age in the extract's own bands (``[70-80)``), race empty
  for about 2% of rows, a gender value too rare to compare, repeated encounters of the same patient, and a
  train/val/test split by patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RACES = ["Caucasian", "AfricanAmerican", "Hispanic", "Other", "Asian"]
AGE_BANDS = [f"[{a}-{a + 10})" for a in range(0, 100, 10)]


def sepsis_predictions(rows: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Cases of a binary outcome (``sepsis``) and a model's ``score``; the model is worse for race D."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B", "C", "D"], rows, p=[0.5, 0.25, 0.15, 0.1])
    sex = rng.choice(["F", "M"], rows)
    y = rng.binomial(1, 0.2 + 0.1 * (sex == "M"))
    logit = (2 * y - 1) * 1.5 + rng.normal(0, np.where(race == "D", 1.6, 1.0))
    return pd.DataFrame(
        {
            "sepsis": y,
            "score": (1 / (1 + np.exp(-logit))).round(6),
            "sex": sex,
            "race": race,
            "site": rng.choice(["s1", "s2", "s3"], rows),
            "age": rng.integers(18, 95, rows),
            "split": rng.choice(["val", "test"], rows, p=[0.3, 0.7]),
        }
    )


def readmission_predictions(rows: int = 100_000, seed: int = 0) -> pd.DataFrame:
    """Encounters (``encounter_id``, ``patient_nbr``) with the outcome ``y``, the model's score ``p``, ``race``,
    ``gender``, ``age`` bands and ``split`` (60/20/20 by patient). The model is weaker for one race group."""
    rng = np.random.default_rng(seed)
    n_patients = int(rows * 0.7)
    patient = np.sort(rng.integers(0, n_patients, rows))  # about 30% of encounters repeat a patient
    _, first = np.unique(patient, return_index=True)
    per_patient = lambda values: values[np.searchsorted(patient[first], patient)]  # noqa: E731
    race = per_patient(rng.choice(RACES, n_patients, p=[0.76, 0.19, 0.02, 0.015, 0.015]).astype(object))
    race[rng.random(rows) < 0.022] = None  # not recorded
    gender = per_patient(rng.choice(["Female", "Male"], n_patients, p=[0.54, 0.46]).astype(object))
    gender[rng.choice(rows, 3, replace=False)] = "Unknown/Invalid"
    age_p = np.array([0.002, 0.007, 0.016, 0.037, 0.095, 0.17, 0.22, 0.256, 0.169, 0.028])
    age_i = per_patient(rng.choice(10, n_patients, p=age_p / age_p.sum()))
    risk = -2.3 + 0.08 * (age_i - 6) + rng.normal(0, 0.5, rows)
    y = rng.binomial(1, 1 / (1 + np.exp(-risk)))
    noise = np.where(race == "Hispanic", 1.6, 1.0)
    z = risk + 0.5 * (y - 0.11) + rng.normal(0, 0.9 * noise)  # the model sees part of the risk, and the outcome
    p = 1 / (1 + np.exp(-(-2.1 + 0.55 * (z - risk.mean()))))
    split = per_patient(rng.choice(np.array(["train", "val", "test"], dtype=object), n_patients, p=[0.6, 0.2, 0.2]))
    return pd.DataFrame(
        {
            "encounter_id": rng.permutation(rows) * 7 + 100_000,
            "patient_nbr": patient + 1_000_000,
            "split": split,
            "y": y,
            "p": p.round(5),
            "race": race,
            "gender": gender,
            "age": np.asarray(AGE_BANDS, dtype=object)[age_i],
        }
    )
