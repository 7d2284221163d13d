"""Final errors per variant and depth, and the verdict on degradation."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# A difference in final training error smaller than this (2 percentage points) is no difference.
MARGIN = 0.02


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every run."""
    if metrics.empty:
        return metrics
    last = metrics.sort_values("epoch").groupby("run_id", sort=False).tail(1)
    return last.sort_values(["variant", "depth", "seed"]).reset_index(drop=True)


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the final train/test error, per variant and depth.

    Columns: variant, depth, seeds, train_error_mean/std, test_error_mean/std, epochs,
    diverged (runs whose loss blew up; their errors are left out of the means).
    """
    last = final_rows(metrics)
    if last.empty:
        return pd.DataFrame()
    state = last["state"] if "state" in last else pd.Series("done", index=last.index)
    last = last.assign(diverged=(state == "diverged").astype(int))
    ok = last[last["diverged"] == 0]
    agg = ok.groupby(["variant", "depth"]).agg(
        seeds=("seed", "nunique"),
        train_error_mean=("train_error", "mean"),
        train_error_std=("train_error", "std"),
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),
        epochs=("epoch", "max"),
    )
    div = last.groupby(["variant", "depth"])["diverged"].sum()
    table = agg.join(div, how="outer").reset_index()
    table["diverged"] = table["diverged"].fillna(0).astype(int)
    table["seeds"] = table["seeds"].fillna(0).astype(int)
    return table.sort_values(["variant", "depth"]).reset_index(drop=True)


@dataclass
class Comparison:
    """Shallowest vs deepest final training error of one variant."""

    variant: str
    shallow: int
    deep: int
    shallow_error: float
    deep_error: float
    outcome: str  # "worse" | "not worse" | "inconclusive"


def _compare(rows: pd.DataFrame, variant: str) -> Comparison | None:
    rows = rows[(rows["variant"] == variant) & rows["train_error_mean"].notna()]
    if len(rows) < 2:
        return None
    a, b = rows.iloc[0], rows.iloc[-1]
    diff = b.train_error_mean - a.train_error_mean
    if diff <= MARGIN:
        outcome = "not worse"  # a difference too small to matter, however tight the seeds
    elif a.seeds >= 2 and b.seeds >= 2:
        # Bands of one std: overlap means the seeds do not separate the two depths.
        hi_a = a.train_error_mean + a.train_error_std
        lo_b = b.train_error_mean - b.train_error_std
        outcome = "worse" if lo_b > hi_a else "inconclusive"
    else:
        outcome = "worse"
    return Comparison(variant, int(a.depth), int(b.depth), float(a.train_error_mean),
                      float(b.train_error_mean), outcome)


def verdict(table: pd.DataFrame) -> str:
    """One line: does deeper plain train worse, and does residual avoid it?"""
    if table.empty:
        return "No finished epochs to judge."
    plain, res = _compare(table, "plain"), _compare(table, "residual")

    def said(c: Comparison) -> str:
        return (f"{c.variant}-{c.deep} {'trains worse than' if c.outcome == 'worse' else 'vs'} "
                f"{c.variant}-{c.shallow} (train error {c.deep_error:.3f} vs {c.shallow_error:.3f}"
                f"{', seeds overlap' if c.outcome == 'inconclusive' else ''})")

    if plain is None and res is None:
        return "Need at least two depths of one variant to judge degradation."
    if plain is None or res is None:
        c = plain or res
        assert c is not None
        return f"Only {c.variant} runs: {said(c)}."
    if "inconclusive" in (plain.outcome, res.outcome):
        return f"Inconclusive: {said(plain)}; {said(res)}. Run more seeds or epochs."
    if plain.outcome == "worse" and res.outcome == "not worse":
        return f"Degradation reproduced: {said(plain)}, while residual does not: {said(res)}."
    if plain.outcome == "worse":
        return f"Both degrade: {said(plain)}; {said(res)}."
    return f"No degradation at these settings: {said(plain)}; {said(res)}."
