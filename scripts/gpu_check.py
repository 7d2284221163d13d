"""The GPU story in one run: every CUDA path degrade has, checked and timed, with a verdict each.

    python scripts/gpu_check.py            # on a CUDA machine (scripts/gpu-check.sh sets it up)
    python scripts/gpu_check.py --cpu      # the same steps at toy sizes on the CPU (a rehearsal)

Steps, each timed and each ending in pass, fail or skip (with why):

1. the CUDA tests (``pytest -m cuda``);
2. the default sweep on the device, with its verdict and wall time;
3. the CUDA-graph step against the eager step on a CIFAR-shaped run crossing lr milestones;
4. ``--together 8`` against one run at a time for the same 8 runs: results and img/s;
5. a slice of the paper preset on CIFAR-shaped synthetic data, and from its throughput the
   projected wall time of the whole preset on this device;
6. ``degrade bench --concurrent --json`` for ResNet-20 and ResNet-56, batch 128.

Everything goes through ``python -m degrade`` as a user would run it, into a scratch run
store. Results go to ``gpu-check.json`` and every command's output to ``gpu-check.log``, in
``$OUT`` when it is set, else ``outputs/gpu-check/``. Exit code 0 when no step failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

# Targets on one H100: what the check holds its numbers against.
TARGET_GRAPH_RESNET56 = 20_000.0  # img/s, one run on the graph path, batch 128
TARGET_TOGETHER_RESNET56 = 40_000.0  # img/s together, a sweep of same-shape runs
TARGET_PAPER_MINUTES = 30.0  # the projected full paper preset
# Tolerances for "the same results": runs that differ only in how the step reaches the device.
LOSS_RTOL = 0.02  # per-epoch training loss, relative
ERROR_ATOL = 0.02  # per-epoch training error, absolute (fraction)
# The full paper preset: plain and residual 20/32/44/56, and residual 110; 64k iterations each.
PAPER_RUNS = [(d, v) for d in (20, 32, 44, 56) for v in ("plain", "residual")] + [(110, "residual")]
PAPER_ITERATIONS = 64_000


@dataclass
class Sizes:
    """How big each step is: paper scale on CUDA, toy scale for the CPU rehearsal."""

    device: str
    sweep_args: list[str]
    compare_args: list[str]  # the graph / eager comparison run
    together_runs: int
    together_args: list[str]
    bench_args: list[str]
    paper_args: list[str]
    paper_precisions: list[str]


CUDA = Sizes(
    device="cuda",
    sweep_args=["--depths", "8,20,56"],
    compare_args=[
        "--depths",
        "20",
        "--variants",
        "residual",
        "data=synthetic",
        "data.train_size=4096",
        "data.test_size=1024",
        "trainer.iterations=400",
        "trainer.precision=fp32",
    ],
    together_runs=8,
    together_args=[
        "--depths",
        "56",
        "--variants",
        "residual",
        "data=synthetic",
        "data.train_size=4096",
        "data.test_size=1024",
        "trainer.iterations=256",
        "trainer.diagnostics=false",
    ],
    bench_args=["--depths", "20,56", "--concurrent", "--runs", "8", "--steps", "200"],
    paper_args=[
        "--depths",
        "20,56",
        "data=synthetic",
        "data.train_size=50000",
        "data.test_size=10000",
        "trainer.iterations=2000",
    ],
    paper_precisions=["fp32", "auto"],
)
CPU = Sizes(
    device="cpu",
    sweep_args=["--depths", "8,14", "--epochs", "2", "hydra/launcher=basic", "trainer.threads=1"],
    compare_args=[
        "--depths",
        "8",
        "--variants",
        "residual",
        "data=synthetic",
        "data.train_size=128",
        "data.test_size=64",
        "trainer.iterations=12",
        "trainer.precision=fp32",
        "trainer.batch_size=32",
        "optim.warmup_iters=2",
        "trainer.threads=1",
    ],
    together_runs=2,
    together_args=[
        "--depths",
        "8",
        "--variants",
        "residual",
        "data=synthetic",
        "data.train_size=128",
        "data.test_size=64",
        "trainer.iterations=8",
        "trainer.batch_size=32",
        "trainer.precision=fp32",
        "trainer.diagnostics=false",
        "trainer.threads=1",
    ],
    bench_args="--depths 8 --steps 2 --warmup 1 --concurrent --runs 2 --precision fp32".split(),
    paper_args=[
        "--depths",
        "8",
        "data=synthetic",
        "data.train_size=256",
        "data.test_size=64",
        # 4 epochs of 2 steps: the first (the capture) is left out, three steady ones remain.
        "trainer.iterations=8",
        "trainer.threads=1",
    ],
    paper_precisions=["fp32"],
)


@dataclass
class StepResult:
    """One step of the check."""

    name: str
    title: str
    status: str = "pass"  # pass | fail | skip
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class StepFailed(Exception):
    """A step's check did not hold; the message says what."""


