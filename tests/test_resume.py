"""Resume: a run continues under the configuration it was started with, and gives the numbers of an uninterrupted
run (training killed mid-epoch, a finished unit reused, the whole study killed with SIGKILL and resumed)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers import blobs
from medassist.cli import main
from medassist.config import TrainConfig, config_differences, to_dict
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.run import Run
from medassist.train import fit

TRAIN, VAL = blobs(128, seed=1), blobs(64, seed=2)


# --- fit(): killed after epoch k, resumed from its checkpoint ---------------------------------------------------------


class _Killed(Exception):
    """Stands for SIGKILL: the process dies mid-epoch, after the last checkpoint."""


def _step(kill_after: int | None = None):
    """The default multi-class step, plus draws from NumPy's and Python's global generators (as a study's own step
    might make), so that a resume which forgot either state would give other numbers."""
    calls = 0

    def step(model, inputs, y):
        nonlocal calls
        calls += 1
        if kill_after is not None and calls > kill_after:
            raise _Killed
        logits = model(*inputs)
        noise = 1.0 + 1e-2 * (np.random.rand() - 0.5) + 1e-2 * (random.random() - 0.5)
        return F.cross_entropy(logits, y) * noise, logits

    return step


def _dropout_model(init_seed: int) -> torch.nn.Module:
    torch.manual_seed(init_seed)
    return create_model("cnn_gap", num_classes=2, in_channels=1, width=8, dropout=0.3)


def _checkpoint_states(path: Path) -> tuple[dict, dict]:
    state = torch.load(path, weights_only=False)
    return state["model"], state["optimizer"]


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "cfg,killed_in_epoch",
    [
        (TrainConfig(epochs=3, batch_size=32, augment=True, seed=5, optimizer="adamw", weight_decay=1e-3), 2),
        (TrainConfig(epochs=3, batch_size=32, augment=True, seed=6, scheduler="onecycle", lr=3e-3), 3),
        (
            TrainConfig(
                epochs=3,
                batch_size=32,
                augment=True,
                seed=7,
                scheduler="cosine",
                time_budget=3600.0,
                budget_schedule=True,
                optimizer="sgd",
                lr=1e-2,
                monitor="val_loss",
            ),
            2,
        ),
    ],
    ids=["adamw", "onecycle", "paced-cosine"],
)
def test_fit_killed_mid_epoch_resumes_bit_identical(tmp_path: Path, cfg: TrainConfig, killed_in_epoch: int) -> None:
    steps = math.ceil(len(TRAIN) / cfg.batch_size)
    ref_model = _dropout_model(0)
    ref = fit(
        ref_model, TRAIN, VAL, cfg, num_classes=2, progress=False, checkpoint=tmp_path / "ref.pt", step_fn=_step()
    )

    ckpt = tmp_path / "run.pt"
    with pytest.raises(_Killed):  # dies in the middle of epoch `killed_in_epoch`, after that epoch's 2nd step
        fit(
            _dropout_model(0),
            TRAIN,
            VAL,
            cfg,
            num_classes=2,
            progress=False,
            checkpoint=ckpt,
            step_fn=_step(kill_after=(killed_in_epoch - 1) * steps + 2),
        )
    assert torch.load(ckpt, weights_only=False)["epoch"] == killed_in_epoch - 1
    # A new process: every global random state is whatever it is, the model is built from another seed.
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    model = _dropout_model(99)
    res = fit(model, TRAIN, VAL, cfg, num_classes=2, progress=False, checkpoint=ckpt, resume=True, step_fn=_step())

    cols = [c for c in ref.history.columns if c != "epoch_time"]
    pd.testing.assert_frame_equal(res.history[cols], ref.history[cols], check_exact=True)
    assert (res.best_epoch, res.best_score) == (ref.best_epoch, ref.best_score)
    _assert_same_tensors(res.best_state, ref.best_state)
    _assert_same_tensors(model.state_dict(), ref_model.state_dict())
    # the last epoch's weights and the optimiser's moments, not only the best epoch's weights
    (m1, o1), (m2, o2) = _checkpoint_states(tmp_path / "ref.pt"), _checkpoint_states(ckpt)
    _assert_same_tensors(m1, m2)
    for (_, s1), (_, s2) in zip(sorted(o1["state"].items()), sorted(o2["state"].items()), strict=True):
        _assert_same_tensors(s1, s2)


def test_checkpoint_holds_every_random_state(tmp_path: Path) -> None:
    fit(
        _dropout_model(0),
        TRAIN,
        VAL,
        TrainConfig(epochs=1, augment=True),
        num_classes=2,
        progress=False,
        checkpoint=tmp_path / "c.pt",
    )
    rng = torch.load(tmp_path / "c.pt", weights_only=False)["rng"]
    assert set(rng) == {"torch", "numpy", "python", "generator:order", "generator:augment"}


def test_checkpoint_without_random_states_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "old.pt"
    torch.save({"model": {}, "epoch": 1}, ckpt)  # what an older version wrote lacked the "rng" entry
    with pytest.raises(MedAssistError, match="lacks the random states.*delete it"):
        fit(
            _dropout_model(0),
            TRAIN,
            VAL,
            TrainConfig(epochs=2),
            num_classes=2,
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )


def test_paced_schedule_checkpoint_keeps_the_running_clock() -> None:
    from medassist.train.optim import PacedSchedule

    def schedule(clock):
        return PacedSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "cosine", 100, 10.0, clock)

    old = schedule(lambda: 0.0)
    state = old.state_dict()
    assert "clock" not in state  # the clock of the process that wrote a checkpoint means nothing to another
    new = schedule(lambda: 5.0)
    new.load_state_dict({**state, "clock": lambda: 0.0})  # even an older checkpoint's clock is not restored
    new.optimizer.step()
    new.step()
    assert new.progress == pytest.approx(0.5)  # paced by its own clock: 5 s of a 10 s budget


# --- units: a finished unit reused on resume ------------------------------------------------------------------------


def test_unit_reused_on_resume_leaves_the_next_unit_unchanged(tmp_path: Path) -> None:
    from medassist.studies.units import train_unit

    cfg = TrainConfig(epochs=2, batch_size=32, augment=True, seed=3)
    kw = {"model_name": "cnn_gap", "train": TRAIN, "val": VAL, "num_classes": 2, "progress": False}

    def units(run: Run, *, reuse_first: bool) -> dict:
        train_unit(run, "first", model_kwargs={"width": 8, "dropout": 0.3}, cfg=cfg, **kw)
        if reuse_first:  # a resumed process: the first unit is read back, not trained, and the RNG is elsewhere
            torch.manual_seed(7)
            train_unit(run, "first", model_kwargs={"width": 8, "dropout": 0.3}, cfg=cfg, **kw)
        unit, model = train_unit(run, "second", model_kwargs={"width": 8}, cfg=dataclasses.replace(cfg, seed=4), **kw)
        return {
            "result": {k: v for k, v in unit.__dict__.items() if k not in ("train_time", "extra")},
            "weights": model.state_dict(),
        }

    fresh = units(Run.create(tmp_path, "a", {}), reuse_first=False)
    resumed = units(Run.create(tmp_path, "b", {}), reuse_first=True)
    assert fresh["result"] == resumed["result"]
    _assert_same_tensors(fresh["weights"], resumed["weights"])


# --- the configuration of a resumed run ------------------------------------------------------------------------------


def _saved_run(tmp_path: Path, argv: list[str], capsys, name: str = "run") -> Path:
    """A failed run folder whose config.yaml is what ``argv`` resolves to."""
    assert main([*argv, "--print-config"]) == 0
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(capsys.readouterr().out)
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    return run


def _resolved(argv: list[str], capsys) -> dict:
    assert main([*argv, "--print-config"]) == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_resume_takes_the_saved_configuration_not_the_default_profile(tmp_path: Path, capsys) -> None:
    run = _saved_run(tmp_path, ["image", "--profile", "debug", "--train.lr", "0.01"], capsys)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    cfg = _resolved(["image", "--resume", str(run)], capsys)  # no --profile: not the default (quick) profile
    assert cfg["subsample"] == 400 and cfg["models"] == ["mlp", "cnn_gap"] and cfg["train"]["lr"] == 0.01
    assert config_differences(saved, cfg) == [] and cfg["resume"] == str(run)


@pytest.mark.parametrize(
    "agreeing",
    [
        ["--profile", "debug"],
        ["--profile", "debug", "--train.epochs", "2", "--set", "models=[mlp,cnn_gap]", "--train.lr", "1e-2"],
        ["--progress", "false", "--out", "elsewhere", "--data-dir", "/data"],  # keys that do not change results
    ],
    ids=["profile", "options", "free-keys"],
)
def test_resume_accepts_options_that_agree(tmp_path: Path, capsys, agreeing: list[str]) -> None:
    run = _saved_run(tmp_path, ["image", "--profile", "debug", "--train.lr", "0.01"], capsys)
    cfg = _resolved(["image", "--resume", str(run), *agreeing], capsys)
    assert cfg["subsample"] == 400 and cfg["train"]["lr"] == 0.01
    if "--out" in agreeing:
        assert cfg["out"] == "elsewhere" and cfg["progress"] is False and cfg["data_dir"] == "/data"


@pytest.mark.parametrize(
    "contradicting,expected",
    [
        (
            ["--profile", "quick"],
            [
                "--profile quick: models is ['mlp', 'cnn', 'cnn_gap', 'resnet18', 'resnet50'], "
                "the run's is ['mlp', 'cnn_gap']",
                "--profile quick: train.epochs is 4, the run's is 2",
            ],
        ),
        (["--train.lr", "0.5"], ["--train.lr 0.5: train.lr is 0.5, the run's is 0.01"]),
        (
            ["--set", "train.augmentation.rotation=30", "--models", "mlp"],
            [
                "--set train.augmentation.rotation=30: train.augmentation.rotation is 30.0, the run's is 10.0",
                "--models mlp: models is ['mlp'], the run's is ['mlp', 'cnn_gap']",
            ],
        ),
    ],
    ids=["profile", "flag", "set-and-flag"],
)
def test_resume_refuses_options_that_contradict(
    tmp_path: Path, capsys, contradicting: list[str], expected: list[str]
) -> None:
    run = _saved_run(tmp_path, ["image", "--profile", "debug", "--train.lr", "0.01"], capsys)
    before = (run / "config.yaml").read_bytes()
    assert main(["image", "--resume", str(run), *contradicting, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medassist: error: cannot resume {run}")
    for line in expected:
        assert line in err
    assert (run / "config.yaml").read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_resume_from_a_yaml_file_is_checked_too(tmp_path: Path, capsys) -> None:
    run = _saved_run(tmp_path, ["image", "--profile", "debug"], capsys)
    (tmp_path / "mine.yaml").write_text(f"resume: {run}\nn_boot: 50\n")
    assert main(["image", "--config", str(tmp_path / "mine.yaml"), "--print-config"]) == 2
    assert f"--config {tmp_path / 'mine.yaml'}: n_boot is 50, the run's is 200" in capsys.readouterr().err


def test_resume_refuses_a_complete_run_and_a_folder_that_is_no_run(tmp_path: Path, capsys) -> None:
    run = _saved_run(tmp_path, ["image", "--profile", "debug"], capsys)
    (run / "status.json").write_text(json.dumps({"status": "complete"}))
    assert main(["image", "--resume", str(run)]) == 2
    assert "the run is already complete" in capsys.readouterr().err
    assert main(["image", "--resume", str(tmp_path)]) == 2
    assert "it is not a run folder" in capsys.readouterr().err


def test_text_study_resume_uses_its_saved_configuration(tmp_path: Path, capsys) -> None:
    run = _saved_run(tmp_path, ["text", "--profile", "debug", "--subsample", "150"], capsys)
    cfg = _resolved(["text", "--resume", str(run)], capsys)
    assert cfg["subsample"] == 150
    assert main(["text", "--resume", str(run), "--profile", "quick"]) == 2
    assert "--profile quick:" in capsys.readouterr().err


def test_deploy_options_resolve_as_before(capsys) -> None:
    # deploy has no --resume: its options resolve from the default profile as they always did
    cfg = _resolved(["deploy"], capsys)
    assert cfg == _resolved(["deploy", "--profile", "quick"], capsys)


def test_run_create_refuses_another_configuration_and_keeps_the_saved_one(tmp_path: Path) -> None:
    cfg = {"train": to_dict(TrainConfig()), "models": ["mlp"], "progress": True, "resume": ""}
    run = Run.create(tmp_path, "x", cfg)
    run.set_status("failed")
    before = (run.dir / "config.yaml").read_bytes()
    changed = {**cfg, "train": {**cfg["train"], "lr": 0.1}}
    with pytest.raises(MedAssistError, match=r"train.lr: 0.001 in the run, 0.1 now"):
        Run.create(tmp_path, "x", changed, resume=run.dir)
    again = Run.create(tmp_path, "x", {**cfg, "progress": False, "resume": str(run.dir)}, resume=run.dir)
    assert again.dir == run.dir and again.status()["status"] == "running"
    assert (run.dir / "config.yaml").read_bytes() == before


# --- the whole study, killed with SIGKILL and resumed ----------------------------------------------------------------

# A smaller debug study (every stage, fewer and shorter units) so that one reference run and one run killed three
# times fit in about a minute; cnn_gap's epochs are long enough to be killed in the middle of.
SMALL = ["--models", "mlp,cnn_gap", "--size-fractions", "0.5,1.0", "--transfer", "frozen", "--n-boot", "100"]


def _numbers(obj, prefix: str = ""):
    """(path, value) of every number in a metrics.json, timings and peak memory left out (they differ between any two
    runs)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(obj, (int, float)) and not prefix.endswith(("train_time_s", "wall_time", "_gb")):
        yield prefix, obj


