"""Write a synthetic predictions file to try `medassist fairness --predictions` on (no patient's data): N cases of a
binary outcome with sex, race, site, age and a val/test split, scored by a model that is noisier for one group.

    .venv/bin/python scripts/example_predictions.py preds.csv --rows 20000
"""

import argparse

import numpy as np
import pandas as pd

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("out", help="the CSV to write")
p.add_argument("--rows", type=int, default=20000)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
rng = np.random.default_rng(args.seed)
n = args.rows
race = rng.choice(["A", "B", "C", "D"], n, p=[0.5, 0.25, 0.15, 0.1])
sex = rng.choice(["F", "M"], n)
y = rng.binomial(1, 0.2 + 0.1 * (sex == "M"))
logit = (2 * y - 1) * 1.5 + rng.normal(0, np.where(race == "D", 1.6, 1.0))  # the model is worse for group D
frame = pd.DataFrame(
    {
        "sepsis": y,
        "score": (1 / (1 + np.exp(-logit))).round(6),
        "sex": sex,
        "race": race,
        "site": rng.choice(["s1", "s2", "s3"], n),
        "age": rng.integers(18, 95, n),
        "split": rng.choice(["val", "test"], n, p=[0.3, 0.7]),
    }
)
frame.to_csv(args.out, index=False)
print(f"{args.out}: {n} cases ({int(y.sum())} positive), synthetic")
