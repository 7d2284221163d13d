"""The figures' one language and the probe figures' findings, on frames built in pandas (fast)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import pandas as pd
import pytest

from degrade import figstyle, plot, probeplot, sweepdata, verdict


def _numbers(
    kind: str, values: dict[tuple[str, int, str], float], weights: str | None = None
) -> pd.DataFrame:
    """Probe rows holding only numbers: {(variant, depth, quantity): value}."""
    rows = [
        {
            "run_id": f"{v}-{d}",
            "variant": v,
            "depth": d,
            "seed": 0,
            "kind": kind,
            "quantity": q,
            "value": x,
            **({"weights": weights} if weights else {}),
        }
        for (v, d, q), x in values.items()
    ]
    return pd.DataFrame(rows)


def _lesion(plain: tuple[float, float, float], resnet: tuple[float, float, float]) -> pd.DataFrame:
    """(base train error, base test error, mean test error with one block removed) at depth 56."""
    values = {}
    for v, (train, base, single) in (("plain", plain), ("residual", resnet)):
        values |= {
            (v, 56, "base_train_error"): train,
            (v, 56, "base_test_error"): base,
            (v, 56, "single_test_error_mean"): single,
        }
    return _numbers("lesion", values)


def test_the_lesion_title_says_what_its_numbers_say_either_way():
    said = probeplot.lesion_finding(_lesion((0.0, 0.03, 0.88), (0.0, 0.03, 0.05)))
    assert said.endswith(
        "plain-56 fails (test error 3.0 % → 88.0 %), ResNet-56 barely notices (test error 3.0 % → 5.0 %)"
    )
    said = probeplot.lesion_finding(_lesion((0.0, 0.03, 0.04), (0.0, 0.03, 0.90)))
    assert "plain-56 barely notices" in said and "ResNet-56 fails" in said
    assert "loses 12 points" in probeplot.lesion_finding(_lesion((0.0, 0.03, 0.15), (0.0, 0.03, 0.05)))


def test_the_lesion_title_names_the_deepest_net_that_trained():
    frame = pd.concat(
        [
            _lesion((0.6, 0.62, 0.84), (0.0, 0.03, 0.05)),
            _numbers(
                "lesion",
                {
                    ("plain", 20, "base_train_error"): 0.0,
                    ("plain", 20, "base_test_error"): 0.03,
                    ("plain", 20, "single_test_error_mean"): 0.88,
                },
            ),
        ]
    )
    said = probeplot.lesion_finding(frame)
    assert "plain-20 fails" in said and "plain-56" not in said


def test_the_landscape_title_compares_the_twins_in_the_direction_of_the_data():
    def frame(plain_loss, res_loss, plain_rough, res_rough):
        return _numbers(
            "landscape",
            {
                ("plain", 56, "centre_loss"): plain_loss,
                ("residual", 56, "centre_loss"): res_loss,
                ("plain", 56, "nonconvex_fraction"): plain_rough,
                ("residual", 56, "nonconvex_fraction"): res_rough,
            },
        )

    said = probeplot.landscape_finding(frame(1.5, 0.001, 0.81, 0.28))
    assert "plain-56 sits higher than ResNet-56 (loss 1.5 vs 0.001), on a more non-convex surface" in said
    assert "(81.0 % vs 28.0 % of the map)" in said
    said = probeplot.landscape_finding(frame(0.001, 1.5, 0.28, 0.81))
    assert "sits lower" in said and "less non-convex" in said
    assert "sits as high" in probeplot.landscape_finding(frame(0.1, 0.1, 0.3, 0.3))


def test_the_gradcorr_and_identity_titles_follow_their_thresholds():
    corr = pd.concat(
        [
            _numbers(
                "gradcorr", {("plain", 56, "corr_lag1"): 0.02, ("residual", 56, "corr_lag1"): 0.92}, "initial"
            ),
            _numbers(
                "gradcorr", {("plain", 56, "corr_lag1"): 0.99, ("residual", 56, "corr_lag1"): 0.40}, "final"
            ),
        ]
    )
    said = probeplot.gradcorr_finding(corr)
    assert "at initialisation plain-56's are shattered (0.02), ResNet-56's are correlated (0.92)" in said
    assert "after training plain-56's are correlated (0.99), ResNet-56's are shattered (0.40)" in said
    ratio = _numbers("identity", {("plain", 56, "ratio"): 1.17, ("residual", 56, "ratio"): 0.39}, "final")
    said = probeplot.identity_finding(ratio)
    assert "plain-56's blocks are far from the identity" in said and "ResNet-56's blocks are near" in said
    ratio = _numbers("identity", {("plain", 56, "ratio"): 0.2, ("residual", 56, "ratio"): 0.9}, "final")
    said = probeplot.identity_finding(ratio)
    assert "plain-56's blocks are near the identity" in said and "ResNet-56's blocks are far" in said


def _curves() -> pd.DataFrame:
    frames = []
    for variant in ("plain", "residual"):
        for depth, end in ((8, 0.0), (20, 0.0), (56, 0.6 if variant == "plain" else 0.0)):
            # Falling for five epochs, then flat: nets that have trained, so the verdict makes a call.
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": f"{variant}-{depth}",
                        "variant": variant,
                        "depth": depth,
                        "seed": 0,
                        "epoch": range(1, 11),
                        "train_error": [end + 0.3 * max(0, 5 - e) / 5 for e in range(1, 11)],
                        "test_error": end + 0.03,
                        "state": "done",
                        "dataset": "digits",
                        "device": "cpu",
                        "precision": "fp32",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _sweep(metrics: pd.DataFrame) -> sweepdata.SweepData:
    return sweepdata.SweepData("s", Path("."), {}, metrics, [])


def test_training_error_is_the_bold_solid_line_and_test_the_thin_dashed_one_in_every_error_figure():
    for kind in ("curves", "depth"):
        fig = plot.draw(kind, _sweep(_curves()))
        for ax in fig.axes:
            lines = [ln for ln in ax.lines if len(ln.get_xdata())]
            solid = [ln for ln in lines if ln.get_linestyle() == "-"]
            dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
            assert solid and dashed, kind
            assert min(ln.get_linewidth() for ln in solid) > max(ln.get_linewidth() for ln in dashed), kind
            labels = [t.get_text() for t in ax.get_legend().get_texts()]
            assert "training error" in labels and "test error" in labels, kind


def test_the_verdict_sits_under_the_panels_not_in_the_title():
    fig = plot.draw("curves", _sweep(_curves()))
    (line,) = verdict.sweep_verdicts(_sweep(_curves()))
    assert line.startswith("Degradation reproduced")
    assert line not in fig._suptitle.get_text()
    under = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert line in under and figstyle.CAPTION in under
    # Under the panels: below every axis, so the panels keep their size however long it is.
    (text,) = [t for t in fig.texts if line in t.get_text().replace("\n", " ")]
    assert text.get_position()[1] < min(ax.get_position().y0 for ax in fig.axes)
    quiet = plot.draw("curves", _sweep(_curves()), verdict=False)
    assert line not in " ".join(t.get_text() for t in quiet.texts)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_depth_colours_are_readable_and_the_deepest_is_the_darkest(n):
    colours = figstyle.depth_colours(list(range(n)))
    light = [
        0.2126 * r + 0.7152 * g + 0.0722 * b
        for r, g, b in (matplotlib.colors.to_rgb(colours[d]) for d in range(n))
    ]
    assert max(light) < 0.7  # no pale line on white (viridis' light green, 0.75, was one)
    assert light[-1] == min(light)


def test_the_identity_panels_do_not_share_an_axis():
    rows = []
    for v, q in (("plain", "change_ratio"), ("residual", "branch_ratio")):
        for w in ("initial", "final"):
            for layer in (3, 5, 7):
                rows.append(
                    {
                        "run_id": v,
                        "variant": v,
                        "depth": 8,
                        "seed": 0,
                        "kind": "identity",
                        "quantity": q,
                        "weights": w,
                        "layer": layer,
                        "block": layer // 2,
                        "downsampling": False,
                        "value": 1.2 if v == "plain" else 0.3,
                    }
                )
    fig = probeplot.identity(pd.DataFrame(rows))
    left, right = fig.axes[:2]
    assert not left.get_shared_y_axes().joined(left, right)
    assert left.get_ylabel() != right.get_ylabel()
