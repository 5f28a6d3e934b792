"""BirdModel building, pretrained loading from a local file, and the checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from birdclef import model as model_mod
from birdclef.config import FrontendConfig, ModelConfig
from birdclef.windows import window_samples
from birdclef.model import BirdModel, build_model, load_checkpoint, load_pretrained_weights, save_checkpoint

FRONT = FrontendConfig()
N_CLASSES = 7
CLASSES = [f"sp{i}" for i in range(N_CLASSES)]


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return torch.randn(2, window_samples(FRONT), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vit() -> BirdModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="efficientvit_b0"), FRONT, N_CLASSES).eval()


@pytest.mark.parametrize("backbone", ["efficientvit_b0", "mnasnet_100"])
def test_builds_and_gives_logits(backbone: str, audio: torch.Tensor) -> None:
    m = build_model(ModelConfig(backbone=backbone, pretrained=False), FRONT, N_CLASSES).eval()
    with torch.inference_mode():
        logits = m(audio)
        via_images = m.forward_images(m.frontend(audio))
    assert logits.shape == (2, N_CLASSES)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, via_images, rtol=0, atol=0)


def test_drop_rate_reaches_the_head(vit: BirdModel) -> None:
    dropout = vit.backbone.head.classifier[3]
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p == pytest.approx(0.1)


def test_checkpoint_round_trip(tmp_path: Path, vit: BirdModel, audio: torch.Tensor) -> None:
    path = tmp_path / "sub" / "bird.pt"
    extra = {"fold": 2, "seed": np.int64(2026), "auc": np.float32(0.75), "tags": ("a", Path("b"))}
    save_checkpoint(path, vit, model_cfg=ModelConfig(), frontend_cfg=FRONT, classes=CLASSES, extra=extra)
    assert [p.name for p in path.parent.iterdir()] == ["bird.pt"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format_version", "state_dict", "model_cfg", "frontend_cfg", "classes", "extra"}
    assert raw["classes"] == CLASSES
    assert raw["extra"] == {"fold": 2, "seed": 2026, "auc": pytest.approx(0.75), "tags": ["a", "b"]}
    assert type(raw["extra"]["seed"]) is int

    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["classes"] == CLASSES and meta["extra"]["fold"] == 2
    assert FrontendConfig(**meta["frontend_cfg"]) == FRONT
    with torch.inference_mode():
        torch.testing.assert_close(loaded(audio), vit(audio), rtol=0, atol=0)


def test_checkpoint_never_downloads(tmp_path: Path, vit: BirdModel, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bird.pt"
    cfg = ModelConfig(pretrained=True, pretrained_path=str(tmp_path / "gone.pth"))
    save_checkpoint(path, vit, model_cfg=cfg, frontend_cfg=FRONT, classes=CLASSES)
    real = timm.create_model

    def offline(*args: object, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        assert not pretrained, "load_checkpoint must not ask timm for pretrained weights"
        return real(*args, pretrained=False, **kwargs)

    monkeypatch.setattr(model_mod.timm, "create_model", offline)
    loaded, meta = load_checkpoint(path)
    assert meta["model_cfg"]["pretrained_path"] == str(tmp_path / "gone.pth")  # stored as given
    assert loaded.n_classes == N_CLASSES


def test_checkpoint_refuses_unstorable_extra(tmp_path: Path, vit: BirdModel) -> None:
    with pytest.raises(TypeError, match=r"extra\.bad"):
        save_checkpoint(
            tmp_path / "x.pt", vit, model_cfg=ModelConfig(), frontend_cfg=FRONT, classes=CLASSES,
            extra={"bad": object()},
        )
    with pytest.raises(ValueError, match="7 outputs but 2 class names"):
        save_checkpoint(tmp_path / "x.pt", vit, model_cfg=ModelConfig(), frontend_cfg=FRONT, classes=["a", "b"])
    assert not list(tmp_path.iterdir())


def test_missing_pretrained_path_is_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "efficientvit_b0.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_model(ModelConfig(pretrained_path=str(missing)), FRONT, N_CLASSES)


def test_pretrained_download_failure_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_internet(*args: object, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("cannot reach huggingface.co")
        raise AssertionError("unexpected call")

    monkeypatch.setattr(model_mod.timm, "create_model", no_internet)
    with pytest.raises(RuntimeError, match="pretrained_path.*pretrained: false"):
        build_model(ModelConfig(pretrained=True), FRONT, N_CLASSES)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_path_loads_backbone_and_skips_classifier(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    imagenet = timm.create_model("efficientvit_b0", pretrained=False, num_classes=1000)
    ref = imagenet.state_dict()
    path = tmp_path / f"efficientvit_b0{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        # published files often lack BatchNorm counters; loading must not care
        save_file({k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}, str(path))
    else:
        torch.save(ref, path)

    torch.manual_seed(2)
    m = build_model(ModelConfig(pretrained_path=str(path)), FRONT, N_CLASSES)
    got = m.backbone.state_dict()
    classifier = {"head.classifier.4.weight", "head.classifier.4.bias"}
    for k, v in ref.items():
        if k in classifier or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(got[k], v), k
    assert got["head.classifier.4.weight"].shape == (N_CLASSES, 1280)


def test_pretrained_file_for_another_architecture_fails(tmp_path: Path) -> None:
    path = tmp_path / "mnasnet.pth"
    torch.save(timm.create_model("mnasnet_100", pretrained=False).state_dict(), path)
    backbone = timm.create_model("efficientvit_b0", pretrained=False, num_classes=N_CLASSES)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained_weights(backbone, path)