class Check:
    """Runs the steps in order; a step that fails or hangs does not stop the ones after it."""

    def __init__(self, sizes: Sizes, out: Path, store: Path, budget: float) -> None:
        self.sizes, self.out, self.store, self.budget = sizes, out, store, budget
        self.started = time.monotonic()
        self.results: list[StepResult] = []
        self.log = (out / "gpu-check.log").open("w")

    def left(self) -> float:
        """Seconds of the budget still left."""
        return self.budget - (time.monotonic() - self.started)

    def command(self, args: list[str], timeout: float | None = None) -> tuple[int, str, float]:
        """Run ``args`` (``python`` means this interpreter); return exit code, output and seconds."""
        if args[0] == "python":
            args = [sys.executable, *args[1:]]
        limit = max(10.0, min(timeout or self.left(), self.left() + 30))
        self.log.write(f"\n$ {' '.join(args)}\n")
        self.log.flush()
        start = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            code, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code = 124
            got = e.stdout or ""
            text = got.decode(errors="replace") if isinstance(got, bytes) else got
            text += f"\n(stopped after {limit:.0f} s)"
        seconds = time.monotonic() - start
        self.log.write(text + f"\n(exit {code}, {seconds:.1f} s)\n")
        self.log.flush()
        return code, text, seconds

    def degrade(self, args: list[str], timeout: float | None = None) -> tuple[str, float]:
        """``python -m degrade ARGS``; StepFailed with its last line when it does not exit 0."""
        code, text, seconds = self.command(["python", "-m", "degrade", *args], timeout)
        if code != 0:
            last = (text.strip().splitlines() or ["no output"])[-1]
            raise StepFailed(f"`degrade {' '.join(args[:3])} ...` exited {code}: {last}")
        return text, seconds

    def step(
        self, name: str, title: str, fn: Callable[[StepResult], None], min_left: float = 0.0
    ) -> StepResult:
        """Run one step, timed; print its pass/fail/skip line."""
        r = StepResult(name, title)
        start = time.monotonic()
        if self.left() < min_left:
            r.status, r.detail = "skip", f"out of the check's time budget ({self.budget:.0f} s)"
        else:
            try:
                fn(r)
            except StepFailed as e:
                r.status, r.detail = "fail", str(e)
            except Exception as e:  # noqa: BLE001 - a broken step must not hide the others
                r.status, r.detail = "fail", f"{e.__class__.__name__}: {e}"
        r.seconds = round(time.monotonic() - start, 1)
        self.results.append(r)
        print(f"[{r.status.upper():4}] {r.title} ({r.seconds:.0f} s): {r.detail}", flush=True)
        return r


# --------------------------------------------------------------------------- reading results


def read_runs(store: Path) -> pd.DataFrame:
    """Every metrics row of every run in ``store``."""
    frames = [pd.read_parquet(p) for p in sorted((store / "runs").glob("*/metrics.parquet"))]
    if not frames:
        raise StepFailed(f"no run wrote metrics into {store}")
    return pd.concat(frames, ignore_index=True)


def states(store: Path) -> dict[str, str]:
    """Each run's state from its status file."""
    return {
        p.parent.name: json.loads(p.read_text()).get("state", "?")
        for p in (store / "runs").glob("*/status.json")
    }


def all_done(store: Path, expected: int) -> None:
    """StepFailed unless ``expected`` runs are there and all done."""
    s = states(store)
    if len(s) != expected or set(s.values()) != {"done"}:
        raise StepFailed(f"expected {expected} runs done, found {sorted(s.values())}")