def _study(argv: list[str], env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medassist.cli", "image", "--progress", "false", *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, run_parent: Path, pattern: str, timeout: float = 300.0) -> str:
    """SIGKILL ``proc`` as soon as a file matching ``pattern`` appears in its run folder; what the folder held."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hits = list(run_parent.glob(f"*/{pattern}"))
        if hits or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the study ended before {pattern} appeared: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = list(run_parent.iterdir())
    return " ".join(sorted(str(p.relative_to(run)) for p in run.glob("units/*/*") if p.suffix in (".pt", ".json")))


@pytest.mark.realdata
@pytest.mark.process
def test_study_killed_and_resumed_gives_the_numbers_of_an_uninterrupted_run(real_data_dir: Path, tmp_path: Path):
    env = {**os.environ, "MEDASSIST_DATA_DIR": str(real_data_dir)}
    start = ["--profile", "debug", *SMALL]
    ref = _study([*start, "--out", str(tmp_path / "ref")], env)
    assert ref.wait() == 0, ref.stderr.read()[-2000:]
    (ref_run,) = list((tmp_path / "ref").iterdir())

    out = tmp_path / "killed"
    seen = [_kill_when(_study([*start, "--out", str(out)], env), out, "units/capacity-cnn_gap/checkpoint.pt")]
    (run,) = list(out.iterdir())
    config = (run / "config.yaml").read_bytes()
    # resumed without repeating the options: the run's saved configuration is used
    for pattern in ("units/size-*/result.json", "units/transfer-frozen/result.json"):
        seen.append(_kill_when(_study(["--resume", str(run)], env), out, pattern))
    last = _study(["--resume", str(run)], env)
    assert last.wait() == 0, last.stderr.read()[-2000:]
    assert "units/capacity-cnn_gap/checkpoint.pt" in seen[0], seen  # killed inside a unit, after an epoch
    assert (run / "config.yaml").read_bytes() == config

    a = dict(_numbers(json.loads((ref_run / "metrics.json").read_text())))
    b = dict(_numbers(json.loads((run / "metrics.json").read_text())))
    assert len(a) > 100 and a.keys() == b.keys()
    assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}
    for h in (ref_run / "history").glob("*.csv"):
        x, y = pd.read_csv(h), pd.read_csv(run / "history" / h.name)
        cols = [c for c in x.columns if c != "epoch_time"]
        pd.testing.assert_frame_equal(x[cols], y[cols], check_exact=True, obj=h.name)
    assert (ref_run / "models/model.safetensors").read_bytes() == (run / "models/model.safetensors").read_bytes()
