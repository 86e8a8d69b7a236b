"""The model inside a bundle: opened by ONNX Runtime from verified bytes, checked against its description (self-
contained, input and output shapes, one dry run) and run with errors that name the bundle and the file."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from medassist.deploy.bundle_spec import KIND_WITH_ARTICLE, REEXPORT, BundleError
from medassist.errors import MedAssistError
from medassist.text.vocab import Vocab

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def ort_providers(provider: str) -> list[str]:
    """ONNX Runtime's providers for ``--provider cpu|cuda`` (CUDA falls back to the CPU for any operator it lacks),
    or a :class:`MedAssistError` saying what this machine lacks."""
    if provider not in PROVIDERS:
        raise MedAssistError(f"--provider {provider}: unknown provider; choose {' or '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if PROVIDERS[provider] not in available:
        raise MedAssistError(
            f"--provider {provider}: ONNX Runtime {ort.__version__} here has no {PROVIDERS[provider]} (it offers "
            f"{', '.join(available)}); install onnxruntime-gpu in place of onnxruntime on a machine with an NVIDIA "
            "GPU, or use --provider cpu"
        )
    return [PROVIDERS[provider], "CPUExecutionProvider"] if provider != "cpu" else ["CPUExecutionProvider"]


def check_session_provider(session: ort.InferenceSession, provider: str) -> None:
    """Refuse a session that does not run where ``--provider`` asked: ONNX Runtime lists CUDA among its available
    providers whenever onnxruntime-gpu is installed, yet falls back to the CPU, with a warning only, when the CUDA
    or cuDNN libraries it needs do not load."""
    wanted = PROVIDERS[provider]
    if wanted not in session.get_providers():
        raise MedAssistError(
            f"--provider {provider}: ONNX Runtime {ort.__version__} offers {wanted} but could not start it (the "
            f"session runs on {', '.join(session.get_providers())}): the CUDA and cuDNN libraries of the versions "
            "this onnxruntime-gpu was built for must load (see ONNX Runtime's CUDA requirements; on Linux, "
            "`pip install onnxruntime-gpu[cuda,cudnn]` brings them); or use --provider cpu"
        )


def open_model(
    data: bytes,
    meta: dict[str, Any],
    vocab: Vocab | None,
    *,
    threads: int,
    spin: bool = True,
    where: str,
    fix: str,
    provider: str = "cpu",
) -> ort.InferenceSession:
    """An ONNX Runtime session on the model ``data`` (on ``provider``), checked against ``meta`` and run once on a
    dummy input."""
    providers = ort_providers(provider)
    _check_self_contained(data, where, fix)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors become exceptions with our message; no warnings on the console
    try:
        # From bytes, so the model that runs is the one just verified, not whatever the file holds by now.
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as err:  # ONNX Runtime raises its own exception types for every kind of bad model
        raise BundleError(f"{where} cannot be opened by ONNX Runtime {ort.__version__} ({short(err)}); {fix}") from None
    check_session_provider(session, provider)
    _check_signature(session, meta, where, fix)
    _dry_run(session, meta, vocab, where, fix)
    return session


def _check_self_contained(data: bytes, where: str, fix: str) -> None:
    """Refuse a model that does not parse, or keeps weights in external files the manifest cannot vouch for."""
    import onnx  # slow to import; only needed here

    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise BundleError(f"{where} is not an ONNX model (it does not parse: {short(err)}); {fix}") from None
    graphs, external = [model.graph], []
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            for attr in node.attribute:
                tensors += ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        external += [t.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise BundleError(
            f"{where} keeps {len(external)} weight tensor(s) (e.g. {external[0]!r}) in external data files; a bundle "
            f"holds one self-contained model. Export it as one file; {fix}"
        )


def logits_output(session: ort.InferenceSession) -> Any:
    outputs = session.get_outputs()
    return next((o for o in outputs if o.name == "logits"), outputs[0])


def _check_signature(session: ort.InferenceSession, meta: dict[str, Any], where: str, fix: str) -> None:
    """Compare the model's declared inputs and output with the description, where its shapes are static."""
    pre, kind = meta["preprocessing"], meta["kind"]
    inputs = session.get_inputs()
    names = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
    if kind in ("segmentation", "detection"):
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            raise BundleError(
                f"{where} takes inputs ({names}), but {KIND_WITH_ARTICLE[kind]} model takes one float32 input "
                f"(B, C, H, W); {fix}"
            )
    elif kind == "image":
        size, channels = pre["image_size"], pre["channels"]
        wanted = [None, channels, size, size]
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            raise BundleError(
                f"{where} takes inputs ({names}), but an image model takes one float32 input (B, C, H, W); {fix}"
            )
        shape = inputs[0].shape
        if any(isinstance(have, int) and have != want for have, want in zip(shape[1:], wanted[1:], strict=True)):
            raise BundleError(
                f"{where} takes input {inputs[0].name} of shape {shape}, but bundle.json describes "
                f"(B, {channels}, {size}, {size}) (channels {channels}, image_size {size}); {fix}"
            )
    else:
        if len(inputs) != 2 or any(i.type != "tensor(int64)" or len(i.shape) != 2 for i in inputs):
            raise BundleError(
                f"{where} takes inputs ({names}), but a text model takes two int64 inputs (B, T): token ids and "
                f"attention mask; {fix}"
            )
        length = inputs[0].shape[1]
        if isinstance(length, int) and length < pre["max_len"]:
            raise BundleError(
                f"{where} takes texts of exactly {length} tokens, fewer than max_len {pre['max_len']} in bundle.json; "
                f"{fix}"
            )
    if kind == "detection":
        maps = session.get_outputs()
        if len(maps) < 2 or len(maps) % 2 or any(len(o.shape) != 4 for o in maps):
            raise BundleError(
                f"{where} returns {len(maps)} output(s), but a detection model returns its classification maps and "
                f"then its box maps, one (B, A, H, W) map of each per pyramid level; {fix}"
            )
        return
    output = logits_output(session)
    k = len(meta["labels"])
    cam = meta.get("cam_output")
    if cam is not None and not any(o.name == cam and len(o.shape) == 4 for o in session.get_outputs()):
        raise BundleError(f"{where} has no 4-dimensional output {cam!r}, which bundle.json names as cam_output; {fix}")
    if kind == "segmentation":
        if len(output.shape) != 4 or (isinstance(output.shape[1], int) and output.shape[1] != k):
            raise BundleError(
                f"{where} returns {output.name} of shape {output.shape}, but a segmentation bundle with {k} classes "
                f"returns (B, {k}, H, W); {fix}"
            )
        return
    if len(output.shape) != 2 or (isinstance(output.shape[1], int) and output.shape[1] != k):
        raise BundleError(
            f"{where} returns {output.name} of shape {output.shape}, but bundle.json has {k} labels "
            f"({', '.join(meta['labels'])}), so it should return (B, {k}); {fix}"
        )


