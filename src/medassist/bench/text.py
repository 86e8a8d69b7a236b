"""Text speed benchmark: training throughput (reports per second) and inference latency per report of each text
model on Open-i, measured in one run with warm-up and repeats (medians), fp32 and bf16 autocast side by side.

What makes the CPU work pay is measured too: length-bucketed, dynamically padded batches against batches padded to
the longest report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medassist.config import option, to_dict
from medassist.report.format import readable_table
from medassist.run import Run


@dataclass
class TextBenchConfig:
    """The text speed benchmark."""

    models: list[str] = option(["bilstm", "gru", "transformer_small", "minilm"], "text models measured")
    n_reports: int = option(512, "training reports used for the throughput measurement")
    batch_size: int = option(32, "training batch size")
    max_len: int = option(128, "tokens kept per report")
    repeats: int = option(20, "timed repeats for latency (after 3 warm-up runs)")
    bf16: bool = option(True, "also measure bfloat16 autocast")
    threads: int = option(0, "CPU threads (0 = all cores)")
    out: str = option("runs", "folder in which the benchmark's run folder is made")
    progress: bool = option(True, "show progress bars")


def _time(fn, repeats: int) -> list[float]:
    for _ in range(3):  # warm-up
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _measure(
    name: str, model: torch.nn.Module, batcher, labels: np.ndarray, cfg: TextBenchConfig, bf16: bool, bucketed: bool
) -> dict[str, Any]:
    from medassist.train.data import main_logits

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.as_tensor(labels).float()
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
        return ids, mask

    def train_epoch() -> None:
        model.train()
        for idx in order:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.binary_cross_entropy_with_logits(main_logits(model(*inputs(idx))).float(), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    t_train = _time(train_epoch, max(1, cfg.repeats // 10))
    model.eval()
    one = inputs(torch.arange(1))
    b64 = inputs(torch.arange(min(64, len(batcher))))

    def infer(x):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(*x)

    lat1 = _time(lambda: infer(one), cfg.repeats)
    lat64 = _time(lambda: infer(b64), cfg.repeats)
    return {
        "model": name,
        "bf16": bf16,
        "batches": "bucketed + dynamic padding" if bucketed else f"padded to {longest}",
        "train_reports_per_s": len(batcher) / float(np.median(t_train)),
        "latency_ms_batch1_median": 1000 * float(np.median(lat1)),
        "latency_ms_batch1_p95": 1000 * float(np.percentile(lat1, 95)),
        "ms_per_report_batch64": 1000 * float(np.median(lat64)) / len(b64[0]),
    }


def run_text_benchmark(cfg: TextBenchConfig) -> Run:
    """Measure every model; write and print the table."""
    from tqdm.auto import tqdm

    from medassist.data.reports import load_openi
    from medassist.models import create_model
    from medassist.text import TEXT_TOKENIZER, Vocab, hf_encode_batch, load_minilm_tokenizer
    from medassist.train import TokenBatcher, seed_everything
    from medassist.train.data import bf16_unsupported_reason, cpu_bf16_supported

    seed_everything(0, cfg.threads)
    data = load_openi()
    texts, labels = data.splits["train"].texts[: cfg.n_reports], data.splits["train"].labels[: cfg.n_reports]
    vocab = Vocab.build(data.splits["train"].texts)
    enc = {"word": vocab.encode_batch(texts, max_len=cfg.max_len)}
    if "minilm" in cfg.models:
        enc["minilm"] = hf_encode_batch(load_minilm_tokenizer(), texts, max_len=cfg.max_len)
    bf16 = cfg.bf16 and cpu_bf16_supported()
    if bf16:
        bf16_note = "bf16 autocast measured beside fp32"
    elif cfg.bf16:
        bf16_note = f"bf16 not measured: {bf16_unsupported_reason()}"
    else:
        bf16_note = "bf16 not requested"
    run = Run.create(cfg.out, "bench-text", to_dict(cfg))
    with run:
        rows = []
        jobs = [(m, b16, b) for m in cfg.models for b16 in ((False, True) if bf16 else (False,)) for b in (True, False)]
        for name, b16, bucketed in tqdm(jobs, desc="text benchmark", disable=not cfg.progress):
            torch.manual_seed(0)
            kind = TEXT_TOKENIZER[name]
            kwargs = {"vocab_size": len(vocab)} if kind == "word" else {}
            model = create_model(name, num_classes=data.num_labels, **kwargs)
            rows.append(_measure(name, model, TokenBatcher(enc[kind]), labels, cfg, b16, bucketed))
        df = pd.DataFrame(rows)
        run.write_table("speed", df)
        run.write_json("metrics.json", {"speed": rows, "torch_threads": torch.get_num_threads(), "bf16": bf16_note})
        print(readable_table(df, headers=True))
        print(bf16_note)
        print(f"benchmark run folder: {run.dir}")
    return run
