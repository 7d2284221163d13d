"""Final errors per variant and depth (and per setting a sweep varied), the verdict on
degradation, the paper's 3x control, and the published numbers beside ours."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from degrade import store
from degrade.flat import show
from degrade.spec import CURE_NAMES
from degrade.sweepdata import SweepData, final_rows

# A difference in final training error smaller than this (2 percentage points) is no difference.
MARGIN = 0.02


# --------------------------------------------------------------------------- published numbers


@functools.cache
def published() -> dict[str, Any]:
    """The published results shipped with the package (``published.yaml``), with their source."""
    text = resources.files("degrade").joinpath("published.yaml").read_text()
    return yaml.safe_load(text)


def published_errors(metrics: pd.DataFrame) -> dict[int, float]:
    """The published test error (a fraction) at each depth whose runs all train what the
    publication trained; empty for anything else (digits, plain nets, other shortcuts)."""
    pub = published()
    if metrics.empty:
        return {}
    match = pd.Series(True, index=metrics.index)
    for column, value in pub["applies_to"].items():
        if column not in metrics:
            return {}
        match &= metrics[column].astype(str) == str(value)
    # Per variant and depth: another variant at the same depth (plain-20) does not matter.
    whole = match.groupby([metrics["variant"], metrics["depth"]]).all()
    table = {int(d): float(e) / 100 for d, e in pub["test_error"].items()}
    return {int(d): table[int(d)] for (_, d), ok in whole.items() if ok and int(d) in table}


# --------------------------------------------------------------------------- the table


def summarize(metrics: pd.DataFrame, by: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean and std over seeds of the final train/test error, per setting, variant and depth.

    ``by``: the settings the sweep varied (config keys that are columns of ``metrics``).
    Columns: *by, variant, depth, seeds, train_error_mean/std, test_error_mean/std, epochs,
    diverged (runs whose loss blew up; their errors are left out of the means), and
    paper_test_error (the published test error where it applies, else NaN).
    """
    last = final_rows(metrics)
    if last.empty:
        return pd.DataFrame()
    groups = [*by, "variant", "depth"]
    state = last["state"] if "state" in last else pd.Series("done", index=last.index)
    last = last.assign(diverged=(state == "diverged").astype(int))
    ok = last[last["diverged"] == 0]
    agg = ok.groupby(groups, dropna=False).agg(
        seeds=("seed", "nunique"),
        train_error_mean=("train_error", "mean"),
        train_error_std=("train_error", "std"),
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),
        epochs=("epoch", "max"),
    )
    div = last.groupby(groups, dropna=False)["diverged"].sum()
    table = agg.join(div, how="outer").reset_index()
    table["diverged"] = table["diverged"].fillna(0).astype(int)
    table["seeds"] = table["seeds"].fillna(0).astype(int)
    paper = published_errors(last)
    table["paper_test_error"] = [
        paper.get(int(d), float("nan")) if v == "residual" else float("nan")
        for v, d in zip(table["variant"], table["depth"], strict=True)
    ]
    return table.sort_values(groups).reset_index(drop=True)


# --------------------------------------------------------------------------- the verdict


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
    rows = rows[(rows["variant"] == variant) & rows["train_error_mean"].notna()].sort_values("depth")
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
    return Comparison(
        variant, int(a.depth), int(b.depth), float(a.train_error_mean), float(b.train_error_mean), outcome
    )


# --------------------------------------------------------------------------- have the runs trained?

# The paper's claim is about nets that have trained: before any call, the shallowest net of each
# variant must have reached a low training error...
TRAINED_ERROR = 0.10
# ...and its training curve must have flattened: over the last tenth of its epochs (at least
# the last two), its training error moved by less than half the margin a call needs.
FLAT = MARGIN / 2
FLAT_SHARE = 0.10
# Seeds that let a call show how much it varies with the seed.
SEEDS_HINT = "--seeds 0,1,2"


def flat_window(epochs: int) -> int:
    """How many epochs back the flatness of a curve ``epochs`` long is measured from its end."""
    return max(2, math.ceil(FLAT_SHARE * epochs))


