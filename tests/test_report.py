import pandas as pd

from degrade import verdict


def metrics(rows):
    frame = pd.DataFrame(rows, columns=["variant", "depth", "seed", "train_error"])
    return frame.assign(run_id=[f"r{i}" for i in range(len(frame))], epoch=10, test_error=0.1, state="done")


def curves(rows, epochs=10, falling=0.0):
    """Per-epoch rows of runs that end at their final training error; ``falling``: how much
    their error still drops per epoch at the end (0: flat, as a run that has trained)."""
    frames = []
    for i, (variant, depth, seed, final) in enumerate(rows):
        errors = [final + falling * (epochs - e) for e in range(1, epochs + 1)]
        frames.append(
            pd.DataFrame(
                {
                    "variant": variant,
                    "depth": depth,
                    "seed": seed,
                    "train_error": errors,
                    "run_id": f"r{i}",
                    "epoch": range(1, epochs + 1),
                    "test_error": 0.1,
                    "iteration": [10 * e for e in range(1, epochs + 1)],
                    "state": "done",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


DEGRADES = [("plain", 8, 0, 0.01), ("plain", 56, 0, 0.6), ("residual", 8, 0, 0.01), ("residual", 56, 0, 0.02)]


def test_verdict_reproduced_when_plain_degrades_and_residual_does_not():
    v = verdict.verdict(curves(DEGRADES))
    assert v.startswith("Degradation reproduced") and "plain-56" in v
    # The same unit as the table: percent.
    assert "(train error 60.00 % vs 1.00 %)" in v and "0.600" not in v
    # One seed: the call says so, and how to check it.
    assert v.endswith("This rests on one seed: check it with --seeds 0,1,2.")


def test_with_two_seeds_the_call_does_not_say_it_rests_on_one():
    rows = [(v, d, s, e + 0.001 * s) for v, d, _, e in DEGRADES for s in (0, 1)]
    v = verdict.verdict(curves(rows))
    assert v.startswith("Degradation reproduced") and "one seed" not in v


def test_no_call_while_the_shallow_nets_have_not_reached_a_low_training_error():
    # Flat curves, the same gap as above, but plain-8 is at 20 %: the nets have not trained.
    rows = [("plain", 8, 0, 0.2), ("plain", 56, 0, 0.6), ("residual", 8, 0, 0.01), ("residual", 56, 0, 0.02)]
    v = verdict.verdict(curves(rows, epochs=3))
    assert v.startswith("Not converged: train longer (--epochs 12, or trainer.epochs=12)")
    assert "plain-8 (seed 0): 20.00 % training error at the end (trained: at most 10 %)" in v
    assert "reproduced" not in v and "residual-8" not in v


def test_no_call_while_a_shallow_curve_is_still_falling():
    # Every error low, but plain-8 fell 0.8 points per epoch over the last 2 epochs: not flat.
    v = verdict.verdict(curves(DEGRADES, falling=0.008))
    assert v.startswith("Not converged: train longer (--epochs 20, or trainer.epochs=20)")
    assert "plain-8 (seed 0): training error still moved 1.60 points over the last 2 epochs" in v
    assert "reproduced" not in v
    # The same errors with curves that moved less than a point: the call is made.
    assert verdict.verdict(curves(DEGRADES, falling=0.004)).startswith("Degradation reproduced")


def test_one_epoch_shows_no_curve_and_the_hint_follows_iterations_when_they_set_the_length():
    v = verdict.verdict(curves(DEGRADES, epochs=1), iterations=True)
    assert v.startswith("Not converged: train longer (trainer.iterations=40)")
    assert "too few to see its curve flatten" in v


def test_verdict_with_overlapping_seed_bands_is_inconclusive():
    m = curves(
        [
            ("plain", 8, 0, 0.01),
            ("plain", 8, 1, 0.05),
            ("plain", 56, 0, 0.04),
            ("plain", 56, 1, 0.08),
            ("residual", 8, 0, 0.01),
            ("residual", 8, 1, 0.01),
            ("residual", 56, 0, 0.01),
            ("residual", 56, 1, 0.01),
        ]
    )
    assert verdict.verdict(m).startswith("Inconclusive")


def test_verdict_when_neither_degrades():
    m = curves(
        [("plain", 8, 0, 0.01), ("plain", 56, 0, 0.01), ("residual", 8, 0, 0.01), ("residual", 56, 0, 0.0)]
    )
    assert verdict.verdict(m).startswith("No degradation")


def test_a_verdict_per_setting_judges_each_setting_on_its_own_curves():
    m = pd.concat(
        [
            curves(DEGRADES).assign(**{"optim.lr": 0.1}),
            curves([(v, d, s, e + 0.3) for v, d, s, e in DEGRADES]).assign(**{"optim.lr": 0.01}),
        ]
    )
    low, high = verdict.verdicts(m, ["optim.lr"])
    assert low.startswith("optim.lr=0.01: Not converged") and high.startswith("optim.lr=0.1: Degradation")


def test_summary_has_mean_and_std_over_seeds_and_counts_diverged_runs():
    m = metrics([("plain", 8, 0, 0.1), ("plain", 8, 1, 0.3), ("plain", 56, 0, 0.5)])
    m.loc[2, "state"] = "diverged"
    t = verdict.summarize(m)
    row = t[(t.variant == "plain") & (t.depth == 8)].iloc[0]
    assert row.seeds == 2 and abs(row.train_error_mean - 0.2) < 1e-9 and row.train_error_std > 0
    assert int(t[(t.depth == 56)].iloc[0].diverged) == 1


def test_no_call_on_runs_that_have_not_finished():
    m = curves(DEGRADES)
    m.loc[m["run_id"] == "r1", "state"] = "interrupted"
    v = verdict.verdict(m)
    assert v.startswith("Not finished: 1 of 4 runs are interrupted; no call until they finish")
    assert "reproduced" not in v


def _degrading(epochs: int, deep_final: float, deep_falling: float) -> pd.DataFrame:
    """Plain-20 and ResNet-20/56 flat at 0 % at the end; plain-56 ends at ``deep_final``, still
    falling by ``deep_falling`` per epoch."""
    flat = curves([("plain", 20, 0, 0.0), ("residual", 20, 0, 0.0), ("residual", 56, 0, 0.0)], epochs=epochs)
    deep = curves([("plain", 56, 0, deep_final)], epochs=epochs, falling=deep_falling).assign(run_id="deep")
    return pd.concat([flat, deep], ignore_index=True)


def test_a_still_falling_plain_56_at_15_epochs_gets_the_papers_control():
    v = verdict.verdict(_degrading(15, 0.75, 0.02), default_epochs=15)
    assert v.startswith("Degradation reproduced")
    # How much it moved over its last epochs (2 of 15: the flatness window), and the control's option.
    assert (
        "plain-56 was still improving at the end: its training error moved 4.00 points over its last 2 epochs"
    ) in v
    assert "run the same sweep with --epochs 45." in v
    assert v.endswith("This rests on one seed: check it with --seeds 0,1,2.")


def test_a_flat_plain_56_gets_no_control_note():
    v = verdict.verdict(_degrading(15, 0.75, 0.004), default_epochs=15)
    assert v.startswith("Degradation reproduced") and "still improving" not in v and "3x" not in v


def test_the_control_counts_from_the_sweeps_own_epochs_and_iterations():
    assert "--epochs 60." in verdict.verdict(_degrading(20, 0.75, 0.02))
    assert "trainer.iterations=450." in verdict.verdict(_degrading(15, 0.75, 0.02), iterations=True)


def test_at_3x_the_budget_the_verdict_says_the_degradation_persisted():
    v = verdict.verdict(_degrading(45, 0.358, 0.0), default_epochs=15)
    assert v.startswith("Degradation reproduced")
    assert "(train error 35.80 % vs 0.00 %)" in v
    assert (
        "At 3x the default budget (45 epochs against 15) the degradation persisted, as in the paper's "
        "control; plain-56's training error moved 0.00 points over its last 5 epochs."
    ) in v
    assert "still improving" not in v


def test_at_3x_the_budget_the_verdict_says_when_the_degradation_did_not_persist():
    v = verdict.verdict(_degrading(45, 0.01, 0.0), default_epochs=15)
    assert v.startswith("No degradation")
    assert (
        "At 3x the default budget (45 epochs against 15) plain-56 no longer trains worse: the "
        "degradation did not persist."
    ) in v
    assert "persisted" not in v
    # Short of 3x it is no control, whatever the epochs.
    assert "default budget" not in verdict.verdict(_degrading(44, 0.01, 0.0), default_epochs=15)


def test_the_default_budget_is_the_shipped_configs():
    assert verdict.default_epochs("digits") == 15
    assert verdict.default_epochs("no-such-data") is None
