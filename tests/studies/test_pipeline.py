"""The pipeline (``medassist all``): order, options passed through, resume, failures and missing parts, MLflow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medassist.cli import build_parser, main
from medassist.run import Run
from medassist.studies import pipeline
from medassist.studies.pipeline import PipelineConfig, expand_profiles, run_pipeline
from medassist.utils.steps import step


class FakeStudies:
    """Stands in for the studies: each writes a finished run folder holding the config it was given."""

    def __init__(self, fail: tuple[str, ...] = (), interrupt: str = "") -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail, self.interrupt = fail, interrupt

    def __call__(self, path: str) -> Any:
        name = path.split(":")[1]

        def runner(cfg: Any) -> Path:
            kind = {"run_text_study": "text", "run_image_study": "image", "run_deploy_study": "deploy"}.get(name, name)
            self.calls.append((kind, cfg))
            if kind in self.fail or (kind == "deploy" and "deploy" in self.fail):
                raise RuntimeError(f"{kind} broke")
            if kind == self.interrupt:
                raise KeyboardInterrupt
            run = Run.create(cfg.out, kind, {"seen": getattr(cfg, "run", "")})
            with run:
                step(kind, "training", show=False)
                time.sleep(0.02)
                step(kind, "report", show=False)
                run.write_json("metrics.json", {"kind": kind})
            return run.dir

        return runner


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStudies:
    studies = FakeStudies()
    monkeypatch.setattr(pipeline, "_import", studies)
    monkeypatch.setattr("medassist.report.pipeline.write_pipeline_report", lambda root, pdf=True: root)
    return studies


def _cfg(tmp_path: Path, **kw: Any) -> PipelineConfig:
    parts = kw.pop("parts", ["text", "image", "deploy_image", "deploy_text"])
    return PipelineConfig(parts=parts, out=str(tmp_path), progress=False, pdf=False, **kw)


def test_each_study_gets_its_section_and_the_runs_it_builds_on(tmp_path: Path, fake: FakeStudies) -> None:
    root = run_pipeline(_cfg(tmp_path))
    state = json.loads((root / "pipeline.json").read_text())
    assert [c[0] for c in fake.calls] == ["text", "image", "deploy", "deploy"]
    assert all(state["parts"][p]["status"] == "complete" for p in ("text", "image", "deploy_image", "deploy_text"))
    deploy_image, deploy_text = fake.calls[2][1], fake.calls[3][1]
    assert Path(deploy_image.run) == root / state["parts"]["image"]["run"]
    assert Path(deploy_text.run) == root / state["parts"]["text"]["run"]
    assert Path(fake.calls[0][1].out) == root / "text"  # every study writes inside the parent folder
    assert json.loads((root / "status.json").read_text())["status"] == "complete"


def test_a_failed_study_is_marked_and_its_dependants_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    studies = FakeStudies(fail=("image",))
    monkeypatch.setattr(pipeline, "_import", studies)
    monkeypatch.setattr("medassist.report.pipeline.write_pipeline_report", lambda root, pdf=True: root)
    root = run_pipeline(_cfg(tmp_path))
    parts = json.loads((root / "pipeline.json").read_text())["parts"]
    assert parts["image"]["status"] == "failed" and "image broke" in parts["image"]["error"]
    assert parts["deploy_image"]["status"] == "skipped" and "needs image" in parts["deploy_image"]["error"]
    assert parts["deploy_text"]["status"] == "complete"  # the others go on
    status = json.loads((root / "status.json").read_text())
    assert status["status"] == "incomplete" and set(status["missing"]) == {"image", "deploy_image"}
    assert (root / "image" / "error.txt").read_text().count("RuntimeError") >= 1


def test_resume_reuses_finished_studies_and_runs_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medassist.report.pipeline.write_pipeline_report", lambda root, pdf=True: root)
    first = FakeStudies(interrupt="image")  # the pipeline is killed during the image study
    monkeypatch.setattr(pipeline, "_import", first)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_cfg(tmp_path))
    (root,) = tmp_path.glob("all-*")
    assert json.loads((root / "pipeline.json").read_text())["parts"]["image"]["status"] == "interrupted"
    text_run = json.loads((root / "pipeline.json").read_text())["parts"]["text"]["run"]
    second = FakeStudies()
    monkeypatch.setattr(pipeline, "_import", second)
    run_pipeline(_cfg(tmp_path, resume=str(root)))
    assert [c[0] for c in second.calls] == ["image", "deploy", "deploy"]  # text is reused, not run again
    parts = json.loads((root / "pipeline.json").read_text())["parts"]
    assert parts["text"]["run"] == text_run and all(p["status"] == "complete" for p in parts.values())


def test_an_unfinished_study_folder_is_resumed_by_the_study(tmp_path: Path, fake: FakeStudies) -> None:
    root = Run.create(tmp_path, "all", {}).dir
    (root / "pipeline.json").write_text(json.dumps({"parts": {"text": {"status": "running"}}}))
    half = Run.create(root / "text", "text-openi", {})  # a text run that was stopped mid-way
    run_pipeline(_cfg(tmp_path, parts=["text"], resume=str(root)))
    assert fake.calls[0][1].resume == str(half.dir)


def test_a_users_images_and_texts_go_to_the_studies_that_read_them(tmp_path: Path, fake: FakeStudies) -> None:
    run_pipeline(_cfg(tmp_path, parts=["text", "image", "synth"], images="xrays/", texts="notes.csv"))
    seen = {kind: cfg for kind, cfg in fake.calls}
    assert seen["image"].images == "xrays/" and seen["run_synth_study"].images == "xrays/"
    assert seen["text"].texts == "notes.csv"


def test_report_re_renders_a_pipeline_folder_and_names_an_unreadable_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pipeline, "_import", FakeStudies())
    monkeypatch.setattr("medassist.report.pipeline.write_pipeline_report", lambda root, pdf=True: root)
    root = run_pipeline(_cfg(tmp_path, parts=["text", "image"]))
    monkeypatch.undo()  # the real report from here on, from the files alone
    # The fake studies' folders hold a metrics.json but none of a real run's tables: each part is named missing.
    assert main(["report", str(root), "--no-pdf"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "report.html")
    md = (root / "report.md").read_text()
    assert "**Missing: the text study completed, but its run folder" in md
    assert "(tables/comparison.csv is missing)" in md
    assert "Missing parts: text, image" in md
    assert (root / "report.html").is_file() and not (root / "report.pdf").exists()


def test_a_part_that_fails_half_way_leaves_nothing_in_the_report(tmp_path: Path) -> None:
    from medassist.report.pipeline import Doc

    doc = Doc(tmp_path)
    doc.table("| a |\n|---|\n| 1 |", "kept", "Part 1: kept")
    saved = doc.snapshot()
    doc.table("| b |\n|---|\n| 2 |", "dropped", "Part 2: dropped")
    doc.piece("image", "some words", [], "Part 2: analysis")
    doc.restore(saved)
    assert doc.n_tables == 1 and doc.deliverables == [("Part 1: kept", "Table 1")] and doc.pieces == {}
    assert "dropped" not in "\n".join(doc.lines) and "kept" in "\n".join(doc.lines)


def test_options_pass_through_to_the_right_study(tmp_path: Path) -> None:
    args = build_parser(["all"]).parse_args(
        [
            "all",
            "--profile",
            "quick",
            "--text.dataset",
            "padchest",
            "--image.dataset",
            "breastmnist",
            "--deploy-text.threads",
            "1",
        ]
    )
    from medassist.cli import _resolve, profile_path
    from medassist.config import load_yaml

    cfg = _resolve(PipelineConfig, args, "all", expand_profiles)
    assert cfg.text.dataset == "padchest" and cfg.image.dataset == "breastmnist"
    assert cfg.deploy_text.threads == 1 and cfg.deploy_image.threads == 0  # 0: every core the process may use
    # The pipeline's quick profile is each study's own quick profile, not a copy of it.
    quick_image = load_yaml(profile_path("image", "quick"))
    assert cfg.text.rnn_train.min_steps == load_yaml(profile_path("text", "quick"))["rnn_train"]["min_steps"]
    assert cfg.image.train.epochs == quick_image["train"]["epochs"]
    assert main(["all", "--profile", "debug", "--print-config"]) == 0


def test_unknown_parts_are_refused(tmp_path: Path) -> None:
    from medassist.errors import MedAssistError

    with pytest.raises(MedAssistError, match="unknown part"):
        run_pipeline(_cfg(tmp_path, parts=["text", "pictures"]))


def test_mlflow_logs_each_study_nested_under_the_pipeline(tmp_path: Path, fake: FakeStudies) -> None:
    from mlflow.tracking import MlflowClient

    from medassist.tracking import default_store

    uri, _ = default_store(tmp_path)  # what the pipeline uses when no URI is given
    root = run_pipeline(_cfg(tmp_path, parts=["text", "image"], mlflow=True))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("medassist")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == root.name)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["image", "text"]
    text = next(r for r in children if r.info.run_name == "text")
    assert text.data.params["seen"] == ""
    assert "metrics.json" in [a.path for a in client.list_artifacts(text.info.run_id)]


@pytest.mark.slow  # every study's debug run, one after another: minutes, not the default run's seconds
@pytest.mark.realdata
def test_the_debug_pipeline_writes_one_report_of_every_part(real_data_dir: Path, tmp_path: Path) -> None:
    from medassist.report.pipeline import WORD_LIMITS
    from medassist.utils.words import count_words as words

    argv = ["all", "--profile", "debug", "--out", str(tmp_path), "--progress", "false"]
    argv += ["--image.data-dir", str(real_data_dir), "--synth.data-dir", str(real_data_dir)]
    assert main(argv) == 0
    (root,) = tmp_path.glob("all-*")
    parts = json.loads((root / "pipeline.json").read_text())["parts"]
    assert {k: v["status"] for k, v in parts.items()} == dict.fromkeys(PipelineConfig().parts, "complete")
    info = json.loads((root / "report.json").read_text())
    assert (root / "report.html").stat().st_size > 10_000 and (root / "report.pdf").read_bytes()[:4] == b"%PDF"
    assert info["pages"] <= 12
    # Every written piece keeps the brief's length, counted in the report that carries it.
    assert set(info["words"]) == set(WORD_LIMITS)
    for key, n in info["words"].items():
        low, high = WORD_LIMITS[key]
        assert low <= n <= high, f"{key}: {n} words, brief {low}-{high}"
    md = (root / "report.md").read_text()
    for i in range(1, info["figures"] + 1):  # every figure is numbered, in order, and the text refers to it
        assert f"Figure {i}." in md and md.count(f"Figure {i}") >= 2
    assert "## Appendix: where each deliverable is answered" in md and "## References" in md
    assert words("one two, three") == 3


def test_medassist_all_exits_1_when_a_part_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    studies = FakeStudies(fail=("image",))
    monkeypatch.setattr(pipeline, "_import", studies)
    monkeypatch.setattr("medassist.report.pipeline.write_pipeline_report", lambda root, pdf=True: root)
    argv = ["all", "--parts", "text,image,deploy_text", "--out", str(tmp_path), "--no-progress", "--no-pdf"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "medassist all: 1 part(s) did not complete: image (failed)" in err
    monkeypatch.setattr(pipeline, "_import", FakeStudies())
    assert main([*argv[:-4], "--out", str(tmp_path / "ok"), "--no-progress", "--no-pdf"]) == 0


def test_segmentation_runs_only_when_its_images_are_given(tmp_path: Path, fake: FakeStudies) -> None:
    from medassist.studies.segment_config import SegmentStudyConfig

    run_pipeline(_cfg(tmp_path / "a", parts=["image"]))
    assert [kind for kind, _ in fake.calls] == ["image"]
    fake.calls.clear()
    root = run_pipeline(_cfg(tmp_path / "b", parts=["image"], segment=SegmentStudyConfig(images="scans/")))
    ((_, image), (kind, seg)) = fake.calls
    assert kind == "run_segment_study" and seg.images == "scans/" and seg.out == str(root / "segment")
    assert json.loads((root / "pipeline.json").read_text())["parts"]["segment"]["status"] == "complete"
    args = build_parser(["all"]).parse_args(["all", "--profile", "debug", "--segment.images", "drive"])
    assert vars(args)["opt:segment.images"] == "drive"


def test_detection_runs_only_when_its_data_is_named(tmp_path: Path, fake: FakeStudies) -> None:
    from medassist.studies.detect_config import DetectStudyConfig

    run_pipeline(_cfg(tmp_path / "a", parts=["image"]))
    assert [kind for kind, _ in fake.calls] == ["image"]
    fake.calls.clear()
    root = run_pipeline(_cfg(tmp_path / "b", parts=["image"], detect=DetectStudyConfig(data="", coco="boxes.json")))
    ((_, image), (kind, det)) = fake.calls
    assert kind == "run_detect_study" and det.coco == "boxes.json" and det.out == str(root / "detect")
    args = build_parser(["all"]).parse_args(["all", "--profile", "debug", "--detect.data", "bccd"])
    assert vars(args)["opt:detect.data"] == "bccd"


def test_the_pipeline_bench_reads_seconds_per_part_and_per_step(tmp_path: Path, fake: FakeStudies, capsys) -> None:
    """Each part's run folder times the steps its study announced (timings.json); ``medassist bench pipeline``
    reads them beside each part's wall time."""
    root = run_pipeline(_cfg(tmp_path / "runs", parts=["text", "image"]))
    timings = json.loads(next((root / "text").glob("*/timings.json")).read_text())
    assert [s["step"] for s in timings["steps"]] == ["setup", "text: training", "text: report"]
    training = timings["steps"][1]["seconds"]
    assert training >= 0.02 and timings["seconds"] >= sum(s["seconds"] for s in timings["steps"]) - 1e-3
    assert main(["bench", "pipeline", "--run", str(root), "--out", str(tmp_path / "bench"), "--progress", "false"]) == 0
    (bench,) = list((tmp_path / "bench").iterdir())
    parts = pd.read_csv(bench / "tables/parts.csv")
    assert list(parts.part) == ["text", "image", "all"] and (parts.seconds > 0).all()
    steps = pd.read_csv(bench / "tables/steps.csv")
    assert set(steps.part) == {"text", "image"} and len(steps) == 6
    assert steps.query("part == 'text' and step == 'text: training'").seconds.iloc[0] == pytest.approx(training)
    out = capsys.readouterr().out
    assert "text: the 3 slowest of 3 steps" in out and "text: training" in out


def test_the_pipeline_bench_refuses_a_folder_that_is_not_a_pipeline(tmp_path: Path, capsys) -> None:
    assert main(["bench", "pipeline", "--run", str(tmp_path), "--out", str(tmp_path / "bench")]) != 0
    assert "is not a medassist all folder (no pipeline.json)" in capsys.readouterr().err