def _dry_run(session: ort.InferenceSession, meta: dict[str, Any], vocab: Vocab | None, where: str, fix: str) -> None:
    """Run one dummy input, which catches what static shapes cannot (dynamic output size, too small an embedding)."""
    inputs = session.get_inputs()
    batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else 1
    pre = meta["preprocessing"]
    if meta["kind"] == "detection":
        m = pre["multiple"]
        shape = (batch, pre["channels"], m, m)
        maps = run_many(
            session,
            [o.name for o in session.get_outputs()],
            {inputs[0].name: np.zeros(shape, np.float32)},
            where,
            also=f"on a zero image of shape {shape}",
            fix=fix,
        )
        half = len(maps) // 2
        k = len(meta["labels"])
        if any(c.shape[1] % k or b.shape[1] % 4 for c, b in zip(maps[:half], maps[half:], strict=True)):
            raise BundleError(
                f"{where} returns maps of shapes {[tuple(x.shape) for x in maps]}, which do not fit {k} labels "
                f"({', '.join(meta['labels'])}) and 4 box coordinates per anchor; {fix}"
            )
        return
    if meta["kind"] == "segmentation":
        m = pre["multiple"]
        shape = (batch, pre["channels"], *(-(-v // m) * m for v in pre["image_shape"]))
        feed = {inputs[0].name: np.zeros(shape, dtype=np.float32)}
        what = f"a zero image of shape {shape}"
    elif meta["kind"] == "image":
        shape = (batch, pre["channels"], pre["image_size"], pre["image_size"])
        feed = {inputs[0].name: np.zeros(shape, dtype=np.float32)}
        what = f"a zero image of shape {shape}"
    else:
        assert vocab is not None
        length = inputs[0].shape[1] if isinstance(inputs[0].shape[1], int) else 1
        ids = np.full((batch, length), len(vocab) - 1, dtype=np.int64)  # the largest id must fit the embedding
        feed = {inputs[0].name: ids, inputs[1].name: np.ones_like(ids)}
        what = f"token ids of shape {ids.shape} holding the vocabulary's largest id ({len(vocab) - 1})"
    output = logits_output(session)
    logits = run(session, [output.name], feed, where, also=f"on {what}", fix=fix)
    k = len(meta["labels"])
    want = (batch, k, *shape[2:]) if meta["kind"] == "segmentation" else (batch, k)
    if logits.shape != want:
        raise BundleError(
            f"{where} returns {output.name} of shape {logits.shape} for {batch} input(s), but bundle.json has {k} "
            f"labels ({', '.join(meta['labels'])}); {fix}"
        )


def run(
    session: ort.InferenceSession,
    outputs: list[str],
    feed: dict[str, np.ndarray],
    where: str,
    *,
    also: str = "",
    fix: str = REEXPORT,
) -> np.ndarray:
    return run_many(session, outputs, feed, where, also=also, fix=fix)[0]


def run_many(
    session: ort.InferenceSession,
    outputs: list[str],
    feed: dict[str, np.ndarray],
    where: str,
    *,
    also: str = "",
    fix: str = REEXPORT,
) -> list[np.ndarray]:
    """Every output of ``outputs`` for ``feed``; a failure is a :class:`BundleError` naming ``where``."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the exception below carries the message; ONNX Runtime need not print it too
    try:
        return session.run(outputs, feed, quiet)
    except Exception as err:  # ONNX Runtime's own exception types
        raise BundleError(f"{where} fails to run{' ' + also if also else ''} ({short(err)}); {fix}") from None


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    pad = np.zeros((rows - len(array), *array.shape[1:]), dtype=array.dtype)
    return np.concatenate([array, pad])


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MedAssistError(f"batch_size must be a positive whole number, got {batch_size!r}")


def short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
