"""The models a service holds: verified bundles, each behind its micro-batcher, known by an id and a version, in
words a clinician reads, and replaceable while the service runs (:meth:`Registry.reload`)."""

from __future__ import annotations

import asyncio
import html
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medassist.deploy.bundle import Bundle, BundleError, load_bundle
from medassist.deploy.manifest import read_manifest, verified_bytes
from medassist.errors import MedAssistError
from medassist.serve.batching import MicroBatcher
from medassist.serve.limits import Limits, check_upload, read_image
from medassist.serve.schemas import ModelInfo, ModelRef

MODEL_CARD_FILE = "model_card.md"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# What each data set's model answers, as a clinician would name it.
TITLES = {
    "pneumoniamnist": "Chest X-ray: pneumonia",
    "chestmnist": "Chest X-ray: 14 findings",
    "breastmnist": "Breast ultrasound: malignancy",
    "dermamnist": "Skin photograph: lesion type",
    "retinamnist": "Retinal fundus photograph: diabetic retinopathy grade",
    "octmnist": "Retinal OCT: condition",
    "bloodmnist": "Blood smear: cell type",
    "pathmnist": "Colon pathology: tissue type",
    "tissuemnist": "Kidney microscopy: tissue type",
    "organamnist": "Abdominal CT (axial): organ",
    "organcmnist": "Abdominal CT (coronal): organ",
    "organsmnist": "Abdominal CT (sagittal): organ",
    "openi": "Chest X-ray report: findings",
    "padchest": "Chest X-ray report (Spanish): findings",
    "drive": "Retinal fundus photograph: vessels",
}
_ABSOLUTE_PATH = re.compile(r"`(/[^`]*?)([^/`]+)`")


def title_of(meta: dict[str, Any]) -> str:
    """The model in a clinician's words, from its data set (the first word of the bundle's name)."""
    dataset = str(meta.get("name", "")).split(" ", 1)[0].lower()
    return TITLES.get(dataset, f"{dataset or 'medassist'} {meta.get('kind', '')} model".strip())


def card_html(markdown_text: str) -> str:
    """A model card as HTML (Python-Markdown, raw HTML in the card escaped), with every absolute path reduced to
    its last part: no server path reaches a client."""
    import markdown

    text = _ABSOLUTE_PATH.sub(lambda m: f"`{m.group(2)}`", markdown_text)
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"])


@dataclass
class Served:
    """One verified bundle with its id, version, model card and batcher."""

    id: str
    bundle: Bundle
    version: str
    path: Path
    card: str | None  # the model card as HTML (made once, when the bundle is opened)
    batcher: MicroBatcher | None = field(default=None, repr=False)
    ready: bool = False  # it has answered once (the warm-up)

    @property
    def created(self) -> str | None:
        return self.bundle.meta.get("info", {}).get("created")

    @property
    def title(self) -> str:
        day = (self.created or "")[:10]
        return f"{title_of(self.bundle.meta)}, version {self.version}" + (f" of {day}" if day else "")

    @property
    def ref(self) -> ModelRef:
        return ModelRef(id=self.id, name=self.bundle.meta["name"], version=self.version, title=self.title)

    def info(self, default: bool) -> ModelInfo:
        b = self.bundle
        return ModelInfo(
            id=self.id,
            name=b.meta["name"],
            title=self.title,
            default=default,
            kind=b.kind,
            task=b.task,
            labels=b.labels,
            version=self.version,
            created=self.created,
            metrics=b.meta.get("metrics", {}),
            threshold=b.threshold,
            temperature=b.temperature,
            abstain=b.meta.get("abstain"),
            overlay=b.cam_output is not None,
            model_card=self.card,
        )


def _default_id(path: Path) -> str:
    """A deploy run's bundle is the folder ``bundle`` of the run: it is known by the run's name."""
    path = path.resolve()
    return path.parent.name if path.name == "bundle" else path.name


def open_served(model_id: str, path: Path, *, threads: int, provider: str) -> Served:
    """Verify and open one bundle (waiting ONNX Runtime threads do not spin: they leave the CPUs to requests)."""
    bundle = load_bundle(path, threads=threads, spin=False, provider=provider)
    files = read_manifest(path)
    version = files[bundle.meta["model_file"]]["sha256"][:12]
    card = None
    if MODEL_CARD_FILE in files:  # verified as every other file of the bundle
        card = card_html(
            verified_bytes(path, MODEL_CARD_FILE, files[MODEL_CARD_FILE]).decode("utf-8", errors="replace")
        )
    return Served(model_id, bundle, version, path, card)


