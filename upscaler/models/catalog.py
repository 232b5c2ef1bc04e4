"""The model ids `upscale` knows: the bundled weights in `upscaler/weights/` with their cards, and
the ids that have no bundled weights, with why and what to use instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- the model-id table -------------------------------------------------------------------------------

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# The export forms each architecture has (`Architecture.forms` in the registry), known without torch so
# that a cached export is found without building the network (tests check the two agree).
EXPORT_FORMS: dict[str, frozenset[str]] = {"rrdbnet": frozenset({"split-dense"})}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
SUFFIXES = (".safetensors", *CHECKPOINT_SUFFIXES)


@dataclass(frozen=True)
class ModelEntry:
    """A model id of `upscale`; its weights are `upscaler/weights/<id>.safetensors` beside a card `<id>.json`.

    config is what the bundled weights were trained with (for an id without bundled weights, the
    paper's); the weights file's own config wins when loading. For an id without bundled weights,
    `unbundled` says why (in a few words for `upscale models`, then in a sentence) and `hint` what to
    do instead; all three are None for a bundled id.
    """

    id: str
    arch: str
    description: str
    config: dict[str, Any] = field(hash=False)
    unbundled: str | None = None
    unbundled_why: str | None = None
    hint: str | None = None
    # For a GAN stage: the PSNR-oriented model it was trained from, whose figures its own are held to.
    psnr_model: str | None = None
    # For a model trained on real-world degradations: the clean-input GAN model it must beat on the
    # degraded benchmark (`upscale degrade-set`), which is its bar instead of clean Set5/Set14.
    degraded_rival: str | None = None
    # How many times larger it makes each side, and its parameters: written out so that listing the
    # models needs no torch (tests/upscaler/models check both against the built networks).
    scale: int = 4
    parameters: int = 0

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.id}.safetensors"

    @property
    def weights_present(self) -> bool:
        return self.weights.is_file()

    @property
    def card(self) -> dict[str, Any] | None:
        """The model card written when the weights were shipped (train/ship.py), or None."""
        path = self.weights.with_suffix(".json")
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def quality(self) -> str | None:
        """`Set5 30.12 dB, Set14 27.15 dB`: the card's `upscale eval` figures, or None."""
        card = self.card
        if not card or not card.get("evaluation"):
            return None
        return ", ".join(f"{name} {figures['psnr_y']:.2f} dB" for name, figures in card["evaluation"].items())


# The paper's ESRGAN generator: 23 blocks of 64 features, the size of the published weights.
_PAPER_RRDB = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "scale": 4,
    "num_feat": 64,
    "num_block": 23,
    "num_grow_ch": 32,
}


# ESRGAN's generator at a size a 2-core CPU trains; its GAN stage keeps the shape: one config for both ids.
_SMALL_RRDB = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 32, "num_block": 6, "num_grow_ch": 16}
# SRGAN's GAN stage keeps the shape of the SRResNet it starts from: one config for both ids.
_SRRESNET = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "scale": 4, "batch_norm": True}

# The compact generator both `compact` and `realvideo` are.
_COMPACT = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "num_feat": 64,
    "num_conv": 16,
    "upscale": 4,
    "act_type": "prelu",
}

MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        id="rrdb-psnr",
        arch="rrdbnet",
        description="RRDBNet on L1, x4, 6 blocks of 32 features: ESRGAN's PSNR-oriented generator, smaller",
        config=_SMALL_RRDB,
        parameters=1118755,
    ),
    ModelEntry(
        id="srresnet",
        arch="srresnet",
        description="SRResNet on L1, x4, 16 residual blocks: SRGAN's PSNR-oriented generator",
        config=_SRRESNET,
        parameters=1549462,
    ),
    ModelEntry(
        id="compact",
        arch="compact",
        description="Real-ESRGAN's compact VGG-style generator on L1, x4, 16 convs: fast, for video",
        config=_COMPACT,
        parameters=621424,
    ),
    ModelEntry(
        id="esrgan",
        arch="rrdbnet",
        description="ESRGAN: RRDBNet after its GAN stage (perceptual + RaGAN), x4; smaller than the "
        "paper's 23 x 64: 6 blocks of 32 features",
        config=_SMALL_RRDB,
        psnr_model="rrdb-psnr",
        parameters=1118755,
    ),
    ModelEntry(
        id="srgan",
        arch="srresnet",
        description="SRGAN: SRResNet after its GAN stage (VGG54 + adversarial), x4, 16 residual blocks",
        config=_SRRESNET,
        psnr_model="srresnet",
        parameters=1549462,
    ),
    ModelEntry(
        id="realvideo",
        arch="compact",
        description="for real footage: the compact generator with ESRGAN's losses, trained on real-world "
        "degradations (blur, noise, resizing, JPEG, H.264/H.265), x4; fast",
        config=_COMPACT,
        degraded_rival="esrgan",
        parameters=621424,
    ),
    ModelEntry(
        id="esrgan-23x64",
        arch="rrdbnet",
        description="ESRGAN at the paper's size (23 blocks of 64 features), as its published weights",
        config=_PAPER_RRDB,
        unbundled="paper's size, not trained here",
        unbundled_why="the paper's 23 x 64 RRDBNet costs about 6 times the bundled esrgan's CPU time per "
        "training step, and its GAN stage was not trained on this project's 2-core CPU",
        hint="use --model esrgan (the same recipe at 6 blocks of 32 features, bundled), or a published "
        "ESRGAN file (--model RRDB_ESRGAN_x4.pth), or train it: upscale train --recipe esrgan --data HR_DIR "
        "--pretrained RRDB_PSNR_x4.pth",
        parameters=16697987,
    ),
)


def list_models() -> list[ModelEntry]:
    """The model ids `upscale` ships, in the order `upscale models` shows them."""
    return list(MODELS)


def find_model(model_id: str) -> ModelEntry | None:
    return next((entry for entry in MODELS if entry.id == model_id), None)


def card_of(name: str, digest: str) -> dict[str, Any] | None:
    """The card of the bundled model `name` when `digest` (a LoadedModel's) is its weights', else None:
    a file of your own that happens to share a bundled id's name has no card."""
    entry = find_model(name)
    card = entry.card if entry is not None else None
    if card and digest and str(card.get("weights_sha256", "")).startswith(digest):
        return card
    return None


def resolve_model_spec(spec: str | Path) -> tuple[Path, str, ModelEntry | None]:
    """(the weights file, the model's name, its catalog entry or None) for a model id (`esrgan`) or a
    weights file; raises the ModelError a user can act on. Reads no weights and imports no torch, so a
    command refuses a bad `--model` at once. A string that is a known id means that id, even if a file
    of that name exists; a Path is always a file."""
    from upscaler.errors import ModelError

    entry = find_model(spec) if isinstance(spec, str) else None
    if entry is not None:
        if not entry.weights.is_file():
            if entry.unbundled:
                raise ModelError(
                    f"model {entry.id!r} has no bundled weights: {entry.unbundled_why}", hint=entry.hint
                )
            raise ModelError(
                f"the bundled weights of model {entry.id!r} are missing ({entry.weights})",
                hint="reinstall upscaler, or pass a weights file: --model path/to/weights.safetensors",
            )
        return entry.weights, entry.id, entry
    published = _published(spec) if isinstance(spec, str) else None
    if published is not None:
        from upscaler.models.zoo import pulled_path

        pulled = pulled_path(published)
        if pulled is None:
            raise ModelError(
                f"model {published.name!r} is a published model that has not been downloaded",
                hint=f"upscale models pull {published.name} (fetches it once and checks its sha256)",
            )
        return pulled, published.name, None
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(model.id for model in MODELS)
        if path.exists():
            what = "is not a file"
        elif path.suffix in SUFFIXES or len(path.parts) > 1:
            # It looks like a path, so a typo in the path is likelier than a wrong model id.
            raise ModelError(
                f"no such weights file: {spec}", hint=f"check the path, or use a model id: {known}"
            )
        else:
            what = "is neither a known model id nor an existing file"
        raise ModelError(
            f"model {str(spec)!r} {what}; known ids: {known}",
            hint="pass a model id or a weights file (" + ", ".join(SUFFIXES) + ")",
        )
    return path, path.name, None


def _published(spec: str):
    """The zoo's entry of that name, where the name is not also a file here."""
    from upscaler.models.zoo import find_published

    published = find_published(spec)
    return published if published is not None and not Path(spec).expanduser().is_file() else None
