"""Example text files a user's own would look like, made from the real reports that ship offline.

``openi-single``: the Open-i reports that carry exactly one of the study's labels (``normal`` or one finding), as a
multi-class CSV with the user's kind of column names (``report``, ``finding``, ``sex``, ``age``); classes with fewer
than ``min_count`` reports are left out. Run ``python -m medassist.data.text_examples openi-single out.csv``, then
``medassist text --texts out.csv --text-column report --label-column finding``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.utils.io import atomic_path

EXAMPLES = ("openi-single",)


def openi_single_finding(*, min_count: int = 30) -> pd.DataFrame:
    """One row per Open-i report with exactly one label: report text, its finding, sex and age where stated."""
    from medassist.data.reports import load_openi

    data = load_openi(seed=0)
    frames = []
    for split in data.splits.values():
        one = split.labels.sum(1) == 1
        meta = split.metadata[one].reset_index(drop=True)
        frames.append(
            pd.DataFrame(
                {
                    "report_id": meta["report_id"],
                    "report": [t for t, keep in zip(split.texts, one, strict=True) if keep],
                    "finding": np.array(data.label_names)[split.labels[one].argmax(1)],
                    "sex": meta["sex"],
                    "age": meta["age"],
                }
            )
        )
    frame = pd.concat(frames).sort_values("report_id", kind="stable").reset_index(drop=True)
    counts = frame["finding"].value_counts()
    return frame[frame["finding"].isin(counts[counts >= min_count].index)].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medassist.data.text_examples", description=__doc__.split("\n")[0])
    p.add_argument("name", choices=EXAMPLES)
    p.add_argument("out", type=Path, help="CSV file to write")
    p.add_argument("--min-count", type=int, default=30, help="leave out classes with fewer reports")
    args = p.parse_args(argv)
    frame = openi_single_finding(min_count=args.min_count)
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False)
    counts = frame["finding"].value_counts()
    listing = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{args.out}: {len(frame):,} reports, {len(counts)} classes ({listing})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
