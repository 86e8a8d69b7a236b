"""The options of ``medassist serve`` (the command line is generated from them)."""

from __future__ import annotations

from dataclasses import dataclass

from medassist.config import option


@dataclass
class ServeConfig:
    """The point-of-care service: where it listens, how it batches, what it accepts."""

    host: str = option("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    port: int = option(8000, "port to listen on")
    workers: int = option(1, "uvicorn worker processes, each with every bundle loaded")
    provider: str = option(
        "cpu", "ONNX Runtime execution provider: cpu | cuda (needs the onnxruntime-gpu package and an NVIDIA GPU)"
    )
    threads: int = option(0, "ONNX Runtime threads per model and worker; 0 = the CPU count divided by the workers")
    max_batch: int = option(32, "micro-batching: most concurrent requests run in one model call (1 = one at a time)")
    max_wait_ms: float = option(2.0, "micro-batching: longest time a request waits for others to join its call")
    max_upload_mb: float = option(10.0, "largest uploaded image file, in MiB (1 MiB = 1,048,576 bytes)")
    max_pixels: int = option(4096 * 4096, "largest image (width x height) decoded; larger headers are refused")
    max_text_chars: int = option(20_000, "longest report, in characters")
    log_level: str = option("warning", "uvicorn's own log level (the JSON access log is always written)")
    api_keys: str = option(
        "", "file of API keys (NAME ROLE sha256:HEX lines, from `medassist serve keys add`); required off 127.0.0.1"
    )
    no_auth: bool = option(False, "serve without API keys even off 127.0.0.1 (warned in the log and on the page)")
    metrics_public: bool = option(False, "GET /metrics without a key (else it needs a metrics or admin key)")
    rate_limit: float = option(0.0, "most requests a second per key (per address without keys); 0 = no limit")
    ssl_certfile: str = option("", "TLS certificate file (PEM), passed to uvicorn; with --ssl-keyfile")
    ssl_keyfile: str = option("", "TLS private key file (PEM), passed to uvicorn; with --ssl-certfile")
    modalities: str = option(
        "", "STOW-RS: the model of each modality, ID=MOD[,MOD];ID=MOD (e.g. xray=CR,DX;retina=OP); one model: any"
    )
    dicomweb_store: str = option("", "STOW-RS: store the results (SEG, SR) in this PACS's DICOMweb root")
    dicomweb_credentials: str = option(
        "", "JSON file of that PACS's credentials (default: MEDASSIST_PACS_USER and _PASSWORD, or _TOKEN)"
    )
    audit_log: str = option("", "append one audit line per request that touched patient data to this file")
    audit_key_file: str = option("", "the audit trail's key file (default: $MEDASSIST_AUDIT_KEY)")