def parse_bundle_spec(spec: str | os.PathLike[str] | Sequence[str]) -> tuple[str, Path]:
    """``PATH`` (known by its folder's name), ``NAME=PATH`` or a (name, path) pair -> (id, path)."""
    if isinstance(spec, os.PathLike):
        return _default_id(Path(spec)), Path(spec)
    if not isinstance(spec, str):
        name, path = spec
        return str(name), Path(path)
    name, sep, rest = spec.partition("=")
    if sep and ID_PATTERN.match(name) and not Path(spec).exists():
        return name, Path(rest)
    return _default_id(Path(spec)), Path(spec)


def load_served(specs: Sequence[str | Sequence[str]], *, threads: int = 0, provider: str = "cpu") -> list[Served]:
    """Verify and open every bundle; the first problem raises :class:`BundleError` naming the bundle and file.
    Bundles given the same name are versions of one model (the first given is its default); one version twice is
    refused."""
    if not specs:
        raise MedAssistError("give at least one bundle folder to serve: medassist serve runs/deploy-.../bundle")
    served: list[Served] = []
    for spec in specs:
        model_id, path = parse_bundle_spec(spec)
        if not ID_PATTERN.match(model_id):
            raise MedAssistError(f"model name {model_id!r} must be 1-64 letters, digits, '_', '.' or '-'")
        s = open_served(model_id, path, threads=threads, provider=provider)
        twin = next((o for o in served if o.id == s.id and o.version == s.version), None)
        if twin is not None:
            raise MedAssistError(
                f"{path} and {twin.path} are the same version ({s.version}) of model {s.id!r}; serve each version once"
            )
        if any(o.id == s.id and o.bundle.kind != s.bundle.kind for o in served):
            raise MedAssistError(f"the versions of model {s.id!r} must all be image or all text models")
        served.append(s)
    return served


def warm_up_input(s: Served, limits: Limits) -> Any:
    """One input through the whole path (decoding, model, overlay), so that lazy imports and ONNX Runtime's first
    run happen before the service reports ready."""
    if s.bundle.kind == "text":
        return "warm-up"
    if s.bundle.kind == "segmentation":
        return np.zeros((s.bundle.channels, *s.bundle.image_shape), dtype=np.uint8), None
    if s.bundle.kind == "detection":
        side = s.bundle.image_size or 64
        return np.zeros((s.bundle.channels, side, side), dtype=np.uint8), None
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((s.bundle.image_size,) * 2, dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    return read_image(data, check_upload(data, limits), s.bundle)


class Registry:
    """Every served model version; the first of each id is its default. ``make_batcher(served)`` gives a bundle its
    micro-batcher."""

    def __init__(self, served: list[Served], make_batcher: Any, limits: Limits) -> None:
        self.served = served
        self.make_batcher = make_batcher
        self.limits = limits
        for s in served:
            s.batcher = make_batcher(s)

    async def start(self, s: Served) -> None:
        assert s.batcher is not None
        await s.batcher.start()
        await s.batcher.submit(warm_up_input(s, self.limits))
        s.ready = True

    async def start_all(self) -> None:
        for s in self.served:
            await self.start(s)

    async def stop_all(self) -> None:
        for s in self.served:
            if s.batcher is not None:
                await s.batcher.stop()

    def of_kind(self, kind: str) -> list[Served]:
        return [s for s in self.served if s.bundle.kind == kind]

    def is_default(self, s: Served) -> bool:
        return next(o for o in self.served if o.id == s.id) is s

    async def reload(self, model_id: str, *, threads: int, provider: str) -> list[dict[str, str]]:
        """Verify every version of ``model_id`` again from its folder and swap in those that changed; a bundle that
        fails verification raises :class:`BundleError` and every old version keeps serving."""
        olds = [s for s in self.served if s.id == model_id]
        fresh = []
        for old in olds:
            new = await asyncio.to_thread(open_served, model_id, old.path, threads=threads, provider=provider)
            if new.bundle.kind != old.bundle.kind:
                raise BundleError(f"the new bundle of {model_id!r} is {new.bundle.kind}, not {old.bundle.kind}")
            fresh.append(new)
        changes = []
        for old, new in zip(olds, fresh, strict=True):
            new.batcher = self.make_batcher(new)
            await self.start(new)  # answered once before it takes traffic
            self.served[self.served.index(old)] = new
            assert old.batcher is not None
            await old.batcher.drain()  # what the old version accepted, it answers
            await old.batcher.stop()
            changes.append({"id": model_id, "from": old.version, "to": new.version})
        return changes


def scrub(message: str, paths: Sequence[os.PathLike[str] | str]) -> str:
    """``message`` with every given server path replaced by its last part."""
    for p in sorted({str(Path(p)) for p in paths} | {str(Path(p).resolve()) for p in paths}, key=len, reverse=True):
        message = message.replace(p, Path(p).name)
    return message