def _run_unconverged(curve: pd.DataFrame) -> tuple[str, bool] | None:
    """Why one run (its rows by epoch) has not trained enough to judge, and whether it is far
    from it (its error not low, or too few epochs to tell); None when it has trained."""
    curve = curve.sort_values("epoch")
    errors = curve["train_error"].astype(float).tolist()
    last, epochs = errors[-1], int(curve["epoch"].iloc[-1])
    name = f"{curve['variant'].iloc[0]}-{int(curve['depth'].iloc[0])}"
    why, far = [], False
    if not last <= TRAINED_ERROR:
        far = True
        why.append(
            f"{100 * last:.2f} % training error at the end (trained: at most {100 * TRAINED_ERROR:.0f} %)"
        )
    k = flat_window(epochs)
    if len(errors) <= k:
        far = True
        why.append(
            f"{len(errors)} epoch{'s' if len(errors) != 1 else ''}, too few to see its curve "
            f"flatten (it takes more than {k})"
        )
    else:
        moved = abs(errors[-1 - k] - last)
        if not moved < FLAT:
            why.append(
                f"training error still moved {100 * moved:.2f} points over the last {k} epochs "
                f"(flat: less than {100 * FLAT:.0f})"
            )
    if not why:
        return None
    return f"{name} (seed {int(curve['seed'].iloc[0])}): " + ", ".join(why), far


def _longer(metrics: pd.DataFrame, iterations: bool, far: bool) -> str:
    """The concrete way to train longer: 4x the length when far from trained, else 2x."""
    factor = 4 if far else 2
    if iterations and "iteration" in metrics:
        n = factor * int(metrics["iteration"].max())
        return f"trainer.iterations={n}"
    n = factor * int(metrics["epoch"].max())
    return f"--epochs {n}, or trainer.epochs={n}"


def convergence(metrics: pd.DataFrame, iterations: bool = False) -> str | None:
    """None when the runs of one setting have trained enough to judge; else the line that says
    they have not and how to train longer.

    The rule: the shallowest net of each variant (every seed of it, diverged ones left out)
    ends at a training error of at most TRAINED_ERROR, and its training error moved by less than
    FLAT over the last ``flat_window(epochs)`` epochs. The deeper nets are not held to it: a deep
    plain net that does not train is what the verdict looks for.
    """
    rows = metrics[metrics["train_error"].notna()]
    if "state" in rows:
        rows = rows[rows["state"] != "diverged"]
    reasons, far = [], False
    for variant in sorted(rows["variant"].unique()):
        part = rows[rows["variant"] == variant]
        shallow = part[part["depth"] == part["depth"].min()]
        for _, curve in shallow.groupby("run_id", sort=True):
            why = _run_unconverged(curve)
            if why is not None:
                reasons.append(why[0])
                far = far or why[1]
    if not reasons:
        return None
    return f"Not converged: train longer ({_longer(metrics, iterations, far)}); " + "; ".join(reasons) + "."


# --------------------------------------------------------------------------- the paper's 3x control

# He et al. (2015, section 4.1) answer "degraded, or just slower?" by training the plain nets three
# times as long: "more training iterations (3x) and still observed the degradation problem".
CONTROL_FACTOR = 3


@functools.cache
def default_epochs(dataset: str) -> int | None:
    """The epochs a run on ``dataset`` trains when nothing else is asked (the shipped configs);
    None when they do not say."""
    from degrade.config import shipped_default

    value = shipped_default(f"data/{dataset}", "trainer.epochs")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _deepest_plain(metrics: pd.DataFrame) -> pd.DataFrame:
    """The deepest plain net's training error by epoch, the mean over its (not diverged) seeds."""
    rows = metrics[(metrics["variant"] == "plain") & metrics["train_error"].notna()]
    if "state" in rows:
        rows = rows[rows["state"] != "diverged"]
    if rows.empty:
        return rows
    rows = rows[rows["depth"] == rows["depth"].max()]
    return rows.groupby("epoch", sort=True)["train_error"].mean().reset_index()


