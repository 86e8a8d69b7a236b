"""Patient subgroups from a run's saved metadata: sex, age bands, sex x age, and any metadata column.

A grouping maps every case to a group name, or to None when the case's metadata does not state it (or to the
group "(not stated)" when missing values are kept as a group). A column is categorical as given (``[70-80)``,
``F``, a site's name); only a numeric age is cut into bands. Groups with fewer test cases than the minimum size
are listed with their counts but not compared.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medassist.errors import DataError, MedAssistError

NOT_STATED = "(not stated)"
CROSS = "*"  # "sex*age": the crossing of two groupings
MAX_GROUPS = 50  # a column with more distinct values than this is not a grouping (an id, a number, free text)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def band_key(text: str) -> tuple[float, float] | None:
    """Where a band such as ``[70-80)``, ``70-80``, ``<40``, ``>80``, ``>=80`` or ``80+`` lies: (lower, upper)
    bounds for ordering, or None when the text is not a band."""
    t = str(text).strip().strip("[]()").strip()
    numbers = [float(n) for n in _NUMBER.findall(t)]
    if not numbers or len(numbers) > 2 or not re.fullmatch(r"[<>=+\-–\d.\s]*(?:years?|yrs?|y)?", t, re.I):
        return None
    if t.startswith("<"):
        return (-math.inf, numbers[0])
    if t.startswith(">") or t.endswith("+"):
        return (numbers[0], math.inf)
    return (numbers[0], numbers[-1])


def is_numeric(values: pd.Series) -> bool:
    """Whether every stated value reads as a number."""
    stated = values.dropna()
    stated = stated[stated.astype(str).str.strip() != ""]
    return bool(len(stated)) and bool(pd.to_numeric(stated, errors="coerce").notna().all())


def group_order(values: set[str]) -> list[str]:
    """Bands in the order of their bounds when every value is a band; otherwise alphabetical."""
    keys = {v: band_key(v) for v in values}
    if values and all(k is not None for k in keys.values()):
        return sorted(values, key=lambda v: (keys[v], v))
    return sorted(values)


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


def _norm(s: pd.Series) -> pd.Series:
    s = s.astype(object).where(s.notna(), None)
    return s.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())


def _column(
    name: str, val: pd.DataFrame, test: pd.DataFrame, edges: list[float], where: str, missing_as_group: bool = False
) -> Grouping:
    present = [c for c in test.columns if c in val.columns]
    if name not in present:
        raise MedAssistError(
            f"{where} has no metadata column '{name}' for the requested group; metadata columns present: "
            f"{', '.join(present) or 'none'}. Name one of them in --groups, or leave --groups out."
        )
    both = pd.concat([val[name], test[name]], ignore_index=True)
    if name.lower().startswith("age") and is_numeric(both):  # a numeric age is cut into bands
        gv, gt = age_bands(val[name], edges), age_bands(test[name], edges)
        order = age_band_names(edges)
    else:  # categorical as given; bands such as [70-80) kept, in their order
        gv, gt = _norm(val[name]), _norm(test[name])
        distinct = {*gv.dropna().unique(), *gt.dropna().unique()}
        if len(distinct) > MAX_GROUPS:
            kind = "numbers" if is_numeric(both) else "text values"
            shown = ", ".join(f"'{v}'" for v in sorted(distinct)[:3])
            hint = (
                "if it is an age in years, pass it as --age-column to cut it into --age-bands"
                if kind == "numbers"
                else "group it into fewer categories first, or leave it out"
            )
            raise DataError(
                f"{where}: the metadata column '{name}' holds {len(distinct)} distinct {kind} such as {shown}; a "
                f"grouping needs at most {MAX_GROUPS} groups: {hint}"
            )
        order = group_order(distinct)
    if missing_as_group:
        gv, gt = (g.where(g.notna(), NOT_STATED) for g in (gv, gt))
        order = [*order, NOT_STATED]
    values = set(gt.dropna().unique())
    if len(values) < 2:
        stated = both.notna() & (both.astype(str).str.strip() != "")
        found = (
            f"only the value '{next(iter(values))}'"
            if values
            else f"no stated value ({int(stated.sum())} stated value(s) on the validation split)"
        )
        raise MedAssistError(
            f"{where}: the metadata column '{name}' has {found} on the test split; a group comparison needs at "
            "least two groups. Choose another column in --groups."
        )
    return Grouping(name, gv.reset_index(drop=True), gt.reset_index(drop=True), [g for g in order if g in values])


def make_groupings(
    names: list[str],
    val: pd.DataFrame,
    test: pd.DataFrame,
    *,
    age_edges: list[float],
    where: str,
    missing_as_group: bool = False,
) -> list[Grouping]:
    """The groupings ``names`` (columns, or two columns joined by ``*``) of the validation and test cases.

    Args:
        missing_as_group: cases whose column is empty form the group "(not stated)" instead of being left out.

    Raises:
        MedAssistError: a named column is missing, holds fewer than two values on the test split, or holds too
            many distinct values to be groups.
    """
    out = []
    for name in names:
        parts = [p.strip() for p in name.split(CROSS)]
        if len(parts) == 1:
            out.append(_column(parts[0], val, test, age_edges, where, missing_as_group))
            continue
        subs = [_column(p, val, test, age_edges, where, missing_as_group) for p in parts]

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
