"""The bird classifier of SPEC 4.5: the mel front end followed by a timm backbone, and its checkpoints.

`forward(audio)` is the training/validation path. `forward_images(images)` runs the backbone only, so
predict and ONNX export can compute the mel once outside the model graphs and share it across models
(DESIGN 9: the mel inside an ONNX graph is slow).

Checkpoint file: a dict of plain types, loadable with `torch.load(weights_only=True)`:
    {format_version, state_dict, model_cfg, frontend_cfg, classes, extra}
It carries everything needed to rebuild the model, so no params file is needed to load it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from birdclef.config import FrontendConfig, ModelConfig
from birdclef.frontend import MelFrontend
from birdclef.io import atomic_path

CHECKPOINT_FORMAT = 1


class BirdModel(nn.Module):
    """Audio (B, T) -> logits (B, n_classes)."""

    def __init__(self, frontend: MelFrontend, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.n_classes = n_classes

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.frontend(audio))

    def forward_images(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone only: images (B, 3, n_mels, frames) from a MelFrontend -> logits."""
        return self.backbone(images)


def build_model(
    model_cfg: ModelConfig,
    frontend_cfg: FrontendConfig,
    n_classes: int,
    *,
    pretrained: bool | None = None,
    drop_path_rate: float = 0.0,
) -> BirdModel:
    """Front end + backbone. `pretrained=False` overrides the config (used when a checkpoint follows).
    `drop_path_rate` (stochastic depth) only acts in training, so checkpoints do not record it."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if pretrained is None:
        pretrained = model_cfg.pretrained or model_cfg.pretrained_path is not None
    backbone = create_backbone(model_cfg, n_classes, pretrained=pretrained,
                               drop_path_rate=drop_path_rate)
    return BirdModel(MelFrontend(frontend_cfg), backbone, n_classes)


def create_backbone(
    model_cfg: ModelConfig, n_classes: int, *, pretrained: bool, drop_path_rate: float = 0.0
) -> nn.Module:
    """timm backbone; ImageNet weights from `pretrained_path` if set, else from timm's cache."""

    # passed only when asked for: some backbones (efficientvit_b0 among them) have no stochastic depth
    noise = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}

    def create(timm_pretrained: bool) -> nn.Module:
        try:
            return timm.create_model(
                model_cfg.backbone, pretrained=timm_pretrained, drop_rate=model_cfg.drop_rate,
                num_classes=n_classes, **noise,
            )
        except TypeError as exc:
            if noise and "drop_path_rate" in str(exc):
                raise ValueError(
                    f"backbone '{model_cfg.backbone}' has no stochastic depth: set drop_path_rate: 0"
                ) from None
            raise

    if not pretrained:
        return create(False)
    if model_cfg.pretrained_path is not None:
        backbone = create(False)
        load_pretrained_weights(backbone, model_cfg.pretrained_path)
        return backbone
    try:
        return create(True)
    except Exception as exc:  # no internet / not in the HF cache: say what to do instead
        raise RuntimeError(
            f"could not get ImageNet weights for '{model_cfg.backbone}' from timm/Hugging Face "
            f"({type(exc).__name__}: {exc}). There is no download here: set model.pretrained_path to a "
            "local .pth/.bin/.safetensors state dict, or set model.pretrained: false."
        ) from exc


def load_pretrained_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load an ImageNet state dict into `backbone`, skipping the classifier tensors whose shape differs.

    Any other missing, unexpected or mis-shaped tensor is an error (a file for another architecture
    must not load silently). Returns the names of the skipped classifier tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_path: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Mapping[str, Any] = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = _unwrap_state_dict(state)

    own = backbone.state_dict()
    classifier = _classifier_prefixes(backbone)
    skipped = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    bad_shapes = [k for k in skipped if not k.startswith(classifier)]
    # BatchNorm counters are absent from many published weight files; they carry no learnt value.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.startswith(classifier)]
    unexpected = [k for k in state if k not in own]
    if bad_shapes or missing or unexpected:
        raise ValueError(
            f"{path} does not fit backbone {type(backbone).__name__}: "
            f"shape mismatch {bad_shapes[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    backbone.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def _unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, the usual {'state_dict': ...}/{'model': ...} wrappers, or our checkpoint."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("backbone.") for k in tensors):  # a BirdModel checkpoint as initialisation
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def _classifier_prefixes(backbone: nn.Module) -> tuple[str, ...]:
    """timm names the final layer in pretrained_cfg['classifier'] (e.g. 'head.classifier.4')."""
    name = getattr(backbone, "pretrained_cfg", {}).get("classifier", "")
    names = (name,) if isinstance(name, str) else tuple(name)
    return tuple(f"{n}." for n in names if n)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) and DDP/DataParallel (`module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `model` under the names of the plain modules: without the wrappers'
    prefixes, also where a submodule is wrapped (the engine compiles `model.backbone`, whose
    parameters are then named `backbone._orig_mod.*`)."""
    state = unwrap_model(model).state_dict()
    return {k.replace("_orig_mod.", ""): v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_cfg: ModelConfig,
    frontend_cfg: FrontendConfig,
    classes: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the model and what rebuilds it, atomically (temp file in the same folder + rename)."""
    plain = unwrap_model(model)
    n_out = getattr(plain, "n_classes", None)
    if n_out is not None and n_out != len(classes):
        raise ValueError(f"model has {n_out} outputs but {len(classes)} class names were given")
    extra = _plain(dict(extra or {}), "extra")
    payload = {
        "format_version": CHECKPOINT_FORMAT,
        "state_dict": plain_state_dict(plain),
        "model_cfg": model_cfg.model_dump(mode="json"),
        "frontend_cfg": frontend_cfg.model_dump(mode="json"),
        "classes": [str(c) for c in classes],
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[BirdModel, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone (no pretrained download), in eval mode.

    Returns (model, meta) where meta holds format_version, model_cfg, frontend_cfg (plain dicts),
    classes and extra.
    """
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {version!r}, expected {CHECKPOINT_FORMAT}")
    model_cfg = ModelConfig(**{**ckpt["model_cfg"], "pretrained": False, "pretrained_path": None})
    frontend_cfg = FrontendConfig(**ckpt["frontend_cfg"])
    model = build_model(model_cfg, frontend_cfg, len(ckpt["classes"]), pretrained=False)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def _plain(value: Any, where: str) -> Any:
    """A copy of `value` made of the types torch.load(weights_only=True) accepts.

    numpy scalars (and other subclasses of int/float/str) become the builtin type; anything else
    that is not a tensor, mapping or sequence is refused here rather than at load time.
    """
    if value is None or isinstance(value, torch.Tensor):
        return value
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar (np.float32 etc.)
        return _plain(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[_plain(k, where)] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a weights-only checkpoint")