def control(metrics: pd.DataFrame, iterations: bool = False, default: int | None = None) -> str:
    """What the verdict adds about the paper's 3x control, or "" when there is nothing to add.

    When the sweep trained at least CONTROL_FACTOR times ``default`` epochs (the dataset's default
    budget), the control has been run: say whether plain nets still degrade at that budget. Else,
    when the deepest plain net's training error still fell by FLAT or more over its last
    ``flat_window`` epochs, say how much and give the option that runs the control.
    """
    curve = _deepest_plain(metrics)
    plain = _compare(summarize(metrics), "plain")
    if len(curve) < 2 or plain is None:
        return ""
    epochs = int(curve["epoch"].iloc[-1])
    k = min(flat_window(epochs), len(curve) - 1)
    fell = float(curve["train_error"].iloc[-1 - k] - curve["train_error"].iloc[-1])
    moved = (
        f"training error moved {100 * abs(fell):.2f} points over its last {k} epoch{'s' if k != 1 else ''}"
    )
    if not iterations and default and epochs >= CONTROL_FACTOR * default:
        budget = f"At {epochs / default:.3g}x the default budget ({epochs} epochs against {default})"
        if plain.outcome == "worse":
            return (
                f" {budget} the degradation persisted, as in the paper's control; plain-{plain.deep}'s "
                f"{moved}."
            )
        return f" {budget} plain-{plain.deep} no longer trains worse: the degradation did not persist."
    if fell < FLAT or plain.outcome != "worse":  # only a gap can be "just slower"
        return ""
    if iterations and "iteration" in metrics:
        option = f"trainer.iterations={CONTROL_FACTOR * int(metrics['iteration'].max())}"
    else:
        option = f"--epochs {CONTROL_FACTOR * epochs}"
    return (
        f" plain-{plain.deep} was still improving at the end: its {moved}. Degraded, or just slower? "
        f"The paper's control trains {CONTROL_FACTOR}x as long: run the same sweep with {option}."
    )


# --------------------------------------------------------------------------- the verdict


def _call(table: pd.DataFrame) -> str:
    """The call on one setting's summary table, for runs that have trained."""
    if table.empty:
        return "No finished epochs to judge."
    plain, res = _compare(table, "plain"), _compare(table, "residual")

    def said(c: Comparison) -> str:
        return (
            f"{c.variant}-{c.deep} {'trains worse than' if c.outcome == 'worse' else 'vs'} "
            f"{c.variant}-{c.shallow} (train error {100 * c.deep_error:.2f} % vs "
            f"{100 * c.shallow_error:.2f} %{', seeds overlap' if c.outcome == 'inconclusive' else ''})"
        )

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


def _seeds_note(table: pd.DataFrame) -> str:
    """What a call rests on when some depth of it has only one seed, and how to check it."""
    seeds = table.loc[table["train_error_mean"].notna(), "seeds"]
    if seeds.empty or int(seeds.min()) >= 2:
        return ""
    return f" This rests on one seed: check it with {SEEDS_HINT}."


def _cure_call(table: pd.DataFrame, cure: str) -> str | None:
    """The call on a cure's runs of one variant (a cure is for plain nets or for residual ones):
    does its deep net train as well as its shallow one? None when there is nothing to compare."""
    rows = [c for c in (_compare(table, v) for v in ("plain", "residual")) if c is not None]
    if len(rows) != 1 or rows[0].outcome == "inconclusive":
        return None
    c = rows[0]
    named = CURE_NAMES.get(cure, cure)
    errors = f"(train error {100 * c.deep_error:.2f} % vs {100 * c.shallow_error:.2f} %)"
    deep, shallow = f"{c.variant}-{c.deep} with {named}", f"{c.variant}-{c.shallow} with {named}"
    if c.outcome == "not worse":
        gain = (
            "degradation removed without a shortcut"
            if c.variant == "plain"
            else "the shortcut trains without BN"
        )
        return f"No degradation: {deep} trains as well as {shallow} {errors}: {gain}."
    return f"Still degrades: {deep} trains worse than {shallow} {errors}: {named} does not remove it here."


