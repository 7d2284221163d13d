import pandas as pd

from degrade import report


def metrics(rows):
    frame = pd.DataFrame(rows, columns=["variant", "depth", "seed", "train_error"])
    return frame.assign(run_id=[f"r{i}" for i in range(len(frame))], epoch=10, test_error=0.1,
                        state="done")


def test_verdict_reproduced_when_plain_degrades_and_residual_does_not():
    m = metrics([("plain", 8, 0, 0.01), ("plain", 56, 0, 0.6), ("residual", 8, 0, 0.01),
                 ("residual", 56, 0, 0.02)])
    v = report.verdict(report.summarize(m))
    assert v.startswith("Degradation reproduced") and "plain-56" in v
    # The same unit as the table: percent.
    assert "(train error 60.00 % vs 1.00 %)" in v and "0.600" not in v


def test_verdict_with_overlapping_seed_bands_is_inconclusive():
    m = metrics([("plain", 8, 0, 0.1), ("plain", 8, 1, 0.3), ("plain", 56, 0, 0.15),
                 ("plain", 56, 1, 0.35), ("residual", 8, 0, 0.1), ("residual", 8, 1, 0.1),
                 ("residual", 56, 0, 0.1), ("residual", 56, 1, 0.1)])
    assert report.verdict(report.summarize(m)).startswith("Inconclusive")


def test_verdict_when_neither_degrades():
    m = metrics([("plain", 8, 0, 0.01), ("plain", 56, 0, 0.01), ("residual", 8, 0, 0.01),
                 ("residual", 56, 0, 0.0)])
    assert report.verdict(report.summarize(m)).startswith("No degradation")


def test_summary_has_mean_and_std_over_seeds_and_counts_diverged_runs():
    m = metrics([("plain", 8, 0, 0.1), ("plain", 8, 1, 0.3), ("plain", 56, 0, 0.5)])
    m.loc[2, "state"] = "diverged"
    t = report.summarize(m)
    row = t[(t.variant == "plain") & (t.depth == 8)].iloc[0]
    assert row.seeds == 2 and abs(row.train_error_mean - 0.2) < 1e-9 and row.train_error_std > 0
    assert int(t[(t.depth == 56)].iloc[0].diverged) == 1
