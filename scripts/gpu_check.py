"""What ``scripts/gpu-check`` runs: the GPU tests, the debug pipeline on the GPU, and the two benchmarks on the GPU
(at precision 32 and bf16-mixed) and on 2 CPU threads, each alone and one after another; then one table of seconds
per epoch, speed-ups over the 2 CPU threads, peak GPU memory and the bf16-mixed against fp32 test-metric difference.

It runs where no ``.venv`` is: with the machine's own Python and PyTorch, the wheels and data of ``.gpu-kit/``
(made by ``scripts/gpu-kit``) installed into the run folder, and this project's ``src/`` on PYTHONPATH. What the kit
left out (the MiniLM weights, SDV, WeasyPrint) turns into rows marked skipped, with the reason.

Every step has a timeout and the whole check a time limit; a step that fails or runs out of time is a row of the
table and the check goes on, exiting 1 at the end. Every number comes from the run folders the commands write
(metrics.json, tables/*.csv) and from the wall clock around each command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / ".gpu-kit"
CPU_THREADS = 2

PROBE = r"""
import json, sys
import torch
from medassist.train.device import precision_refusal, resolve_device

def missing(module):
    try:
        __import__(module)
        return ""
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

info = {"python": sys.version.split()[0], "torch": torch.__version__}
try:
    device = resolve_device(sys.argv[1])
    info["device"] = str(device)
    info["name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    info["bf16"] = precision_refusal(device, "bf16-mixed")
except Exception as exc:
    info["device_error"] = str(exc)
try:
    from medassist.text import minilm_dir
    minilm_dir()
    info["minilm"] = ""
except Exception as exc:
    info["minilm"] = str(exc)
info["sdv"] = missing("sdv.single_table")
info["weasyprint"] = missing("weasyprint")
print("PROBE " + json.dumps(info))
"""
"""Run with the check's interpreter and environment: what that machine offers (the device, bf16, the optional
packages and weights), so that the steps are chosen from what is there rather than from this process."""


@dataclass
class Outcome:
    """How one command ended: ``ok``, ``failed`` (with its exit status), ``timed out`` or ``not run``."""

    status: str
    seconds: float
    log: Path
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Clock:
    """The check's time limit: each step gets its own timeout, cut to what is left of the limit."""

    limit: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.limit - (time.perf_counter() - self.start)

    def timeout(self, wanted: float) -> float:
        return min(wanted, self.left())


def run(argv: list[str], log: Path, timeout: float, env: dict[str, str]) -> Outcome:
    """Run ``argv`` alone in its own process group, its output to ``log``; kill the group at ``timeout``."""
    if timeout < 5:
        log.write_text("not run: the check's time limit was spent\n")
        return Outcome("not run", 0.0, log, "the check's --time-limit was spent before this step")
    t0 = time.perf_counter()
    with log.open("w") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Outcome("timed out", time.perf_counter() - t0, log, f"killed after {timeout:.0f} s; see {log}")
    wall = time.perf_counter() - t0
    if rc != 0:
        return Outcome(f"failed ({rc})", wall, log, f"{last_line(log)}; see {log}")
    return Outcome("ok", wall, log)


def last_line(log: Path) -> str:
    """The last line of ``log`` that says something (an error message, usually)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def in_project_venv() -> bool:
    """True when this interpreter is the repository's ``.venv`` (which holds every dependency already)."""
    return Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


