"""The command line: help at every level, config printing, clear errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medassist.cli import main

HELP = [
    [],
    ["image"],
    ["text"],
    ["deploy"],
    ["predict"],
    ["bench"],
    ["bench", "medmnist"],
    ["bench", "text"],
    ["data"],
    ["data", "list"],
    ["data", "fetch"],
    ["models"],
    ["report"],
]


@pytest.mark.parametrize("words", HELP, ids=lambda w: " ".join(w) or "top")
def test_help_at_every_level(words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: medassist")


def test_image_help_lists_generated_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["image", "--help"])
    out = capsys.readouterr().out
    for flag in ("--dataset", "--train.lr", "--train.augmentation.rotation", "--resume", "--profile"):
        assert flag in out


def test_print_config_applies_profile_and_overrides(capsys) -> None:
    assert main(["image", "--profile", "debug", "--train.lr", "0.01", "--set", "models=[cnn]", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.01" in out and "- cnn" in out and "subsample: 400" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["image", "--profile", "nope"], "unknown profile 'nope'"),
        (["image", "--profile", "debug", "--models", "mlp,vgg"], "unknown image model 'vgg'"),
        (["image", "--profile", "debug", "--set", "train.epochs=many"], "'train.epochs' must be int"),
        (["image", "--profile", "debug", "--dataset", "fooMNIST", "--download", "false"], "fooMNIST"),
        (["image", "--profile", "debug", "--images", "/nonexistent/folder"], "images not found"),
    ],
)
def test_errors_exit_2_with_message(argv: list[str], message: str, capsys, tmp_path) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medassist: error:") and message in err
    assert not any(tmp_path.iterdir()), "a refused run must not leave a run folder behind"


def test_data_list(tmp_path, capsys) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pneumoniamnist" in out and "breastmnist" in out and "organsmnist" in out


@pytest.mark.long
def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "medassist.cli", "models"], capture_output=True, text=True, check=True)
    assert "resnet18" in out.stdout and "efficientnet_lite0" in out.stdout


def test_top_level_help_imports_no_study() -> None:
    # Only the chosen command's options are built: `medassist --help` stays fast (no torch, MONAI or transformers).
    code = (
        "import sys\n"
        "from medassist.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'monai', 'transformers', 'medassist.studies.image') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "heavy: []" in out


def test_study_options_only_for_the_chosen_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "medmnist", "--help"])
    out = capsys.readouterr().out
    assert "--recipe.lr" in out and "--train.lr" not in out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--mlflow"], {"mlflow": True, "progress": True}),
        (["--mlflow", "true", "--progress", "false"], {"mlflow": True, "progress": False}),
        (["--no-progress", "--no-pdf"], {"progress": False, "pdf": False}),
        (["--image.train.augment", "--no-image.train.early-stopping"], {}),
    ],
)
def test_yes_no_options_are_bare_flags_too(flags: list[str], expected: dict, capsys) -> None:
    import yaml

    assert main(["all", "--profile", "debug", *flags, "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert {k: cfg[k] for k in expected} == expected
    if "--image.train.augment" in flags:
        assert cfg["image"]["train"]["augment"] is True and cfg["image"]["train"]["early_stopping"] is False


def test_every_benchmark_takes_progress(capsys) -> None:
    for command in (["bench", "serve"], ["bench", "ddp"], ["bench", "synth"], ["bench", "text"]):
        assert main([*command, "--no-progress", "--print-config"]) == 0, command
        assert "progress: false" in capsys.readouterr().out