def steady(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of full epochs after the first (capture and warm-up happen in the first), with
    ``its``: the iterations each row's epoch trained."""
    rows = rows.sort_values(["run_id", "epoch"])
    its = rows.groupby("run_id")["iteration"].diff().fillna(rows["iteration"])
    full = its == its.groupby(rows["run_id"]).transform("max")
    return rows.assign(its=its)[(rows["epoch"] > 1) & full]


def compare_curves(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """The largest per-epoch differences between two runs' curves; StepFailed beyond tolerance."""
    a, b = a.sort_values("epoch").reset_index(drop=True), b.sort_values("epoch").reset_index(drop=True)
    if len(a) != len(b) or not (a["epoch"] == b["epoch"]).all():
        raise StepFailed(f"the runs recorded different epochs ({len(a)} vs {len(b)})")
    if not (a["scheduled_lr"] == b["scheduled_lr"]).all():
        raise StepFailed("the runs followed different learning-rate schedules")
    loss = ((a["train_loss"] - b["train_loss"]).abs() / b["train_loss"].abs()).max()
    error = (a["train_error"] - b["train_error"]).abs().max()
    test = ((a["test_loss"] - b["test_loss"]).abs() / b["test_loss"].abs()).max()
    diffs = {
        "max_train_loss_rel_diff": float(loss),
        "max_train_error_diff": float(error),
        "max_test_loss_rel_diff": float(test),
    }
    if not (loss <= LOSS_RTOL and error <= ERROR_ATOL):  # NaN fails too
        raise StepFailed(
            f"curves differ beyond tolerance: train loss {loss:.2%} "
            f"(tolerance {LOSS_RTOL:.0%}), train error {error:.3f} (tolerance {ERROR_ATOL})"
        )
    return diffs


def verdict_line(text: str) -> str:
    """The verdict `degrade sweep` prints after its table (joined again where the console wrapped it)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ends = [i for i, ln in enumerate(lines) if ln.startswith("└")]
    return " ".join(lines[ends[-1] + 1 :]) if ends else ""


# --------------------------------------------------------------------------- the steps


def cuda_tests(check: Check, r: StepResult) -> None:
    """The suite's CUDA tests; on the CPU, only that they are there to run."""
    pytest = ["python", "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    if check.sizes.device != "cuda":
        # Collecting the whole suite imports every test module (seconds on one core); the files
        # that use the marker hold every test it can select.
        marked = [
            str(p.relative_to(ROOT))
            for p in sorted((ROOT / "tests").glob("test_*.py"))
            if "mark.cuda" in p.read_text()
        ]
        pytest = [*pytest, "--collect-only", *marked]
    code, text, _ = check.command(pytest)
    tail = (text.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    r.data = {"summary": tail, **counts}
    if check.sizes.device != "cuda":
        collected = re.search(r"(\d+)(?:/\d+)? tests? collected", tail)
        found = int(collected.group(1)) if collected else 0
        if code != 0 or found == 0:
            raise StepFailed(f"the CUDA tests did not collect: {tail}")
        r.status, r.detail = "skip", f"needs CUDA; {found} CUDA tests collected ({tail})"
        return
    if code != 0 or counts.get("passed", 0) == 0 or counts.get("skipped", 0):
        raise StepFailed(tail or f"pytest exited {code}")
    r.detail = tail


def _twins(args: list[str]) -> int:
    """How many runs a sweep over ``--depths`` with both variants has."""
    return 2 * len(args[args.index("--depths") + 1].split(","))


def default_sweep(check: Check, r: StepResult) -> None:
    """The README's main job, on this device."""
    store = check.store / "default"
    text, seconds = check.degrade(
        ["sweep", *check.sizes.sweep_args, "--device", check.sizes.device, "--out", str(store)]
    )
    runs = _twins(check.sizes.sweep_args)
    all_done(store, runs)
    rows = read_runs(store)
    r.data = {
        "wall_seconds": round(seconds, 1),
        "verdict": verdict_line(text),
        "paths": sorted(rows["step_path"].unique()),
        "precisions": sorted(rows["precision"].unique()),
        "devices": sorted(rows["device"].unique()),
    }
    if set(rows["device"]) != {check.sizes.device}:
        raise StepFailed(f"runs trained on {r.data['devices']}, not {check.sizes.device}")
    r.detail = f"{runs} runs in {seconds:.0f} s; {r.data['verdict']}"


def graph_vs_eager(check: Check, r: StepResult) -> None:
    """One CIFAR-shaped run on each path, fp32, crossing both lr milestones: the same curve."""
    fast = "graph" if check.sizes.device == "cuda" else "eager"
    slow = "eager" if check.sizes.device == "cuda" else "exact"
    curves = {}
    for path in (fast, slow):
        store = check.store / f"path-{path}"
        check.degrade(
            [
                "sweep",
                *check.sizes.compare_args,
                f"trainer.path={path}",
                "--device",
                check.sizes.device,
                "--out",
                str(store),
            ]
        )
        all_done(store, 1)
        curves[path] = read_runs(store)
        if set(curves[path]["step_path"]) != {path}:
            raise StepFailed(f"the {path} run recorded path(s) {sorted(set(curves[path]['step_path']))}")
    lrs = curves[fast]["scheduled_lr"].round(8).unique()
    if len(lrs) < 3:
        raise StepFailed(f"the run crossed too few lr milestones to test the schedule: {sorted(lrs)}")
    r.data = {
        "paths": [fast, slow],
        "epochs": len(curves[fast]),
        "lrs": sorted(float(v) for v in lrs),
        **compare_curves(curves[fast], curves[slow]),
    }
    r.detail = (
        f"{fast} vs {slow}: train loss within {r.data['max_train_loss_rel_diff']:.2e} relative, "
        f"train error within {r.data['max_train_error_diff']:.3f} over {r.data['epochs']} epochs "
        f"(tolerance {LOSS_RTOL:.0%}, {ERROR_ATOL})"
    )
    if check.sizes.device != "cuda":
        r.status, r.detail = "skip", f"graph needs CUDA; compared exact vs eager instead: {r.detail}"


def _window(rows: pd.DataFrame) -> float:
    """Wall seconds from the first start to the last end of ``rows``' epochs."""
    return float(rows["ended"].max() - (rows["ended"] - rows["epoch_seconds"]).min())


def _aggregate_img_s(rows: pd.DataFrame, batch: int, together: bool) -> float:
    """Training images per second of a sweep's runs in their steady epochs.

    Apart, the runs follow each other: their epochs' seconds add up (the set-up between runs
    is left out). Together they overlap: the window from the first steady epoch's start to the
    last one's end.
    """
    rows = steady(rows)
    window = _window(rows) if together else float(rows["epoch_seconds"].sum())
    return float(rows["its"].sum() * batch / window)


def together_vs_apart(check: Check, r: StepResult) -> None:
    """The same runs trained together in one process and one after another: same results, img/s."""
    n = check.sizes.together_runs
    seeds = ",".join(str(s) for s in range(n))
    batch = _batch(check.sizes.together_args)
    got = {}
    for mode, extra in (("together", ["--together", str(n)]), ("apart", ["hydra/launcher=basic"])):
        store = check.store / f"runs-{mode}"
        _, seconds = check.degrade(
            [
                "sweep",
                *check.sizes.together_args,
                "--seeds",
                seeds,
                *extra,
                "--device",
                check.sizes.device,
                "--out",
                str(store),
            ]
        )
        all_done(store, n)
        rows = read_runs(store)
        got[mode] = rows
        r.data[f"{mode}_wall_seconds"] = round(seconds, 1)
        r.data[f"{mode}_img_s"] = round(_aggregate_img_s(rows, batch, mode == "together"), 1)
    worst: dict[str, float] = {}
    for rid, a in got["together"].groupby("run_id"):
        b = got["apart"][got["apart"]["run_id"] == rid]
        if b.empty:
            raise StepFailed(f"run {rid} trained together has no twin trained apart (different run ids)")
        for k, v in compare_curves(a, b).items():
            worst[k] = max(worst.get(k, 0.0), v)
    r.data.update(
        worst,
        runs=n,
        precision=str(got["together"]["precision"].iloc[0]),
        path=str(got["together"]["step_path"].iloc[-1]),
    )
    gain = r.data["together_img_s"] / r.data["apart_img_s"]
    r.detail = (
        f"{n} runs: {r.data['together_img_s']:,.0f} img/s together vs {r.data['apart_img_s']:,.0f} "
        f"apart ({gain:.2f}x); wall {r.data['together_wall_seconds']:.0f} s vs "
        f"{r.data['apart_wall_seconds']:.0f} s; results within "
        f"{worst['max_train_loss_rel_diff']:.2e} relative train loss"
    )


def _batch(args: list[str]) -> int:
    for a in args:
        if a.startswith("trainer.batch_size="):
            return int(a.split("=", 1)[1])
    return 128


def bench(check: Check, r: StepResult) -> None:
    """`degrade bench --concurrent --json`: the Performance table's numbers for this device."""
    text, _ = check.degrade(["bench", *check.sizes.bench_args, "--device", check.sizes.device, "--json"])
    rows = json.loads(text[text.index("[") : text.rindex("]") + 1])
    r.data = {"rows": rows}
    parts = []
    for row in rows:
        parts.append(
            f"{row['model']} {row['path']} {row['precision']}: "
            f"{row['degrade_img_s_median']:,.0f} img/s "
            f"({row['speedup_median']:.2f}x the reference), "
            f"{row['sweep_runs']} together {row['sweep_img_s_median']:,.0f}"
        )
    r.detail = "; ".join(parts)


def paper_projection(rows: pd.DataFrame, batch: int = 128) -> dict[str, float]:
    """Projected wall time of the full paper preset from a slice whose runs trained together.

    Work is counted in depth-iterations (a step's cost grows with the net's depth): the slice's
    steady epochs did so many in their wall-clock window (evaluation included), and the whole
    preset's nine runs, trained together at that rate, take their work over it. Never less than
    ResNet-110 alone at the per-run rate the slice's deepest run had.
    """
    rows = steady(rows)
    if rows.empty:
        raise StepFailed("the slice has no steady epochs to measure (too few iterations?)")
    done = float((rows["depth"] * rows["its"]).sum())
    together = done / _window(rows)
    deepest = rows[rows["depth"] == rows["depth"].max()]
    one_run = float((deepest["depth"] * deepest["its"]).sum() / deepest["epoch_seconds"].sum())
    work = sum(d for d, _ in PAPER_RUNS) * PAPER_ITERATIONS
    alone_110 = PAPER_ITERATIONS * 110 / one_run
    return {
        "slice_img_s": round(float(rows["its"].sum()) * batch / _window(rows), 1),
        "depth_iterations_per_s": round(together, 1),
        "projected_minutes": round(max(work / together, alone_110) / 60, 1),
        "resnet110_alone_minutes": round(alone_110 / 60, 1),
    }


def paper_slice(check: Check, r: StepResult) -> None:
    """A slice of `experiment=he2016_cifar10` on synthetic CIFAR-shaped data, all its runs together."""
    n = _twins(check.sizes.paper_args)
    for precision in check.sizes.paper_precisions:
        if precision != check.sizes.paper_precisions[0] and check.left() < 120:
            r.data[precision] = "skipped: out of the check's time budget"
            continue
        store = check.store / f"paper-{precision}"
        _, seconds = check.degrade(
            [
                "sweep",
                "experiment=he2016_cifar10",
                *check.sizes.paper_args,
                f"trainer.precision={precision}",
                "--together",
                str(n),
                "--device",
                check.sizes.device,
                "--out",
                str(store),
            ]
        )
        all_done(store, n)
        rows = read_runs(store)
        got = paper_projection(rows)
        got.update(
            wall_seconds=round(seconds, 1),
            precision=str(rows["precision"].iloc[0]),
            iterations=int(rows["iteration"].max()),
            runs=n,
        )
        r.data[precision] = got
    first = r.data[check.sizes.paper_precisions[0]]
    parts = [
        f"{v['precision']}: {v['slice_img_s']:,.0f} img/s with {v['runs']} together, full preset "
        f"~{v['projected_minutes']:.0f} min"
        for v in r.data.values()
        if isinstance(v, dict)
    ]
    r.detail = "; ".join(parts)
    if check.sizes.device != "cuda":
        r.detail += " (a CPU projection, for the rehearsal only)"
    r.data["projected_minutes"] = first["projected_minutes"]


# --------------------------------------------------------------------------- targets and report


def targets(results: dict[str, StepResult]) -> list[dict[str, Any]]:
    """The GPU targets against what the steps measured (only meaningful on CUDA)."""
    out = []
    empty = StepResult("", "")
    rows = {row["model"]: row for row in results.get("bench", empty).data.get("rows", [])}
    r56 = rows.get("resnet56")
    if r56:
        out.append(
            {
                "what": "ResNet-56, one run on the graph path, img/s",
                "target": TARGET_GRAPH_RESNET56,
                "measured": r56["degrade_img_s_median"],
                "path": r56["path"],
            }
        )
        if r56.get("sweep_img_s_median"):
            out.append(
                {
                    "what": f"ResNet-56, {r56['sweep_runs']} runs together, img/s",
                    "target": TARGET_TOGETHER_RESNET56,
                    "measured": r56["sweep_img_s_median"],
                }
            )
    proj = results.get("paper", empty).data.get("projected_minutes")
    if proj is not None:
        out.append(
            {
                "what": "full paper preset (fp32), projected minutes",
                "target": TARGET_PAPER_MINUTES,
                "measured": proj,
                "lower_is_better": True,
            }
        )
    for t in out:
        better = t["measured"] <= t["target"] if t.get("lower_is_better") else t["measured"] >= t["target"]
        t["met"] = bool(better) and not math.isnan(t["measured"])
    return out


def environment(device: str) -> dict[str, Any]:
    """What this check ran on."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_cores": os.cpu_count(),
        "mode": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return env


Step = tuple[str, str, Callable[[Check, StepResult], None], float]


def steps(sizes: Sizes) -> list[Step]:
    """The check's steps in order: name, title, what it does, and the seconds of the budget it
    needs left to start."""
    cuda = sizes.device == "cuda"
    return [
        ("cuda_tests", "1. CUDA tests (pytest -m cuda)", cuda_tests, 0),
        ("default_sweep", f"2. default sweep on {sizes.device}", default_sweep, 30),
        ("graph_vs_eager", "3. graph vs eager, CIFAR-shaped, milestones crossed", graph_vs_eager, 30),
        ("together", f"4. --together {sizes.together_runs} vs one at a time", together_vs_apart, 60),
        # The fp32 slice took longer than 90 s on an H200: start it only with room to finish.
        ("paper", "5. paper preset slice and projection", paper_slice, 150 if cuda else 0),
        ("bench", "6. degrade bench --concurrent", bench, 60),
    ]


STEP_NAMES = [name for name, *_ in steps(CPU)]


def main(argv: list[str] | None = None) -> int:
    """Run every step; write the JSON and the log; 0 when no step failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="the rehearsal: toy sizes on the CPU")
    ap.add_argument(
        "--out", help="where gpu-check.json and gpu-check.log go (default $OUT, else outputs/gpu-check)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds the whole check may take; steps that no longer fit are skipped "
        "(default 480 on CUDA, 600 on the CPU)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch run store")
    ap.add_argument(
        "--only",
        help="comma list of steps to run (e.g. together,paper to rerun what failed): "
        + ", ".join(STEP_NAMES),
    )
    args = ap.parse_args(argv)
    only = [n.strip() for n in (args.only or ",".join(STEP_NAMES)).split(",") if n.strip()]
    if set(only) - set(STEP_NAMES):
        ap.error(f"unknown step(s) {', '.join(sorted(set(only) - set(STEP_NAMES)))}")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; run with --cpu for the rehearsal", file=sys.stderr)
        return 2
    sizes = CPU if args.cpu else CUDA
    out = Path(args.out or os.environ.get("OUT") or ROOT / "outputs" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="degrade-gpu-check-"))
    check = Check(sizes, out, store, args.budget or (480.0 if sizes.device == "cuda" else 600.0))
    env = environment(sizes.device)
    print(f"degrade GPU check ({'CPU rehearsal' if args.cpu else 'CUDA'}): {json.dumps(env)}", flush=True)
    report = write_report(check, env)
    try:
        for name, title, fn, min_left in (s for s in steps(sizes) if s[0] in only):
            check.step(name, title, lambda r, fn=fn: fn(check, r), min_left)
            report = write_report(check, env)  # after every step: a check cut short still leaves its results
    finally:
        check.log.close()
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
    for t in report["targets"] if sizes.device == "cuda" else []:
        print(
            f"[{'MET' if t['met'] else 'MISS'}] target {t['what']}: {t['measured']:,.1f} "
            f"(target {t['target']:,.0f})",
            flush=True,
        )
    failed = report["failed"]
    print(
        f"{'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)} in {report['seconds']:.0f} s; "
        f"details in {out / 'gpu-check.json'}",
        flush=True,
    )
    return 0 if not failed else 1


def write_report(check: Check, env: dict[str, Any]) -> dict[str, Any]:
    """Write gpu-check.json with the steps so far; return what it holds."""
    failed = [r.name for r in check.results if r.status == "fail"]
    report = {
        "environment": env,
        "seconds": round(time.monotonic() - check.started, 1),
        "passed": not failed,
        "failed": failed,
        "steps": [asdict(r) for r in check.results],
        # On the CPU only to rehearse the arithmetic: the targets are a GPU's.
        "targets": targets({r.name: r for r in check.results}),
    }
    tmp = check.out / "gpu-check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(check.out / "gpu-check.json")
    return report


if __name__ == "__main__":
    sys.exit(main())
