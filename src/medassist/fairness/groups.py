"""Patient subgroups from a run's saved metadata: sex, age bands, sex x age, and any metadata column.

A grouping maps every case to a group name, or to None when the case's metadata does not state it. Groups with
fewer test cases than the minimum size are listed with their counts but not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medassist.errors import MedAssistError

NOT_STATED = "(not stated)"
CROSS = "*"  # "sex*age": the crossing of two groupings


def age_band_names(edges: list[float]) -> list[str]:
    """Names of the bands cut at ``edges``: [40, 60, 80] gives <40, 40-59, 60-79, 80+."""
    e = [int(x) if float(x).is_integer() else x for x in edges]
    names = [f"<{e[0]}"] + [f"{a}-{_below(b)}" for a, b in zip(e[:-1], e[1:], strict=True)] + [f"{e[-1]}+"]
    return names


def _below(b: float) -> str:
    return str(b - 1) if isinstance(b, int) else f"<{b}"


def age_bands(age: pd.Series, edges: list[float]) -> pd.Series:
    """The age band of each age in years (None where the age is unknown)."""
    if not edges or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise MedAssistError(f"age_bands must be increasing ages in years, e.g. 40,60,80; got {edges}")
    a = pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), a, side="right")
    names = np.array(age_band_names(edges), dtype=object)
    out = np.where(np.isfinite(a), names[np.clip(idx, 0, len(names) - 1)], None)
    return pd.Series(out, dtype=object)


@dataclass
class Grouping:
    """One way of cutting the cases into groups.

    Attributes:
        name: e.g. "sex", "age", "sex*age", "site".
        val: the group of each validation case (None = not stated).
        test: the group of each test case.
        order: group names in display order.
    """

    name: str
    val: pd.Series
    test: pd.Series
    order: list[str]

    def counts(self) -> pd.Series:
        """Test cases per group (the not-stated ones last)."""
        c = self.test.value_counts().reindex(self.order, fill_value=0)
        missing = int(self.test.isna().sum())
        if missing:
            c[NOT_STATED] = missing
        return c.astype(int)

    def compared(self, min_size: int) -> list[str]:
        """The groups with at least ``min_size`` test cases."""
        c = self.test.value_counts()
        return [g for g in self.order if int(c.get(g, 0)) >= min_size]


def _column(name: str, val: pd.DataFrame, test: pd.DataFrame, edges: list[float], where: str) -> Grouping:
    present = [c for c in test.columns if c in val.columns]
    if name not in present:
        raise MedAssistError(
            f"{where} has no metadata column '{name}' for the requested group; metadata columns present: "
            f"{', '.join(present) or 'none'}. Name one of them in --groups, or leave --groups out."
        )
    if name == "age" or (pd.api.types.is_numeric_dtype(test[name]) and name.lower().startswith("age")):
        gv, gt = age_bands(val[name], edges), age_bands(test[name], edges)
        order = age_band_names(edges)
    else:

        def norm(s: pd.Series) -> pd.Series:
            s = s.astype(object).where(s.notna(), None)
            return s.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())

        gv, gt = norm(val[name]), norm(test[name])
        order = sorted({*gv.dropna().unique(), *gt.dropna().unique()})
    values = sorted(set(gt.dropna().unique()))
    if len(values) < 2:
        found = f"only the value '{values[0]}'" if values else "no value at all"
        raise MedAssistError(
            f"{where}: the metadata column '{name}' has {found} on the test split; a group comparison needs at "
            "least two groups. Choose another column in --groups."
        )
    return Grouping(name, gv.reset_index(drop=True), gt.reset_index(drop=True), [g for g in order if g in values])


def make_groupings(
    names: list[str], val: pd.DataFrame, test: pd.DataFrame, *, age_edges: list[float], where: str
) -> list[Grouping]:
    """The groupings ``names`` (columns, or two columns joined by ``*``) of the validation and test cases.

    Raises:
        MedAssistError: a named column is missing, or holds fewer than two values on the test split.
    """
    out = []
    for name in names:
        parts = [p.strip() for p in name.split(CROSS)]
        if len(parts) == 1:
            out.append(_column(parts[0], val, test, age_edges, where))
            continue
        subs = [_column(p, val, test, age_edges, where) for p in parts]

        def cross(series: list[pd.Series]) -> pd.Series:
            frame = pd.concat(series, axis=1)
            return pd.Series(
                [None if any(v is None for v in row) else " x ".join(row) for row in frame.itertuples(index=False)],
                dtype=object,
            )

        order = [" x ".join(combo) for combo in _product([s.order for s in subs])]
        gt = cross([s.test for s in subs])
        present = set(gt.dropna())
        out.append(Grouping(CROSS.join(parts), cross([s.val for s in subs]), gt, [g for g in order if g in present]))
    return out


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for values in lists:
        combos = [(*c, v) for c in combos for v in values]
    return combos


def default_groups(columns: list[str]) -> list[str]:
    """sex, age and sex*age where the metadata has them."""
    have = [c for c in ("sex", "age") if c in columns]
    return have + (["sex*age"] if len(have) == 2 else [])