def environment(
    kit: Path, out: Path, clock: Clock, install: str = "auto"
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The environment of every command, and a table row for the kit's installation (where one was needed).

    Outside the project's ``.venv``, the kit's wheels are installed into ``out/kit-site`` (``--no-index
    --no-deps``: the machine's own PyTorch and NumPy stay), and that folder, the kit's stand-in for the
    torchxrayvision data folder and ``src/`` go first on PYTHONPATH. ``MEDASSIST_DATA_DIR`` defaults to the kit's
    data. ``install`` is ``auto`` (as above), ``yes`` (also inside the ``.venv``: a check of the kit) or ``no``.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    rows: list[dict[str, Any]] = []
    if not env.get("MEDASSIST_DATA_DIR") and (kit / "data").is_dir():
        env["MEDASSIST_DATA_DIR"] = str(kit / "data")
    if install == "no" or (install == "auto" and in_project_venv()):
        return env, rows
    paths = [str(ROOT / "src")]
    wheels = sorted((kit / "wheels").glob("*.whl"))
    if wheels:
        site = out / "kit-site"
        pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--quiet"]
        pip += ["--disable-pip-version-check", "--target", str(site), *map(str, wheels)]
        done = run(pip, out / "kit-install.log", clock.timeout(120), env)
        note = f"{len(wheels)} wheels from {kit.name}/wheels into {site}" if done.ok else done.note
        rows.append(row("install the kit (pip --no-index --no-deps)", "—", "—", done, note=note))
        paths = [str(site), str(kit / "site"), *paths]
    elif (kit / "site").is_dir():
        paths = [str(kit / "site"), *paths]
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH", "")])])
    return env, rows


def probe(device: str, env: dict[str, str], out: Path, clock: Clock) -> tuple[dict[str, Any], Outcome]:
    """What the check's interpreter finds on this machine (see :data:`PROBE`)."""
    done = run([sys.executable, "-c", PROBE, device], out / "probe.log", clock.timeout(120), env)
    found = [ln for ln in out.joinpath("probe.log").read_text().splitlines() if ln.startswith("PROBE ")]
    info = json.loads(found[-1].removeprefix("PROBE ")) if found else {}
    return info, done


def row(check: str, device: str, precision: str, done: Outcome | None = None, **values: Any) -> dict[str, Any]:
    """One row of the table; ``done`` gives its status and wall time (a row without one was skipped)."""
    status = done.status if done is not None else "skipped"
    note = values.pop("note", "") or (done.note if done is not None else "")
    seconds = done.seconds if done is not None and done.status != "not run" else None
    head = {"check": check, "device": device, "precision": precision, "status": status, "wall_s": seconds}
    return head | values | {"note": note}


def skipped(check: str, device: str, precision: str, reason: str) -> dict[str, Any]:
    return row(check, device, precision, note=f"skipped: {reason}")


def gpu_test_files() -> list[str]:
    """The test files holding ``gpu``-marked tests: collecting only them keeps the run free of the imports of
    tests that the GPU machine cannot satisfy (playwright, schemathesis, ...)."""
    files = [p for p in sorted((ROOT / "tests").rglob("test_*.py")) if "pytest.mark.gpu" in p.read_text()]
    return [str(p.relative_to(ROOT)) for p in files]


def newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {folder}")
    return found[-1]


def pipeline_parts(probe_info: dict[str, Any]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The debug profile's parts this machine can run, the options that replace what it lacks, and skipped rows."""
    import yaml

    parts = list(yaml.safe_load((ROOT / "src/medassist/configs/all/debug.yaml").read_text())["parts"])
    options: list[str] = []
    rows: list[dict[str, Any]] = []
    if probe_info.get("sdv") and "synth_records" in parts:
        parts.remove("synth_records")
        rows.append(
            skipped(
                "medassist all: synth_records part",
                "—",
                "—",
                f"SDV is not installed ({probe_info['sdv']}); the kit leaves it out (about 47 MB with PadChest), "
                "and its Gaussian copula runs on the CPU whatever --device says",
            )
        )
    if probe_info.get("minilm"):
        options += ["--set", "text.transformer=transformer_small", "--set", "text.frozen_encoder=false"]
        rows.append(
            skipped(
                "medassist all: MiniLM in the text part",
                "—",
                "—",
                "the all-MiniLM-L6-v2 weights are not installed (88 MB, over the kit's limit): the text part trains "
                "the from-scratch transformer_small instead",
            )
        )
    if probe_info.get("weasyprint"):
        options += ["--no-pdf"]
        rows.append(
            skipped("medassist all: report.pdf", "—", "—", f"WeasyPrint is missing ({probe_info['weasyprint']})")
        )
    return parts, options, rows


def check_pipeline(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    """The debug pipeline on the device: its wall time, peak GPU memory and the parts that did not complete."""
    parts, options, rows = pipeline_parts(ctx.probe)
    if args.quick:  # the CPU check: the pipeline's machinery on its smallest part
        parts, options = ["image"], [*options, "--set", "image.transfer=[]"]
    folder = ctx.out / "all"
    argv = [*ctx.medassist, "all", "--profile", "debug", "--out", str(folder), *ctx.flags(args.device, "32")]
    argv += ["--set", f"parts=[{','.join(parts)}]", *options]
    done = run(argv, ctx.out / "all.log", ctx.clock.timeout(args.pipeline_timeout), ctx.env)
    peak, note = None, f"parts: {', '.join(parts)}"
    pipeline = next(iter(folder.glob("all-*/pipeline.json")), None)
    if pipeline is not None:
        state = json.loads(pipeline.read_text()).get("parts", {})
        bad = [
            f"{n} ({': '.join(filter(None, [p.get('status'), p.get('error', '')[:120]]))})"
            for n, p in state.items()
            if p.get("status") != "complete"
        ]
        note = "; ".join([note, *(["did not complete: " + ", ".join(bad)] if bad else [])])
        accel = [json.loads(m.read_text()).get("accelerator", {}) for m in folder.glob("all-*/*/*/metrics.json")]
        peak = max((a.get("peak_gpu_memory_gb") or 0.0 for a in accel), default=0.0) or None
    if not done.ok:
        note = f"{note}; {done.note}"
    rows.insert(0, row("medassist all --profile debug", args.device, "32", done, peak_gpu_gb=peak, note=note))
    return rows


@dataclass
class Context:
    """What every step shares: the interpreter's command, the environment, the run folder, the clock, the probe."""

    out: Path
    env: dict[str, str]
    clock: Clock
    probe: dict[str, Any]
    medassist: list[str] = field(default_factory=lambda: [sys.executable, "-m", "medassist"])

    @staticmethod
    def flags(device: str, precision: str) -> list[str]:
        return ["--device", device, "--precision", precision, "--progress", "false"]


@dataclass
class Arm:
    """One measurement of a benchmark: where it runs, at which precision, on how many CPU threads (0 = all)."""

    label: str
    device: str
    precision: str
    threads: int = 0

    @property
    def key(self) -> str:
        return f"{self.label}-{self.precision}".replace(" ", "").replace("(", "").replace(")", "")


def arms(args: argparse.Namespace, ctx: Context) -> tuple[list[Arm], list[tuple[Arm, str]]]:
    """The device at 32 and bf16-mixed, and the CPU on ``--cpu-threads`` threads at 32; the arms that cannot run,
    with the reason."""
    device = args.device
    run_here = [Arm(device, device, "32")]
    skip: list[tuple[Arm, str]] = []
    bf16 = Arm(device, device, "bf16-mixed")
    if not device.startswith("cuda"):
        skip.append((bf16, f"bf16-mixed is compared with fp32 on CUDA only (--device {device})"))
    elif ctx.probe.get("bf16"):
        skip.append((bf16, ctx.probe["bf16"]))
    else:
        run_here.append(bf16)
    run_here.append(Arm(f"cpu ({args.cpu_threads} threads)", "cpu", "32", args.cpu_threads))
    return run_here, skip


def check_medmnist(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    """bench medmnist, the reference protocol (ResNet-18) for a fixed number of epochs with no time budget, so that
    seconds per epoch compare like with like; the CPU arm runs fewer epochs (an epoch there takes half a minute).
    ``--quick`` cuts each arm to a 5-second budget (its one epoch then stops early: a check of the machinery)."""
    run_here, skip = arms(args, ctx)
    check = f"bench medmnist ({args.medmnist_dataset}, ResNet-18 reference)"
    rows: list[dict[str, Any]] = []
    for arm in run_here:
        epochs = args.cpu_epochs if arm.device == "cpu" and arm.threads else args.epochs
        folder = ctx.out / f"medmnist-{arm.key}"
        budget = "5" if args.quick else "100000"
        argv = [*ctx.medassist, "bench", "medmnist", "--seeds", "0", "--methods", "reference", "--budget", budget]
        argv += ["--datasets", args.medmnist_dataset, "--set", f"reference.epochs={epochs}", "--out", str(folder)]
        argv += ctx.flags(arm.device, arm.precision)
        argv += ["--set", f"reference.threads={arm.threads}"] if arm.threads else []
        done = run(argv, ctx.out / f"medmnist-{arm.key}.log", ctx.clock.timeout(args.step_timeout), ctx.env)
        cut = "; the 5 s budget of --quick cuts the epoch" if args.quick else ""
        values: dict[str, Any] = {"note": f"{epochs} epoch(s), test AUC{cut}"}
        if done.ok:
            try:
                r = json.loads(newest(folder, "bench-medmnist-*").joinpath("metrics.json").read_text())["runs"][0]
                values |= {
                    "s_per_epoch": r["train_time_s"] / r["epochs_run"],
                    "peak_gpu_gb": _number(r.get("peak_gpu_memory_mb"), 1 / 1024),
                    "test_metric": r["test_auc"],
                }
            except (OSError, KeyError, IndexError, ValueError) as exc:
                done = Outcome("failed", done.seconds, done.log, f"no result in {folder}: {exc}")
        if not done.ok:
            values["note"] = done.note
        rows.append(row(check, arm.label, arm.precision, done, **values))
    compare(rows, run_here)
    rows += [skipped(check, arm.label, arm.precision, why) for arm, why in skip]
    return rows


def compare(rows: list[dict[str, Any]], measured: list[Arm]) -> None:
    """Fill in the speed-up over the CPU arm and the bf16-mixed against fp32 test-metric difference (in place)."""
    by = {(a.device, a.precision, a.threads): r for a, r in zip(measured, rows, strict=True)}
    cpu = next((r for (d, _, t), r in by.items() if d == "cpu" and t), None)
    base = cpu.get("s_per_epoch") if cpu else None
    for (device, precision, threads), r in by.items():
        if base and r.get("s_per_epoch") and not (device == "cpu" and threads):
            r["speed_up_x"] = base / r["s_per_epoch"]
        if precision == "bf16-mixed":
            fp32 = by.get((device, "32", threads), {}).get("test_metric")
            if fp32 is not None and r.get("test_metric") is not None:
                r["bf16_minus_fp32"] = r["test_metric"] - fp32


def check_text(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    """bench text on the device (fp32 and bf16-mixed in one run) and on the CPU threads: seconds per epoch of its
    bucketed batches (training reports / reports per second), peak GPU memory and the test macro-AUC. MiniLM where
    its weights are installed, else the from-scratch Transformer."""
    model = "transformer_small" if ctx.probe.get("minilm") or args.quick else "minilm"
    check = f"bench text ({model}, {'debug profile' if args.quick else '512 reports'})"
    run_here, skip = arms(args, ctx)
    rows: list[dict[str, Any]] = []
    if model != "minilm" and not args.quick:
        why = f"the all-MiniLM-L6-v2 weights are not installed ({ctx.probe['minilm'][:90]})"
        rows.append(skipped("bench text (minilm)", args.device, "32", f"{why}; transformer_small measured instead"))
    measured: list[Arm] = []
    measured_rows: list[dict[str, Any]] = []
    for where, wanted in (
        ("device", [a for a in run_here if not a.threads]),
        ("cpu", [a for a in run_here if a.threads]),
    ):
        folder = ctx.out / f"text-{where}"
        argv = [*ctx.medassist, "bench", "text", "--models", model, "--out", str(folder)]
        argv += ["--profile", "debug"] if args.quick else []
        if where == "cpu":
            argv += [*ctx.flags("cpu", "32"), "--threads", str(args.cpu_threads), "--no-bf16"]
        else:
            argv += [*ctx.flags(args.device, "32"), "--bf16", "true" if len(wanted) > 1 else "false"]
        done = run(argv, ctx.out / f"text-{where}.log", ctx.clock.timeout(args.step_timeout), ctx.env)
        speed: dict[str, dict[str, Any]] = {}
        if done.ok:
            try:
                speed = read_text_speed(newest(folder, "bench-text-*"))
            except (OSError, KeyError, ValueError) as exc:
                done = Outcome("failed", done.seconds, done.log, f"no result in {folder}: {exc}")
        for arm in wanted:
            arm_done = done
            if done.ok and arm.precision not in speed:
                arm_done = Outcome("failed", done.seconds, done.log, f"no {arm.precision} row in {folder}")
            note = "bucketed batches; test macro-AUC after the timed epochs" if arm_done.ok else arm_done.note
            values = speed.get(arm.precision, {})
            measured_rows.append(row(check, arm.label, arm.precision, arm_done, **values, note=note))
            measured.append(arm)
    compare(measured_rows, measured)
    return rows + measured_rows + [skipped(check, arm.label, arm.precision, why) for arm, why in skip]


def read_text_speed(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per precision, the bucketed row of a bench text run: seconds per epoch, peak GPU memory, test macro-AUC."""
    import pandas as pd
    import yaml

    n_reports = yaml.safe_load((run_dir / "config.yaml").read_text())["n_reports"]
    df = pd.read_csv(run_dir / "tables" / "speed.csv")
    out = {}
    for _, r in df[df.batches.str.startswith("bucketed")].iterrows():
        out[str(r.precision)] = {
            "s_per_epoch": n_reports / r.train_reports_per_s,
            "peak_gpu_gb": _number(r.get("peak_gpu_memory_mb"), 1 / 1024),
            "test_metric": _number(r.get("test_macro_auc")),
        }
    return out


def _number(x: Any, scale: float = 1.0) -> float | None:
    """``x * scale``, or None for a missing value (None or NaN)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x) * scale


def check_gpu_tests(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    """The ``gpu``-marked tests, on a CUDA device only."""
    files = gpu_test_files()
    check = f"pytest -m gpu ({', '.join(files)})"
    if not args.device.startswith("cuda"):
        return [skipped(check, args.device, "—", f"the gpu tests need CUDA (--device {args.device})")]
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    done = run(argv, ctx.out / "pytest-gpu.log", ctx.clock.timeout(args.tests_timeout), ctx.env)
    note = last_line(done.log).strip("= ") if done.status != "not run" else done.note
    return [row(check, args.device, "—", done, note=note if done.ok else f"{note}; see {done.log}")]


def table(rows: list[dict[str, Any]]) -> str:
    """The one table, every number formatted for its kind (medassist's own formatting)."""
    import pandas as pd

    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from medassist.utils.format import readable_table

    columns = ["check", "device", "precision", "status", "wall_s", "s_per_epoch", "speed_up_x", "peak_gpu_gb"]
    columns += ["test_metric", "bf16_minus_fp32", "note"]
    frame = pd.DataFrame(rows).reindex(columns=columns)
    kinds = {"wall_s": "seconds", "s_per_epoch": "quantity", "speed_up_x": "ratio", "peak_gpu_gb": "quantity"}
    kinds |= {"test_metric": "metric", "bf16_minus_fp32": "delta"}
    headers = {
        "wall_s": "wall (s)",
        "s_per_epoch": "s per epoch",
        "speed_up_x": f"speed-up over {CPU_THREADS} CPU threads",
    }
    headers |= {"peak_gpu_gb": "peak GPU (GB)", "test_metric": "test metric", "bf16_minus_fp32": "bf16 − fp32"}
    return readable_table(frame, kinds=kinds, headers=headers, max_columns=None)


def failed(rows: list[dict[str, Any]]) -> list[str]:
    """The checks that did not end well (failed, timed out or not run for lack of time); skipped ones are not."""
    return [
        f"{r['check']} on {r['device']} at {r['precision']}: {r['status']}"
        for r in rows
        if r["status"] not in ("ok", "skipped")
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="the accelerator measured (default: cuda)")
    p.add_argument("--cpu-threads", type=int, default=CPU_THREADS, help="CPU threads of the CPU arm (default: 2)")
    p.add_argument("--out", default="runs/gpu-check", help="where the run folders go (default: runs/gpu-check)")
    p.add_argument("--kit", default=str(KIT), help="the folder made by scripts/gpu-kit (default: .gpu-kit)")
    p.add_argument(
        "--install-kit",
        choices=["auto", "yes", "no"],
        default="auto",
        help="install the kit's wheels: auto (only outside the project's .venv), yes or no (default: auto)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes everywhere: a check of the machinery")
    p.add_argument("--time-limit", type=float, default=450.0, help="seconds for all steps together (default: 450)")
    p.add_argument("--medmnist-dataset", default="breastmnist", help="bench medmnist's data set (default: breastmnist)")
    p.add_argument("--epochs", type=int, default=10, help="bench medmnist epochs on the device (default: 10)")
    p.add_argument("--cpu-epochs", type=int, default=1, help="bench medmnist epochs on the CPU threads (default: 1)")
    p.add_argument("--step-timeout", type=float, default=120.0, help="seconds per benchmark run (default: 120)")
    p.add_argument("--tests-timeout", type=float, default=150.0, help="seconds for the gpu tests (default: 150)")
    p.add_argument("--pipeline-timeout", type=float, default=300.0, help="seconds for the pipeline (default: 300)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    clock = Clock(args.time_limit)
    out = Path(args.out).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    env, rows = environment(Path(args.kit), out, clock, args.install_kit)
    info, done = probe(args.device, env, out, clock)
    where = f"{info.get('name', '?')}, torch {info.get('torch', '?')}, Python {info.get('python', '?')}"
    rows.append(row("what this machine offers", args.device, "—", done, note=where if done.ok else done.note))
    if not done.ok or info.get("device_error"):
        rows[-1]["status"] = "failed" if done.ok else rows[-1]["status"]
        rows[-1]["note"] = info.get("device_error") or rows[-1]["note"]
    else:
        ctx = Context(out, env, clock, info)
        for step in (check_gpu_tests, check_medmnist, check_text, check_pipeline):
            rows += step(args, ctx)
    print(table(rows))
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "gpu-check.csv", index=False)
    print(f"\nrun folders and logs: {out}")
    bad = failed(rows)
    if bad:
        print("did not pass:\n  " + "\n  ".join(bad), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
