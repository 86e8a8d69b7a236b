"""Write a generated predictions file to try `medassist fairness --predictions` on (no patient's data).

    .venv/bin/python scripts/example_predictions.py preds.csv --rows 20000                 # a sepsis score
    .venv/bin/python scripts/example_predictions.py readmit.csv --kind readmission --rows 100000

The readmission file is shaped like a hospital extract: low prevalence, age bands such as [70-80), race missing for
some rows, repeated patients (see medassist.fairness.example).
"""

import argparse

from medassist.fairness.example import readmission_predictions, sepsis_predictions

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("out", help="the CSV to write")
p.add_argument("--kind", choices=["sepsis", "readmission"], default="sepsis")
p.add_argument("--rows", type=int, default=20000)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
make = sepsis_predictions if args.kind == "sepsis" else readmission_predictions
frame = make(args.rows, args.seed)
frame.to_csv(args.out, index=False)
label = "sepsis" if args.kind == "sepsis" else "y"
print(f"{args.out}: {len(frame)} cases ({int(frame[label].sum())} positive), generated")
