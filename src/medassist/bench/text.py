"""Text speed benchmark: training throughput (reports per second) and inference latency per report of each text
model on Open-i, measured in one run with warm-up and repeats (medians), on the run's device (``--device``), at
float32 and bf16 autocast side by side where the device has bfloat16.

What makes the CPU work pay is measured too: length-bucketed, dynamically padded batches against batches padded to
the longest report. Each row also records the peak GPU memory of its measurement and the macro-AUC of the trained model
on the test reports, so that what a precision changes in memory and in what the model learned is read beside what
it changes in speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medassist.config import DeviceOptions, RunOptions, option, to_dict
from medassist.run import Run
from medassist.train.device import (
    Accelerator,
    current,
    on_device,
    precision_refusal,
    use,
)
from medassist.utils.format import readable_table


@dataclass
class TextBenchConfig(DeviceOptions, RunOptions):
    """The text speed benchmark."""

    models: list[str] = option(["bilstm", "gru", "transformer_small", "minilm"], "text models measured")
    n_reports: int = option(512, "training reports used for the throughput measurement")
    batch_size: int = option(32, "training batch size")
    max_len: int = option(128, "tokens kept per report")
    repeats: int = option(20, "timed repeats for latency (after 3 warm-up runs)")
    bf16: bool = option(True, "also measure bf16-mixed precision where the device has bfloat16")
    threads: int = option(0, "CPU threads (0 = all cores)")


def _time(fn, repeats: int, device: torch.device) -> list[float]:
    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":  # the kernels launched, and finished
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up
        timed()
    return [timed() for _ in range(repeats)]


def _test_auc(model: torch.nn.Module, batcher, labels: np.ndarray, accel: Accelerator) -> float:
    """Macro ROC AUC of ``model`` on the test reports, predicted at ``accel``'s precision (the row's)."""
    from medassist.evaluate.multilabel import macro_auc
    from medassist.train.data import predict_proba

    with use(accel):
        return macro_auc(labels, predict_proba(model, batcher, task="multi-label"))


def _measure(
    name: str,
    model: torch.nn.Module,
    batcher,
    labels: np.ndarray,
    cfg: TextBenchConfig,
    accel: Accelerator,
    bucketed: bool,
    test: tuple[Any, np.ndarray],
) -> dict[str, Any]:
    from medassist.train.data import main_logits

    accel.reset_peak_memory()
    model.to(accel.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = accel.put(torch.as_tensor(labels).float())
    gen = torch.Generator().manual_seed(0)
    if bucketed:
        order = list(batcher.order(cfg.batch_size, generator=gen))
    else:  # one shuffled order, every batch padded to the longest report of the set
        perm = torch.randperm(len(batcher), generator=gen)
        order = [perm[i : i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
    longest = int(batcher.lengths.max())

    def inputs(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = batcher.inputs(idx)
        if not bucketed:
            ids, mask = F.pad(ids, (0, longest - ids.shape[1])), F.pad(mask, (0, longest - mask.shape[1]))
        return accel.put(ids), accel.put(mask)

    def train_epoch() -> None:
        model.train()
        for idx in order:
            with accel.autocast():
                loss = F.binary_cross_entropy_with_logits(main_logits(model(*inputs(idx))).float(), y[idx.to(y.device)])
            opt.zero_grad()
            loss.backward()
            opt.step()

    t_train = _time(train_epoch, max(1, cfg.repeats // 10), accel.device)
    test_auc = _test_auc(model, *test, accel)
    model.eval()
    one = inputs(torch.arange(1))
    b64 = inputs(torch.arange(min(64, len(batcher))))

    def infer(x):
        with torch.no_grad(), accel.autocast():
            model(*x)

    lat1 = _time(lambda: infer(one), cfg.repeats, accel.device)
    lat64 = _time(lambda: infer(b64), cfg.repeats, accel.device)
    return {
        "model": name,
        "device": str(accel.device),
        "precision": accel.precision,
        "batches": "bucketed + dynamic padding" if bucketed else f"padded to {longest}",
        "train_reports_per_s": len(batcher) / float(np.median(t_train)),
        "latency_ms_batch1_median": 1000 * float(np.median(lat1)),
        "latency_ms_batch1_p95": 1000 * float(np.percentile(lat1, 95)),
        "ms_per_report_batch64": 1000 * float(np.median(lat64)) / len(b64[0]),
        "test_macro_auc": test_auc,
        "peak_gpu_memory_mb": None if (peak := accel.peak_memory_gb()) is None else peak * 1024,
    }


@on_device
def run_text_benchmark(cfg: TextBenchConfig) -> Run:
    """Measure every model; write and print the table."""
    from tqdm.auto import tqdm

    from medassist.data.reports import load_openi
    from medassist.models import create_model
    from medassist.text import TEXT_TOKENIZER, Vocab, hf_encode_batch, load_minilm_tokenizer
    from medassist.train import TokenBatcher, seed_everything

    seed_everything(0, cfg.threads)
    data = load_openi()
    texts, labels = data.splits["train"].texts[: cfg.n_reports], data.splits["train"].labels[: cfg.n_reports]
    test_texts, test_labels = data.splits["test"].texts, data.splits["test"].labels
    vocab = Vocab.build(data.splits["train"].texts)
    enc = {"word": vocab.encode_batch(texts, max_len=cfg.max_len)}
    test_enc = {"word": vocab.encode_batch(test_texts, max_len=cfg.max_len)}
    if "minilm" in cfg.models:
        tokenizer = load_minilm_tokenizer()
        enc["minilm"] = hf_encode_batch(tokenizer, texts, max_len=cfg.max_len)
        test_enc["minilm"] = hf_encode_batch(tokenizer, test_texts, max_len=cfg.max_len)
    accel = current()
    refusal = precision_refusal(accel.device, "bf16-mixed")
    precisions = list(dict.fromkeys(["32", *(["bf16-mixed"] if cfg.bf16 and not refusal else []), accel.precision]))
    if "bf16-mixed" in precisions:
        bf16_note = f"bf16-mixed measured beside 32 on {accel.device}"
    elif cfg.bf16:
        bf16_note = f"bf16 not measured: {refusal.removeprefix('--precision bf16-mixed: ')}"
    else:
        bf16_note = "bf16 not requested"
    run = Run.create(cfg.out, "bench-text", to_dict(cfg), kind="bench_text")
    with run:
        rows = []
        jobs = [(m, p, b) for m in cfg.models for p in precisions for b in (True, False)]
        for name, precision, bucketed in tqdm(jobs, desc="text benchmark", disable=not cfg.progress):
            torch.manual_seed(0)
            kind = TEXT_TOKENIZER[name]
            kwargs = {"vocab_size": len(vocab)} if kind == "word" else {}
            model = create_model(name, num_classes=data.num_labels, **kwargs)
            at = Accelerator(accel.device, precision)
            test = (TokenBatcher(test_enc[kind]), np.asarray(test_labels))
            rows.append(_measure(name, model, TokenBatcher(enc[kind]), labels, cfg, at, bucketed, test))
        df = pd.DataFrame(rows)
        run.write_table("speed", df)
        run.write_metrics({"speed": rows, "torch_threads": torch.get_num_threads(), "bf16": bf16_note})
        print(readable_table(df, headers=True))
        print(bf16_note)
        print(f"benchmark run folder: {run.dir}")
    return run