def _cure_diverged(table: pd.DataFrame, cure: str) -> str | None:
    """The line for a cure whose deeper nets diverged (every seed), or None: without their
    errors a call on the depths left would leave the failure out."""
    named = CURE_NAMES.get(cure, cure)
    for variant in ("plain", "residual"):
        part = table[table["variant"] == variant]
        lost = part[(part["diverged"] > 0) & part["train_error_mean"].isna()]
        if part.empty or lost.empty or int(lost["depth"].max()) == int(part["depth"].min()):
            continue
        kept = part[part["train_error_mean"].notna()].sort_values("depth")
        where = ", ".join(f"{variant}-{int(d)}" for d in sorted(lost["depth"]))
        ends = "; ".join(
            f"{variant}-{int(r.depth)} ends at {100 * r.train_error_mean:.2f} %" for r in kept.itertuples()
        )
        return (
            f"Diverged: {where} with {named} diverged at this learning rate"
            + (f" ({ends})" if ends else "")
            + "; try a smaller optim.lr."
        )
    return None


def verdict(
    metrics: pd.DataFrame,
    iterations: bool = False,
    default_epochs: int | None = None,
    cure: str | None = None,
) -> str:
    """One line on one setting's per-epoch metrics: have the runs trained, and if so, does
    deeper plain train worse, does residual avoid it, and what does the paper's 3x control say?

    ``iterations``: the runs train ``trainer.iterations`` rather than epochs (for the hint).
    ``default_epochs``: the dataset's default budget, which tells whether the runs are the 3x
    control (see ``control``). ``cure``: the cure the runs were built with, named in the call
    (see ``_cure_call``). See ``verdicts`` for a sweep that varied more than depth.
    """
    table = summarize(metrics)
    if table.empty:
        return "No finished epochs to judge."
    lost = _cure_diverged(table, cure) if cure not in (None, "none") else None
    if lost is not None:
        return lost
    if _compare(table, "plain") is None and _compare(table, "residual") is None:
        return _call(table)  # nothing to call: it says what is missing
    unfinished = _unfinished(metrics)
    if unfinished is not None:
        return unfinished
    unconverged = convergence(metrics, iterations)
    if unconverged is not None:
        return unconverged
    line = (_cure_call(table, cure) if cure not in (None, "none") else None) or _call(table)
    if not line.startswith(_CALLS):
        return line
    return line + control(metrics, iterations, default_epochs) + _seeds_note(table)


def _unfinished(metrics: pd.DataFrame) -> str | None:
    """The line for runs that are still training or were stopped half-way, or None: their
    last epoch is not their final one, so no call is made on them yet."""
    if "state" not in metrics:
        return None
    states = metrics.groupby("run_id")["state"].first()
    left = states[states.isin([store.INTERRUPTED, "running"])]
    if left.empty:
        return None
    return (
        f"Not finished: {len(left)} of {len(states)} runs are {' or '.join(sorted(set(left)))}; "
        "no call until they finish (rerun the same sweep command to resume them)."
    )


# The lines that make a claim, and so carry the note on seeds.
_CALLS = ("Degradation reproduced", "Both degrade", "No degradation", "Only ", "Still degrades")


def verdicts(
    metrics: pd.DataFrame,
    by: list[str] | tuple[str, ...] = (),
    iterations: bool = False,
    default_epochs: int | None = None,
) -> list[str]:
    """One verdict per combination of the settings ``by`` (just one line when ``by`` is empty)."""
    if not by or metrics.empty:
        return [verdict(metrics, iterations, default_epochs)]
    lines = []
    for values, part in metrics.groupby(list(by), dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        setting = ", ".join(f"{k}={show(v)}" for k, v in zip(by, values, strict=True))
        cure = dict(zip(by, values, strict=True)).get("cure.name")
        said = verdict(part, iterations, default_epochs, None if cure is None else str(cure))
        lines.append(f"{setting}: {said}")
    return lines


def sweep_verdicts(sweep: SweepData) -> list[str]:
    """The verdicts of ``sweep``, as summary, report and figures all say them."""
    iterations = any(c.get("trainer", {}).get("iterations") is not None for c in sweep.configs.values())
    datasets = {str(c.data.name) for c in sweep.configs.values() if c.get("data", {}).get("name")}
    # One dataset: its default budget says whether this sweep is the 3x control.
    default = default_epochs(datasets.pop()) if len(datasets) == 1 else None
    return verdicts(sweep.metrics, sweep.keys, iterations, default)
