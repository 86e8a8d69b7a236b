"""The study table: one entry per command that makes a run folder.

The command line builds its study commands from it, ``medassist all`` finds each part's runner in it, and the
config test loads every shipped profile with the class it names. Adding a study is its module plus one entry here.
Everything is named by "module:attribute", so reading the table imports nothing heavy (``medassist --help`` stays
fast).

Example: a new study ``medassist segment``::

    Study(
        command=("segment",),
        config="medassist.studies.segment_config:SegmentStudyConfig",
        runner="medassist.studies.segment:run_segment_study",
        help="semantic segmentation: U-Nets on image and mask pairs, Dice with intervals, report",
    )

with ``src/medassist/configs/segment/{debug,quick,full}.yaml`` beside it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Study:
    """One study command.

    Attributes:
        command: its words, e.g. ("image",) or ("bench", "medmnist").
        config: "module:Class", the dataclass of its options (the CLI generates ``--options`` from it).
        runner: "module:function" taking the config and returning the run folder.
        help: one sentence for ``--help``.
        profiles: the folder of its shipped profiles under ``configs/`` (default: the command's words joined by _).
        default_profile: the profile used when none is given.
        expand: "module:function" rewriting the merged options before they are read (the pipeline's sections name
            the studies' own profiles).
        exit_status: "module:function" mapping the runner's result to the exit status (default 0).
        preset: ``KEY=VALUE`` options applied after the user's (a sweep's study).
        kinds: the kinds of run folder it writes (recorded in their status.json; what ``open_run`` reads).
        report: "module:function" rendering such a folder's report.md and report.html from its files.
        tunable: ``medassist tune <command>`` sweeps its training (its trials run in ``medassist.studies.tune``).
        data: "module:function" loading the data a run of it was trained on, from its config (what a study that
            builds on the run reads: ``open_run(...).data()``).
    """

    command: tuple[str, ...]
    config: str
    runner: str
    help: str
    profiles: str = ""
    default_profile: str = "quick"
    expand: str = ""
    exit_status: str = ""
    preset: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    report: str = ""
    tunable: bool = False
    data: str = ""

    @property
    def profile_folder(self) -> str:
        return self.profiles or "_".join(self.command)


GROUPS = {
    "bench": "benchmarks against published numbers",
    "tune": "sweeps on Ray Tune",
}
"""Commands that group studies (``medassist bench medmnist``), with their help."""

_STUDIES: tuple[Study, ...] = (
    Study(
        ("image",),
        "medassist.studies.image_config:ImageStudyConfig",
        "medassist.studies.image:run_image_study",
        "the medical image study: capacity, bias-variance, regularisation, transfer learning, test metrics with "
        "confidence intervals, Grad-CAM, report",
        kinds=("image",),
        report="medassist.report.image:write_image_report",
        tunable=True,
        data="medassist.studies.image:load_data",
    ),
    Study(
        ("text",),
        "medassist.studies.text:TextStudyConfig",
        "medassist.studies.text:run_text_study",
        "the clinical text study: recurrent model vs Transformer on radiology reports, regularisation sweep, "
        "vanishing gradients, TF-IDF baseline, error analysis, report",
        kinds=("text",),
        report="medassist.report.text:write_text_report",
        tunable=True,
        data="medassist.studies.text_setup:load_text_data",
    ),
    Study(
        ("segment",),
        "medassist.studies.segment_config:SegmentStudyConfig",
        "medassist.studies.segment:run_segment_study",
        "semantic segmentation: MONAI U-Nets on image and mask pairs (DRIVE, a folder or a CSV) at two capacities, "
        "augmentation and regularisation ablation, training-set size, test Dice/IoU/HD95 with intervals, report",
        kinds=("segment",),
        report="medassist.report.segment:write_segment_report",
    ),
    Study(
        ("detect",),
        "medassist.studies.detect_config:DetectStudyConfig",
        "medassist.studies.detect:run_detect_study",
        "object detection: MONAI RetinaNet on boxes (BCCD, VOC, COCO, YOLO or a CSV) at two capacities, pretrained "
        "against scratch, augmentation ablation, training-set size, test COCO mAP with intervals, FROC, counts, report",
        kinds=("detect",),
        report="medassist.report.detect:write_detect_report",
        data="medassist.studies.detect:load_detect_data",
    ),
    Study(
        ("deploy",),
        "medassist.studies.deploy:DeployConfig",
        "medassist.studies.deploy:run_deploy_study",
        "compress a study's model for the point of care (ONNX, int8, pruning, distillation), benchmark size, "
        "latency, throughput and accuracy of every variant, and write a verified bundle",
        kinds=("deploy",),
        report="medassist.report.deploy:write_deploy_report",
    ),
    Study(
        ("synth",),
        "medassist.studies.synth_config:SynthStudyConfig",
        "medassist.studies.synth:run_synth_study",
        "the synthetic-data study: VAE, GAN and diffusion generators (and a DP-SGD VAE) for medical images, SDV "
        "generators for patient records, measured for fidelity, usefulness (TSTR) and privacy (DCR, attacks), report",
        kinds=("synth", "synth_records"),
        report="medassist.report.synth:write_synth_report",
    ),
    Study(
        ("all",),
        "medassist.studies.pipeline:PipelineConfig",
        "medassist.studies.pipeline:run_pipeline",
        "the whole assistant: the text, image, synthetic-data, deploy and fairness studies in one parent folder, "
        "each fed the runs it builds on, and one report of Parts 1-5 (report.html and report.pdf)",
        expand="medassist.studies.pipeline:expand_profiles",
        exit_status="medassist.studies.pipeline:exit_status",
    ),
    Study(
        ("fairness",),
        "medassist.studies.fairness:FairnessConfig",
        "medassist.studies.fairness:run_fairness_study",
        "audit a finished study run, or any model's predictions file, across patient subgroups (sex, age, sex x "
        "age, metadata columns), mitigate, and write the ethics report",
        kinds=("fairness",),
        report="medassist.report.fairness:write_fairness_report",
    ),
    Study(
        ("tabular",),
        "medassist.studies.tabular:TabularConfig",
        "medassist.studies.tabular:run_tabular_study",
        "a table of patients (UCI heart disease, or a CSV) to a tuned logistic regression and gradient-boosted "
        "model, chosen on validation, tested with intervals, predictions saved for the fairness audit",
        kinds=("tabular",),
        report="medassist.report.tabular:write_tabular_report",
        data="medassist.studies.tabular:load_table",
    ),
    Study(
        ("bench", "medmnist"),
        "medassist.bench.medmnist:BenchConfig",
        "medassist.bench.medmnist:run_benchmark",
        "train on PneumoniaMNIST and BreastMNIST with several seeds; print test AUC/ACC, time and memory beside "
        "the published MedMNIST v2 rows and the reference protocol",
        profiles="bench",
        default_profile="default",
    ),
    Study(
        ("bench", "text"),
        "medassist.bench.text:TextBenchConfig",
        "medassist.bench.text:run_text_benchmark",
        "training throughput and inference latency of each text model on Open-i reports (fp32, and bf16 where the "
        "device has it; bucketed and padded batches)",
        default_profile="default",
    ),
    Study(
        ("bench", "ddp"),
        "medassist.bench.ddp:DDPBenchConfig",
        "medassist.bench.ddp:run_ddp_benchmark",
        "one fixed amount of training in 1 process and in N processes under torchrun (DDP): median times and their "
        "ratio",
        default_profile="default",
    ),
    Study(
        ("bench", "serve"),
        "medassist.bench.serve:ServeBenchConfig",
        "medassist.bench.serve:run_serve_benchmark",
        "start medassist serve on 127.0.0.1 and send image and report requests one at a time and 50 concurrent; "
        "throughput, p50/p95/p99 latency and errors for 1 and 2 workers, micro-batching against one per call",
        default_profile="default",
    ),
    Study(
        ("bench", "synth"),
        "medassist.bench.synth:SynthBenchConfig",
        "medassist.bench.synth:run_synth_benchmark",
        "each generator's training time, sampling time per 1,000 images, peak memory and headline numbers on "
        "PneumoniaMNIST (quick profile), with 2 seeds",
        default_profile="default",
    ),
    Study(
        ("bench", "pipeline"),
        "medassist.bench.pipeline:PipelineBenchConfig",
        "medassist.bench.pipeline:run_pipeline_bench",
        "where medassist all spends its time: seconds and peak memory per part, and seconds per step of each part "
        "(a finished pipeline folder, or a new run of a profile)",
        default_profile="default",
    ),
    Study(
        ("bench", "data"),
        "medassist.bench.data:DataBenchConfig",
        "medassist.bench.data:run_data_benchmark",
        "a folder of image files (generated PNGs, or yours) to training batches: decode throughput with 1 process "
        "and every core, first and second start-up, one training step, peak memory while training for two sizes",
        default_profile="default",
    ),
)

STUDIES: tuple[Study, ...] = _STUDIES + tuple(
    Study(
        ("tune", name),
        "medassist.studies.tune:TuneConfig",
        "medassist.studies.tune:run_tune",
        f"sweep the {name} study's training on Ray Tune over a YAML search space (ASHA stops poor trials "
        f"early); choose on validation and write best.yaml for `medassist {name} --config`",
        profiles="tune",
        preset=(f"study={name}",),
        kinds=("tune",),
        report="medassist.report.tune:write_tune_report",
    )
    for name in (s.command[0] for s in _STUDIES if s.tunable)
)


def by_profiles(folder: str) -> Study:
    """The study whose shipped profiles are ``configs/<folder>/`` (the pipeline's parts name them so)."""
    return next(s for s in STUDIES if s.profile_folder == folder)


def load(path: str) -> Any:
    """The object named by "module:attribute"."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


REPORTS = {kind: s.report for s in STUDIES for kind in s.kinds if s.report}
"""Run kind (recorded in status.json) -> the function that renders its report.md and report.html from its files."""


def study_of(kind: str) -> Study:
    """The study that writes runs of ``kind``."""
    study = next((s for s in STUDIES if kind in s.kinds), None)
    if study is None:
        from medassist.errors import MedAssistError

        raise MedAssistError(f"no study writes runs of kind '{kind}'")
    return study


def config_class(kind: str) -> type:
    """The config dataclass of the study that writes runs of ``kind``."""
    return load(study_of(kind).config)
