"""Training pieces: crops and padding, mix labels, soundscape mixing, masked loss, mixup, PL
targets and stream, a short real training, resume after a kill."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef.config import PseudoLabelStreamConfig
from birdclef.data import (
    BACKGROUND_KEY,
    BandLimit,
    PSEUDO_MIX_KEY,
    LabelledClips,
    PseudoLabelDataset,
    PseudoLabelStream,
    SoundscapeWindows,
    TrainDataset,
    ValidDataset,
    WindowMix,
    upsample,
)
from birdclef.engine import batch_mixup, masked_bce
from birdclef.pseudo_labels import blend_max_pl, sharpen, student_targets
from birdclef.store import AudioStore, ShardWriter

W, SPAN = 100, 120  # a 100-sample "window" and 120-sample first/last span keep arrays readable


def make_store(tmp_path: Path, records: dict[str, tuple[np.ndarray, np.ndarray]]) -> AudioStore:
    writer = ShardWriter(tmp_path / "clips", "float32", 1 << 20)
    rows = []
    for rid, (first, last) in records.items():
        rows.append((rid, *writer.append(first), *writer.append(last)))
    cols = ["record_id", "first_shard", "first_offset", "first_length", "last_shard",
            "last_offset", "last_length"]
    writer.close(pd.DataFrame(rows, columns=cols))
    return AudioStore(tmp_path / "clips")


def rows(*specs: tuple[str, str, str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"record_id": r, "primary_label": f, "first_species": f, "last_species": l,
          "secondary_labels": s} for r, f, l, s in specs]
    )


CLASSES = ["a", "b", "c", "d"]


@pytest.fixture
def clips(tmp_path: Path) -> LabelledClips:
    long_first = np.arange(1, 301, dtype=np.float32)  # 300 samples: first part
    long_last = -np.arange(1, 301, dtype=np.float32)  # negative: the end part
    short = np.full(40, 7.0, dtype=np.float32)
    store = make_store(tmp_path, {"R1": (long_first, long_last), "R2": (short, short)})
    table = rows(("R1", "a", "b", ["c", "a"]), ("R2", "c", "c", ["d"]))
    return LabelledClips(table, CLASSES, store)


def test_targets_and_masks(clips: LabelledClips) -> None:
    # two-folder record: both species positive; secondary c masked; a is primary so never masked
    assert clips.targets.tolist() == [[1, 1, 0, 0], [0, 0, 1, 0]]
    assert clips.masks.tolist() == [[1, 1, 0, 1], [1, 1, 1, 0]]


def test_train_crop_stays_in_first_or_last_span(clips: LabelledClips) -> None:
    seen_first = seen_last = False
    for seed in range(40):
        crop = clips.train_crop(0, np.random.default_rng(seed), W, SPAN)
        assert crop.size == W
        if crop[0] > 0:  # from the first part: values 1..120 only, contiguous
            seen_first = True
            assert crop[-1] <= SPAN and np.all(np.diff(crop) == 1)
        else:  # from the last part: the last 120 samples are -181..-300
            seen_last = True
            assert crop.min() >= -300 and crop.max() <= -181
    assert seen_first and seen_last


def test_short_clip_random_left_pad_and_centred_valid(clips: LabelledClips) -> None:
    lefts = set()
    for seed in range(30):
        crop = clips.train_crop(1, np.random.default_rng(seed), W, SPAN)
        nz = np.flatnonzero(crop)
        assert nz.size == 40 and np.all(np.diff(nz) == 1)
        lefts.add(int(nz[0]))
    assert len(lefts) > 5 and max(lefts) <= W - 40
    valid = clips.valid_clip(1, W)
    assert np.flatnonzero(valid)[0] == 30  # floor(60 / 2)
    assert ValidDataset(clips, W)[0][0].tolist() == list(range(1, 101))


def test_dataset_mix_takes_max_labels_and_masks_other_secondaries(clips: LabelledClips) -> None:
    dataset = TrainDataset(clips, W, SPAN, seed=0, mix_p=1.0, mix_weight=(0.2, 1.0))
    for i in range(2):
        audio, target, mask, pseudo = dataset[i]
        assert audio.shape == (W,) and pseudo == 0
        assert target.max() == 1 and mask.min() >= 0
    # item 1 is R2 (c; secondary d masked); find an epoch where its mix partner is R1 (a, b;
    # secondary c): the union of labels, R1's secondary c unmasked again because c is a target
    partnered = []
    for epoch in range(10):
        dataset.set_epoch(epoch)
        _, target, mask, _ = dataset[1]
        if target[0] == 1:
            partnered.append(epoch)
            assert target.tolist() == [1, 1, 1, 0] and mask.tolist() == [1, 1, 1, 0]
        else:  # mixed with itself
            assert target.tolist() == [0, 0, 1, 0] and mask.tolist() == [1, 1, 1, 0]
    assert partnered and len(partnered) < 10  # both cases happen
    # items are deterministic in (seed, epoch, index)
    dataset.set_epoch(0)
    np.testing.assert_array_equal(dataset[0][0], dataset[0][0])
    first = dataset[0][0]
    dataset.set_epoch(1)
    assert not np.array_equal(first, dataset[0][0])


def test_masked_bce_denominator_counts_masked_elements() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0.0, 1) + 0 + bce(-1.0, 0) + bce(0.5, 1)) / 4
    assert masked_bce(logits, target, mask).item() == pytest.approx(expected, rel=1e-6)


def test_batch_mixup_labels() -> None:
    audio = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    target = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, 0.6]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    perm = torch.tensor([1, 0])
    a, t, m = batch_mixup(audio, target, mask, 0.5, perm)
    assert a.tolist() == [[2.0, 2.0], [2.5, 2.5]]
    assert t.flatten().tolist() == pytest.approx([1.0, 1.0, 0.6, 1.0, 1.0, 0.6])
    # min of masks is [0, 0, 1] then max with targets: soft targets become fractional weights
    assert m.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    soft = torch.tensor([[0.2, 0.0], [0.0, 0.0]])
    _, _, m2 = batch_mixup(audio, soft, torch.tensor([[0.0, 1.0], [0.0, 1.0]]), 0.5, perm)
    assert m2[:, 0].tolist() == pytest.approx([0.2, 0.2])


def test_upsample_to_minimum() -> None:
    table = rows(*[(f"A{i}", "a", "a", []) for i in range(3)], *[(f"B{i}", "b", "b", []) for i in range(12)])
    out = upsample(table, 10, seed=5)
    assert out["primary_label"].value_counts().to_dict() == {"a": 10, "b": 12}
    assert out.equals(upsample(table, 10, seed=5))
    assert out.iloc[:15].equals(table)


def test_max_pl_blend_by_hand() -> None:
    probs = np.array([[[0.2, 0.7]], [[0.6, 0.1]]])  # 2 folds, 1 window, 2 classes
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    l0, l1 = [logit(0.2), logit(0.7)], [logit(0.6), logit(0.1)]
    m = [max(l0[0], l1[0]), max(l0[1], l1[1])]
    mean_m = sum(m) / 2
    for fold, lk in ((0, l0), (1, l1)):
        shift = sum(lk) / 2 - mean_m
        expected = [1 / (1 + math.exp(-(lk[j] + m[j] + shift) / 2)) for j in range(2)]
        assert blend_max_pl(probs)[fold, 0].tolist() == pytest.approx(expected, rel=1e-5)


def _windows(tmp_path: Path, n: int, seconds_per: int = 3) -> SoundscapeWindows:
    """n soundscapes of `seconds_per` windows of W samples (sample rate W: 1-s windows), soundscape
    i holding the value i everywhere."""
    writer = ShardWriter(tmp_path / "scapes", "float32", 1 << 20)
    addrs = [(f"s{i}", *writer.append(np.full(seconds_per * W, i, np.float32))) for i in range(n)]
    writer.close(pd.DataFrame(addrs, columns=["soundscape_id", "shard", "offset", "length"]))
    return SoundscapeWindows(AudioStore(tmp_path / "scapes"), W, sample_rate=W)


def _pl_dataset(tmp_path: Path, n: int, dup: int) -> PseudoLabelDataset:
    windows = _windows(tmp_path, n)
    targets = np.repeat(np.arange(n, dtype=np.float32) / 10, 3)[:, None].repeat(2, axis=1)
    return PseudoLabelDataset(windows, targets, dup, None, seed=0)


def test_soundscape_windows_follow_the_window_rule(tmp_path: Path) -> None:
    windows = _windows(tmp_path, 2)
    assert len(windows) == 6
    assert windows.keys.to_dict("list") == {"soundscape_id": ["s0"] * 3 + ["s1"] * 3,
                                            "window": [0, 1, 2] * 2}
    assert windows.read(4).tolist() == [1.0] * W


def test_window_mix_targets_and_the_arms_see_the_same_audio(
    clips: LabelledClips, tmp_path: Path
) -> None:
    windows = _windows(tmp_path, 2)
    targets = np.zeros((6, 4), np.float32)
    targets[3:, 3] = 0.7  # soundscape s1: class d at 0.7
    pseudo = WindowMix(windows, 1.0, (0.5, 0.5), PSEUDO_MIX_KEY, targets)
    labelled_only = WindowMix(windows, 1.0, (0.5, 0.5), PSEUDO_MIX_KEY, None)
    plain = TrainDataset(clips, W, SPAN, seed=1, mix_p=0.0, mix_weight=(0.2, 1.0))
    with_pl = TrainDataset(clips, W, SPAN, 1, 0.0, (0.2, 1.0), [pseudo])
    no_pl = TrainDataset(clips, W, SPAN, 1, 0.0, (0.2, 1.0), [labelled_only])
    saw_s1 = False
    for i in range(2):
        base, a, b = plain[i], with_pl[i], no_pl[i]
        np.testing.assert_array_equal(a[0], b[0])  # same windows, same weights
        added = a[0] - base[0]  # the window's constant value times 0.5
        assert np.allclose(added, added[0]) and added[0] in (0.0, 0.5)
        np.testing.assert_array_equal(b[1], base[1])  # labelled-only: the clip's own targets
        if added[0] == 0.5:  # a window of s1: class d becomes a soft positive, never masked
            saw_s1 = True
            assert a[1][3] == pytest.approx(0.7) and a[2][3] == pytest.approx(1.0 if base[2][3] else 0.7)
    for epoch in range(1, 12):  # both soundscapes get drawn
        with_pl.set_epoch(epoch)
        plain.set_epoch(epoch)
        saw_s1 |= bool((with_pl[0][0] - plain[0][0])[0] == 0.5)
    assert saw_s1


def test_background_mix_leaves_labels_and_other_draws_alone(
    clips: LabelledClips, tmp_path: Path
) -> None:
    windows = _windows(tmp_path, 2)
    background = WindowMix(windows, 0.5, (0.2, 0.8), BACKGROUND_KEY)
    plain = TrainDataset(clips, W, SPAN, 3, 0.5, (0.2, 1.0))
    mixed = TrainDataset(clips, W, SPAN, 3, 0.5, (0.2, 1.0), [background])
    changed = 0
    for epoch in range(20):
        plain.set_epoch(epoch)
        mixed.set_epoch(epoch)
        a, b = plain[0], mixed[0]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
        changed += not np.array_equal(a[0], b[0])
    assert 3 <= changed <= 17  # p = 0.5


def test_band_limit_is_a_butterworth_low_pass_and_draws_nothing_when_off() -> None:
    sr = 32000
    t = np.arange(2 * sr) / sr
    audio = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 12000 * t)).astype(np.float32)
    out = BandLimit(1.0, (3000.0, 3000.0), 4, sr).apply(audio, np.random.default_rng(0))
    frequencies = np.fft.rfftfreq(len(audio), 1 / sr)
    before, after = np.abs(np.fft.rfft(audio)), np.abs(np.fft.rfft(out))
    for hz in (1000, 12000):  # |H(f)| = 1 / sqrt(1 + (f / 3000) ** 8): -0.0005 dB and -48 dB
        k = int(np.argmin(np.abs(frequencies - hz)))
        assert after[k] / before[k] == pytest.approx(1 / math.sqrt(1 + (hz / 3000) ** 8), rel=1e-3)
    assert out.dtype == np.float32 and out.shape == audio.shape
    rng = np.random.default_rng(5)
    assert BandLimit(0.0, (3000.0, 3000.0), 4, sr).apply(audio, rng) is audio
    assert rng.random() == np.random.default_rng(5).random()  # p = 0 takes no draw


def test_band_limit_filters_clips_only_and_keeps_their_labels(clips: LabelledClips) -> None:
    band = BandLimit(1.0, (2000.0, 2000.0), 2, 32000)
    plain = TrainDataset(clips, W, SPAN, 3, 0.0, (0.2, 1.0))
    limited = TrainDataset(clips, W, SPAN, 3, 0.0, (0.2, 1.0), band_limit=band)
    a, b = plain[0], limited[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    high = np.fft.rfftfreq(len(a[0]), 1 / 32000) > 8000
    energy = lambda x: float(np.sum(np.abs(np.fft.rfft(x))[high] ** 2))  # noqa: E731
    assert energy(b[0]) < energy(a[0]) / 100  # at 4x the cutoff a 2nd-order low-pass is -24 dB


def test_confidence_sampling_follows_weights(tmp_path: Path) -> None:
    windows = _windows(tmp_path, 2)
    weights = np.array([0, 0, 0, 0, 1.0, 0])
    mix = WindowMix(windows, 1.0, (1.0, 1.0), PSEUDO_MIX_KEY, weights=weights)
    rng = np.random.default_rng(0)
    assert {mix.pick(rng) for _ in range(50)} == {4}


def test_student_targets_order_fold_mean_and_sharpening() -> None:
    keys = pd.DataFrame({"soundscape_id": ["b", "b", "a"], "window": [1, 0, 0]})
    table = pd.DataFrame({
        "soundscape_id": ["a", "a", "b", "b", "b", "b"], "window": [0, 0, 0, 1, 0, 1],
        "start_second": 0.0, "fold": [0, 1, 0, 0, 1, 1],
        "x": [0.1, 0.3, 0.5, 0.6, 0.7, 0.8], "y": [0.9, 0.9, 0.2, 0.2, 0.4, 0.4]})
    cfg = PseudoLabelStreamConfig(max_pl=False, fold_source="same_fold")
    targets = student_targets(table, ["x", "y"], keys, cfg)
    assert targets[0][:, 0].tolist() == pytest.approx([0.6, 0.5, 0.1])
    assert targets[1][:, 0].tolist() == pytest.approx([0.8, 0.7, 0.3])
    mean = student_targets(table, ["x", "y"], keys, cfg.model_copy(update={"fold_source": "mean"}))
    assert mean[0][:, 0].tolist() == pytest.approx([0.7, 0.6, 0.2])
    sharp = student_targets(table, ["x", "y"], keys,
                            cfg.model_copy(update={"power": 2.0, "threshold": 0.1}))
    assert sharp[0][:, 0].tolist() == pytest.approx([0.36, 0.25, 0.0])
    assert sharpen(np.array([0.5]), 1.0, 0.0).tolist() == [0.5]


def test_pseudo_label_stream_refills_across_epochs(tmp_path: Path) -> None:
    dataset = _pl_dataset(tmp_path, n=3, dup=1)
    assert dataset[1][0].shape == (3, W) and dataset[1][1][0].tolist() == pytest.approx([0.1, 0.1])
    stream = PseudoLabelStream(dataset, soundscapes_per_batch=2, shuffle=False, seed=0, restart=True)
    sizes = [stream.next()[0].shape[0] for _ in range(5)]  # passes of [2, 1] soundscapes
    assert sizes == [6, 3, 6, 3, 6] and stream.passes == 2
    crashing = PseudoLabelStream(dataset, 2, shuffle=False, seed=0, restart=False)
    crashing.next(), crashing.next()
    with pytest.raises(RuntimeError, match="SPEC 9.2"):
        crashing.next()


def test_pseudo_label_stream_resume_state(tmp_path: Path) -> None:
    dataset = _pl_dataset(tmp_path, n=4, dup=2)
    a = PseudoLabelStream(dataset, 1, shuffle=True, seed=3, restart=True)
    taken = [a.next()[0][0, 0].item() for _ in range(5)]
    b = PseudoLabelStream(dataset, 1, shuffle=True, seed=3, restart=True)
    b.load_state({"passes": 0, "consumed": 3})
    assert [b.next()[0][0, 0].item() for _ in range(2)] == taken[3:]


RESUME_SCRIPT = """
from birdclef.cli import main
main(["train-teacher"])
"""


@pytest.mark.e2e
def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """Kill train_teacher mid-epoch; the rerun resumes from the saved epoch, same final weights."""

    work = tmp_path / "w"
    work.mkdir()
    repo = Path(__file__).resolve().parents[1]
    import shutil
    import yaml

    from birdclef.profiles import profile_params

    params = profile_params("tiny", repo / "profiles")
    params["teacher"].update(epochs=3, folds=[0])
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / ".dvc").mkdir()  # marks the tracking root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}

    def run(args: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, **kw)

    for stage in ("make-sample", "preprocess", "sample"):
        assert run([sys.executable, "-m", "birdclef.cli", stage]).wait() == 0
    script = [sys.executable, "-c", RESUME_SCRIPT]
    assert run(script).wait() == 0
    reference = (work / "reports/details/teacher.json").read_text()
    shutil.rmtree(work / "models")
    proc = run(script)
    resume = work / ".resume/teacher/fold0.pt"
    deadline = time.time() + 300
    # the resume state after epoch 1 is the signal: the kill lands in epoch 2 (seconds long)
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    killed = str(proc.pid)
    assert resume.exists() and not (work / "models/teacher/fold0.pt").exists()
    # what a kill -9 leaves: its temp output folder, and its stage and fold runs RUNNING
    assert [p.name for p in (work / "models").glob(".teacher.tmp-*")] == [f".teacher.tmp-{killed}"]
    assert runs_of(work, killed) == {("train_teacher", "RUNNING"), ("teacher-fold0", "RUNNING")}
    proc = run(script)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out
    assert "resuming after epoch" in out
    import json

    assert json.loads((work / "reports/details/teacher.json").read_text())["state_sha256"] == json.loads(
        reference
    )["state_sha256"]
    # the rerun ended the dead runs and removed the dead process's temp folder
    assert runs_of(work, killed) == {("train_teacher", "KILLED"), ("teacher-fold0", "KILLED")}
    assert runs_of(work, str(proc.pid)) == {("train_teacher", "FINISHED"), ("teacher-fold0", "FINISHED")}
    assert not list((work / "models").glob(".teacher.*-*"))


def runs_of(work: Path, pid: str) -> set[tuple[str, str]]:
    """(name, status) of the MLflow runs that process `pid` opened."""
    import sqlite3

    with sqlite3.connect(work / "mlflow.db") as db:
        return set(db.execute("select r.name, r.status from runs r join tags t on t.run_uuid = "
                              "r.run_uuid where t.key = 'process.pid' and t.value = ?", (pid,)))


def smoke_job(clips: LabelledClips, resample_min: int):
    """A fold job small enough to train in a blink: 0.1-s windows at 1 kHz (W = 100 samples) give a
    32 x 34 mel image; fold 0 validates on R1 and trains on R2, upsampled to `resample_min` items."""
    from birdclef.config import FrontendConfig, ModelConfig, TeacherConfig
    from birdclef.engine import FoldJob

    frontend = FrontendConfig(sample_rate=1000, window_seconds=0.1, n_fft=64, win_length=32,
                              hop_length=3, f_min=50, f_max=400, n_mels=32)
    cfg = TeacherConfig(seed=0, epochs=2, batch_size=2, valid_batch_size=2, max_lr=1e-3,
                        weight_decay=0.01, pct_start=0.1, div_factor=25, final_div_factor=100,
                        grad_clip_value=2.0, max_shift_seconds=0.02, resample_min=resample_min,
                        mix_p=0.5, mix_weight_min=0.2, mix_weight_max=1.0, mixup_p=0.5,
                        loudness_db_range=10, num_workers=0, channels_last=True)
    return FoldJob(role="smoke", fold=0, cfg=cfg, model_cfg=ModelConfig(), frontend_cfg=frontend,
                   table=clips.rows.assign(fold=[0, 1]), classes=CLASSES, clip_store=clips.store)


def test_two_training_steps_change_the_weights_and_save_a_loadable_checkpoint(
    clips: LabelledClips, tmp_path: Path
) -> None:
    """A real (tiny) training run through the engine's own pieces: two optimisation steps, finite
    loss, moved weights, a checkpoint that loads back to the same weights."""
    from birdclef.config import FrontendConfig
    from birdclef.engine import build_trainer, fold_datasets, state_sha256, train_epoch
    from birdclef.model import load_checkpoint, save_checkpoint

    job = smoke_job(clips, resample_min=2)
    frontend: FrontendConfig = job.frontend_cfg
    train_set, valid_set, _ = fold_datasets(job)
    assert len(train_set) == 2 and len(valid_set) == 1
    trainer = build_trainer(job, steps_per_epoch=1)
    before = state_sha256(trainer.model)
    steps = [train_epoch(trainer, job, train_set, epoch, "smoke") for epoch in range(2)]
    assert [s.steps for s in steps] == [1, 1] and all(np.isfinite(s.loss) for s in steps)
    assert state_sha256(trainer.model) != before
    save_checkpoint(tmp_path / "fold0.pt", trainer.model, model_cfg=job.model_cfg,
                    frontend_cfg=frontend, classes=CLASSES)
    loaded, meta = load_checkpoint(tmp_path / "fold0.pt")
    assert meta["classes"] == CLASSES and state_sha256(loaded) == state_sha256(trainer.model)


def test_a_student_starts_from_its_labeller_checkpoint(clips: LabelledClips, tmp_path: Path) -> None:
    """`student.init: labeller`: the job's first weights are the checkpoint's, not fresh ones, and a
    checkpoint of other classes is refused."""
    from dataclasses import replace

    from birdclef.engine import build_trainer, state_sha256
    from birdclef.model import save_checkpoint

    job = smoke_job(clips, resample_min=2)
    teacher = build_trainer(job, steps_per_epoch=1).model  # fresh weights from the global RNG
    save_checkpoint(tmp_path / "fold0.pt", teacher, model_cfg=job.model_cfg,
                    frontend_cfg=job.frontend_cfg, classes=CLASSES)
    fresh = build_trainer(job, steps_per_epoch=1).model
    started = build_trainer(replace(job, init_checkpoint=tmp_path / "fold0.pt"), steps_per_epoch=1).model
    assert state_sha256(started) == state_sha256(teacher) != state_sha256(fresh)
    save_checkpoint(tmp_path / "other.pt", teacher, model_cfg=job.model_cfg,
                    frontend_cfg=job.frontend_cfg, classes=["w", "x", "y", "z"])
    with pytest.raises(ValueError, match="classes differ"):
        build_trainer(replace(job, init_checkpoint=tmp_path / "other.pt"), steps_per_epoch=1)


def test_training_progress_in_a_log_is_not_redrawn_every_step(
    clips: LabelledClips, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under DVC (stderr not a terminal) the bar redraws at its 30-s interval: 8 steps of a fast
    epoch draw its first line only (the stage logs each epoch's loss and rate when it ends), not
    one more line per step."""
    from birdclef.engine import build_trainer, fold_datasets, train_epoch

    job = smoke_job(clips, resample_min=16)
    train_set, _, _ = fold_datasets(job)
    trainer = build_trainer(job, steps_per_epoch=8)
    capsys.readouterr()
    assert train_epoch(trainer, job, train_set, 0, "smoke").steps == 8
    lines = [line for line in capsys.readouterr().err.split("\r") if line.strip()]
    assert len(lines) == 1 and "0/8" in lines[0], lines


def test_labelled_only_extra_items_pass_no_label(tmp_path: Path) -> None:
    windows = _windows(tmp_path, 2)
    targets = np.full((6, 2), 0.8, np.float32)
    audio, target, mask = PseudoLabelDataset(windows, targets, 1, None, 0, use_targets=False)[1]
    assert audio.shape == (3, W) and not target.any() and not mask.any()
    # even after a batch mixup with a labelled clip, the window adds no target
    clip_t, clip_m = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    _, mixed_t, _ = batch_mixup(torch.zeros(2, 3), torch.cat([clip_t, torch.from_numpy(target[:1])]),
                                torch.cat([clip_m, torch.from_numpy(mask[:1])]), 0.5,
                                torch.tensor([1, 0]))
    assert mixed_t.tolist() == [[1.0, 0.0], [1.0, 0.0]]
