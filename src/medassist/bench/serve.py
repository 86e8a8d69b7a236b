"""Service benchmark: `medassist serve` started on 127.0.0.1 and loaded with image and report requests.

For each number of uvicorn workers, each serving mode (micro-batching, and one request per model call) and each way
of checking callers (no keys, and an API key on every request), in one run: requests one at a time (latency of a
single client: p50/p95/p99), then ``requests`` at ``concurrency`` at once (throughput, p50/p95/p99 and errors).
Every phase is bounded in count and in time; a request not answered in time is an error. The client runs on the same
machine and shares its CPUs with the server.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.config import RunOptions, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.serve.auth import add_key

HOST = "127.0.0.1"  # the benchmark only ever talks to this machine
# Report texts of the kind Open-i holds (findings and impression), from short to long.
REPORTS = [
    "No acute cardiopulmonary abnormality.",
    "Heart size is normal. The lungs are clear. No pneumothorax or pleural effusion.",
    "Small left pleural effusion with adjacent atelectasis. Heart size is mildly enlarged.",
    "Cardiomegaly with pulmonary vascular congestion and mild interstitial edema. Small bilateral effusions.",
    "Stable postsurgical changes of median sternotomy. No focal consolidation. Degenerative changes of the spine.",
    "Right lower lobe opacity may represent pneumonia in the appropriate clinical setting. Follow-up recommended.",
    "The cardiomediastinal silhouette is within normal limits for size and contour. The lungs are normally inflated "
    "without evidence of focal airspace disease, pleural effusion, or pneumothorax. Osseous structures are within "
    "normal limits for patient age. Impression: no acute radiographic cardiopulmonary process.",
    "Interval increase in right-sided pleural effusion, now moderate, with compressive atelectasis of the right "
    "lower lobe. Left lung is clear. Heart size is at the upper limits of normal. Calcified granuloma in the left "
    "upper lobe, unchanged. Impression: enlarging right pleural effusion.",
]


@dataclass
class ServeBenchConfig(RunOptions):
    """The service benchmark."""

    image_bundle: str = option("", "an image bundle folder (required)")
    text_bundle: str = option("", "a text bundle folder (required)")
    requests: int = option(1000, "requests of each kind at the concurrency below (per worker count and mode)")
    concurrency: int = option(50, "requests in flight at once")
    sequential: int = option(200, "requests of each kind sent one at a time (single-client latency)")
    workers: list[int] = option([1, 2], "uvicorn worker counts measured")
    max_batch: int = option(32, "largest micro-batch of the batching mode (the other mode runs one request per call)")
    max_wait_ms: float = option(2.0, "longest wait of a request for others to join its micro-batch")
    rounds: int = option(1, "rounds of every phase (the ways of checking callers alternate); medians are reported")
    auth: list[str] = option(
        ["off", "api-key"], "caller checks measured: off (no keys) and api-key (a key on every request)"
    )
    formats: list[str] = option(
        ["json", "fhir"], "answer formats measured: json and fhir (Accept: application/fhir+json, a DiagnosticReport)"
    )
    phase_timeout: float = option(180.0, "seconds a phase may take; requests still open then count as errors")
    data_dir: str = option("", "data directory with PneumoniaMNIST (default: $MEDASSIST_DATA_DIR); random if absent")
    progress: bool = option(True, "print each phase's numbers as it ends (the table is printed either way)")


def _images(data_dir: str, n: int = 50) -> list[bytes]:
    """PNG files of PneumoniaMNIST test images (random pixels when the data is absent)."""
    from PIL import Image

    from medassist.data.paths import resolve_data_dir

    path = resolve_data_dir(data_dir or None) / "medmnist" / "pneumoniamnist.npz"
    if path.is_file():
        pixels = np.load(path)["test_images"][:n]
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    out = []
    for p in pixels:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Server:
    """`medassist serve` as a subprocess on a free port of 127.0.0.1, ready when /readyz answers 200."""

    def __init__(
        self, cfg: ServeBenchConfig, workers: int, max_batch: int, log: Path, keys: Path | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "medassist.cli", "serve", cfg.image_bundle, cfg.text_bundle]
        cmd += ["--host", HOST, "--port", str(self.port), "--workers", str(workers)]
        cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(cfg.max_wait_ms)]
        cmd += ["--api-keys", str(keys)] if keys is not None else []
        self._log = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MedAssistError(f"the server stopped before it was ready (exit {self.proc.returncode})")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1.0) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the models start
            time.sleep(0.2)
        raise MedAssistError(f"the server was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


async def _phase(
    url: str,
    kind: str,
    payloads: list[Any],
    n: int,
    concurrency: int,
    timeout: float,
    key: str | None = None,
    answer: str = "json",
) -> dict:
    """``n`` requests of ``kind`` with at most ``concurrency`` in flight (each with the API ``key``, if given, and
    asking for the ``answer`` format: json, or fhir); latency per answered request.

    The client is aiohttp's (its per-request cost is a fraction of httpx's, and it shares the CPUs with the server).
    """
    import aiohttp

    latencies: list[float] = []
    failures: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)

    def failed(why: str) -> None:
        failures[why] = failures.get(why, 0) + 1

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with sem:
            payload = payloads[i % len(payloads)]
            start = time.perf_counter()
            try:
                if kind == "image":
                    form = aiohttp.FormData()
                    form.add_field("file", payload, filename="x.png", content_type="image/png")
                    request = session.post(url + "/v1/images", data=form)
                else:
                    request = session.post(url + "/v1/reports", json={"text": payload})
                async with request as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as err:
                failed(type(err).__name__)
                return
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                failed(f"HTTP {status}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=30.0)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if answer == "fhir":
        headers["Accept"] = "application/fhir+json"
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout, headers=headers) as session:
        await asyncio.gather(*(one(session, 0) for _ in range(min(concurrency, 8))))  # warm connections and model
        latencies.clear()
        failures.clear()
        start = time.perf_counter()
        tasks = [asyncio.create_task(one(session, i)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - start
    if pending:
        failures["not answered in time"] = len(pending)
    ms = np.asarray(latencies) * 1000.0
    q = np.percentile(ms, [50, 95, 99]) if len(ms) else [float("nan")] * 3
    return {
        "requests": n,
        "answered": len(latencies),
        "errors": sum(failures.values()),
        "error_kinds": "; ".join(f"{k} x{v}" for k, v in sorted(failures.items())),
        "throughput_per_s": len(latencies) / wall,
        "p50_ms": float(q[0]),
        "p95_ms": float(q[1]),
        "p99_ms": float(q[2]),
        "seconds": wall,
    }


AUTH_MODES = ("off", "api-key")
FORMATS = ("json", "fhir")
TARGETS = {
    "auth_throughput_ratio": 0.9,
    "fhir_throughput_ratio": 0.9,
    "image_p95_ms_one_at_a_time": 20.0,
    "report_p95_ms_one_at_a_time": 40.0,
    "image_per_s_concurrent": 200.0,
    "report_per_s_concurrent": 60.0,
}


def run_serve_benchmark(cfg: ServeBenchConfig) -> Run:
    """Measure every worker count and mode; write and print the table."""
    for name in ("image_bundle", "text_bundle"):
        if not getattr(cfg, name):
            raise MedAssistError(
                f"give --{name.replace('_', '-')} BUNDLE: the benchmark serves an image and a text bundle"
            )
        if not Path(getattr(cfg, name)).is_dir():
            raise MedAssistError(f"{name} {getattr(cfg, name)} is not a bundle folder")
    if cfg.requests < 1 or cfg.concurrency < 1 or cfg.sequential < 1 or cfg.rounds < 1 or not cfg.workers:
        raise MedAssistError("requests, concurrency, sequential and rounds must be positive, and workers non-empty")
    unknown = [a for a in cfg.auth if a not in AUTH_MODES]
    if unknown or not cfg.auth:
        raise MedAssistError(f"auth {unknown or cfg.auth}: give one or both of {', '.join(AUTH_MODES)}")
    unknown = [f for f in cfg.formats if f not in FORMATS]
    if unknown or not cfg.formats:
        raise MedAssistError(f"formats {unknown or cfg.formats}: give one or both of {', '.join(FORMATS)}")
    images = _images(cfg.data_dir)
    run = Run.create(cfg.out, "bench-serve", to_dict(cfg), kind="bench_serve")
    rows = []
    concurrent = f"{cfg.concurrency} concurrent"
    with run:
        key = add_key(run.path("api_keys.txt"), "bench") if "api-key" in cfg.auth else None  # the file: hashes only
        loads = [("one at a time", cfg.sequential, 1), (concurrent, cfg.requests, cfg.concurrency)]
        for workers in cfg.workers:
            for mode, max_batch in (("micro-batching", cfg.max_batch), ("one per call", 1)):
                # One server per way of checking callers, side by side; their phases alternate, round by round.
                servers = {
                    auth: _Server(
                        cfg,
                        workers,
                        max_batch,
                        run.path("server.log"),
                        run.path("api_keys.txt") if auth == "api-key" else None,
                    )
                    for auth in cfg.auth
                }
                try:
                    for server in servers.values():
                        server.wait_ready()
                    for kind, payloads in (("image", images), ("report", REPORTS)):
                        for load, n, conc in loads:
                            for rnd in range(cfg.rounds):
                                order = cfg.auth if rnd % 2 == 0 else cfg.auth[::-1]
                                answers = cfg.formats if rnd % 2 == 0 else cfg.formats[::-1]
                                for auth, answer in ((a, f) for a in order for f in answers):
                                    sent_key = key if auth == "api-key" else None
                                    url = servers[auth].url
                                    res = asyncio.run(
                                        _phase(url, kind, payloads, n, conc, cfg.phase_timeout, sent_key, answer)
                                    )
                                    row = {
                                        "workers": workers,
                                        "mode": mode,
                                        "auth": auth,
                                        "format": answer,
                                        "kind": kind,
                                        "load": load,
                                        "round": rnd,
                                    }
                                    rows.append({**row, **res})
                                    if cfg.progress:
                                        print(
                                            f"[bench serve] {row}: {res['throughput_per_s']:.0f}/s, p95 "
                                            f"{res['p95_ms']:.1f} ms, {res['errors']} errors",
                                            file=sys.stderr,
                                        )
                finally:
                    for server in servers.values():
                        server.stop()
        df = pd.DataFrame(rows)
        run.write_table("serve", df)
        summary = _medians(df)
        run.write_table("serve_medians", summary)
        verdicts = _verdicts(summary)
        run.write_metrics({"rows": rows, "targets": TARGETS, "verdicts": verdicts, "cpus": os.cpu_count()})
        df = summary
        cols = [
            "workers",
            "mode",
            "auth",
            "format",
            "kind",
            "load",
            "requests",
            "errors",
            "throughput_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        ]
        shown = df[cols].rename(columns={"throughput_per_s": "req/s"})
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
        for v in verdicts:
            print(v)
        print(f"benchmark run folder: {run.dir}")
    return run


KEYS = ["workers", "mode", "auth", "format", "kind", "load"]


def _medians(df: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's median over rounds (errors and requests summed)."""
    g = df.groupby(KEYS, sort=False)
    out = g[["throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "seconds"]].median()
    out[["requests", "answered", "errors"]] = g[["requests", "answered", "errors"]].sum()
    out["rounds"] = g.size()
    return out.reset_index()


def _verdicts(df: pd.DataFrame) -> list[str]:
    """Each target against the best configuration measured for it, with its numbers."""
    out = []
    errors = int(df.errors.sum())
    out.append(
        f"errors: {errors} in {int(df.requests.sum()):,} requests (target 0): {'met' if errors == 0 else 'missed'}"
    )
    for kind, key in (("image", "image_p95_ms_one_at_a_time"), ("report", "report_p95_ms_one_at_a_time")):
        rows = df[(df.kind == kind) & (df.load == "one at a time")]
        best = rows.sort_values("p95_ms").iloc[0]
        ok = best.p95_ms <= TARGETS[key]
        out.append(
            f"{kind} one at a time: best p95 {best.p95_ms:.1f} ms ({best.workers} worker(s), {best['mode']}), target "
            f"<= {TARGETS[key]:g} ms: {'met' if ok else 'missed'}"
        )
    for kind, key in (("image", "image_per_s_concurrent"), ("report", "report_per_s_concurrent")):
        rows = df[(df.kind == kind) & (df.load != "one at a time")]
        best = rows.sort_values("throughput_per_s", ascending=False).iloc[0]
        ok = best.throughput_per_s >= TARGETS[key]
        out.append(
            f"{kind} {best.load}: best {best.throughput_per_s:.0f}/s ({best.workers} worker(s), {best['mode']}, "
            f"auth {best.auth}), target >= {TARGETS[key]:g}/s: {'met' if ok else 'missed'}"
        )
    return out + _auth_verdicts(df) + _format_verdicts(df)


def _ratio_verdicts(df: pd.DataFrame, column: str, modes: tuple[str, str], target: str, describe: Any) -> list[str]:
    """Throughput at the concurrency of ``modes[1]`` against ``modes[0]`` of ``column``, per configuration of the
    other keys; ``describe(configuration, faster, slower)`` words the comparison."""
    if set(df[column]) != set(modes):
        return []
    base, other = modes
    out = []
    busy = df[df.load != "one at a time"]
    others = [k for k in ("workers", "mode", "kind", "auth", "format") if k != column]
    for config, g in busy.groupby(others, sort=False):
        speed = g.set_index(column).throughput_per_s
        ratio = speed[other] / speed[base]
        ok = ratio >= TARGETS[target]
        out.append(
            f"{describe(dict(zip(others, config, strict=True)), speed[other], speed[base])} ({ratio:.3f}x; "
            f"target >= {TARGETS[target]:g}x): {'met' if ok else 'missed'}"
        )
    return out


def _auth_verdicts(df: pd.DataFrame) -> list[str]:
    """Throughput with an API key on every request against without, at the concurrency, per configuration."""
    return _ratio_verdicts(
        df,
        "auth",
        AUTH_MODES,
        "auth_throughput_ratio",
        lambda c, key, none: (
            f"API keys, {c['kind']} ({c['format']}), {c['workers']} worker(s), {c['mode']}: "
            f"{key:.0f}/s with against {none:.0f}/s without"
        ),
    )


def _format_verdicts(df: pd.DataFrame) -> list[str]:
    """Throughput of FHIR answers against JSON answers, at the concurrency, per configuration."""
    return _ratio_verdicts(
        df,
        "format",
        FORMATS,
        "fhir_throughput_ratio",
        lambda c, fhir, json: (
            f"FHIR answers, {c['kind']}, {c['workers']} worker(s), {c['mode']}, auth {c['auth']}: "
            f"{fhir:.0f}/s against {json:.0f}/s as JSON"
        ),
    )
