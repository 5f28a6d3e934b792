"""params.yaml -> typed, frozen, validated config.

Every section is a strict pydantic model: unknown keys, missing keys and wrong types fail with one
message that names the file and the dotted key. Each DVC stage reads only the sections it lists in
dvc.yaml, so a change to one section reruns only the stages that depend on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from birdclef.paths import MAX_ROUNDS

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class MakeSampleConfig(Section):
    """The generated sample corpus (DESIGN 5). Sizes are small so the pipeline runs on 2 CPU cores."""

    out_dir: str
    seed: int
    n_species: int = Field(ge=4, le=60)
    # Focal recordings per species of the main competition (2024 or 2025: the names are from 2024),
    # from the most to the least common species (log-spaced).
    bc24_records_max: int = Field(ge=5)
    bc24_records_min: int = Field(ge=5)
    # records per species in each extra source (previous years and the xeno-canto extra set)
    extra_records_per_species: int = Field(ge=0)
    n_soundscapes: int = Field(ge=1)
    n_eval_soundscapes: int = Field(ge=0)
    soundscape_seconds: float = Field(gt=0)
    # Length of the labelled evaluation soundscapes (null = soundscape_seconds). Many short ones
    # give the evaluation more independent positives than a few long ones (1 minute as in 2025).
    eval_soundscape_seconds: float | None = Field(default=None, gt=0)
    record_seconds_min: float = Field(gt=0)
    record_seconds_max: float = Field(gt=0)
    # The main competition's layout: birdclef-2024/ (eBird codes, XC records) or birdclef-2025/
    # (BirdCLEF+: numeric iNaturalist codes for non-birds, XC, iNat and CSA records, taxonomy.csv).
    layout: Literal["2024", "2025"] = "2024"


class SourcesConfig(Section):
    """Where each source lives (SPEC 1.1). `null` means the source is absent.

    `root` is the folder DVC tracks as the raw-data input of preprocess, and of the stages that
    read the optional inputs (near_duplicates, eval_soundscapes): a DVC dependency cannot be null,
    so these two, when set, must lie under it. `main` is the competition that defines the task:
    its species are the classes, its soundscapes are pseudo-labelled and its
    sample_submission.csv fixes the class order. Every other source is extra data, ranked by
    recency (bc25 > bc24 > bc23 > bc22 > bc21 > bc20 > bc00).
    """

    root: str
    main: Literal["bc24", "bc25"] = "bc24"
    # validate_default: the main source's folder is required even when the key is left out.
    bc25: str | None = Field(default=None, validate_default=True)
    bc24: str | None = Field(default=None, validate_default=True)
    bc23: str | None = None
    bc22: str | None = None
    bc21: str | None = None
    bc20: str | None = None
    bc00: str | None = None
    # Labelled soundscapes for the evaluate stage (the sample corpus has them; real data may not).
    eval_soundscapes: str | None = None
    # Optional CSV of near-duplicate pairs (columns r0, r1: `<species>/<file>` paths), SPEC 4.1.
    near_duplicates: str | None = None

    @field_validator("bc25", "bc24", mode="after")
    @classmethod
    def _main_source_is_set(cls, path: str | None, info: ValidationInfo) -> str | None:
        main = info.data.get("main")
        if path is None and main == info.field_name:
            raise ValueError(f"required when sources.main is {main!r}: the main competition's folder")
        return path

    @field_validator("eval_soundscapes", "near_duplicates", mode="after")
    @classmethod
    def _under_root(cls, path: str | None, info: ValidationInfo) -> str | None:
        root = os.path.normpath(str(info.data.get("root", "")))
        if path is not None and not Path(os.path.normpath(path)).is_relative_to(root):
            raise ValueError(f"{path} is not under sources.root ({root}): the stages that read it "
                             "depend on sources.root (move it there, or set it to null)")
        return path

    def is_root(self, folder: str) -> bool:
        """Whether `folder` is sources.root (make_sample's out_dir: the generated corpus is read)."""
        return Path(self.root).resolve() == Path(folder).resolve()

    @property
    def main_path(self) -> str:
        """The main competition's folder (set: the validator above checks it)."""
        return str(getattr(self, self.main))


class AudioConfig(Section):
    """Decoding and the sharded audio store (SPEC 2)."""

    sample_rate: int = 32000
    clip_seconds: float = 10.0  # start and end seconds kept of each record
    store_dtype: Literal["float32", "float16"] = "float32"
    shard_mb: int = Field(default=1024, ge=1)
    workers: int = Field(default=0, ge=0)  # 0 = every core
    # A record or soundscape that cannot be decoded: skip it (listed in data/interim/bad_files.csv,
    # its metadata status says why) or fail the stage once every bad file is listed.
    on_error: Literal["skip", "fail"] = "skip"


class SampleConfig(Section):
    """Cap-500 merge (SPEC 3.2), duplicates (SPEC 4.1) and folds (SPEC 4.2)."""

    cap: int = Field(ge=1)
    xc_species_threshold: int = Field(ge=1)
    n_folds: int = Field(ge=2)
    fold_seed: int = 0


class FrontendConfig(Section):
    """The mel front end of SPEC 4.5."""

    sample_rate: int = 32000
    window_seconds: float = 5.0
    n_fft: int = 1536
    win_length: int = 1024
    hop_length: int = 717
    f_min: float = 90.0
    f_max: float = 14000.0
    n_mels: int = 224
    db_offset: float = 40.0
    db_scale: float = 80.0
    # SPEC 9.10: the original divides by std with no epsilon; this guard keeps silent input finite.
    std_eps: float = 1e-8


class ModelConfig(Section):
    backbone: str = "efficientvit_b0"
    pretrained: bool = False
    pretrained_path: str | None = None
    drop_rate: float = Field(default=0.1, ge=0, lt=1)


def _require(section: Any, ok: bool, message: str) -> Any:
    """A section's cross-field check, for `model_validator(mode="after")`."""
    if not ok:
        raise ValueError(message)
    return section


class SoundscapeMixConfig(Section):
    """Background augmentation: with chance `p` a random window of an unlabelled soundscape is added
    under a labelled clip at an amplitude weight drawn from [weight_min, weight_max]; the clip's
    labels are unchanged. It shows the model the soundscapes' background and recording channel."""

    p: float = Field(default=0.0, ge=0, le=1)
    weight_min: float = Field(default=0.5, ge=0)
    weight_max: float = Field(default=0.5, ge=0)

    _check_order = model_validator(mode="after")(lambda s: _require(
        s, s.weight_min <= s.weight_max, "weight_min must not exceed weight_max"))


class BandLimitConfig(Section):
    """Channel augmentation: data.BandLimit's low-pass, its cutoff log-uniform in [min, max] Hz."""

    p: float = Field(default=0.0, ge=0, le=1)
    cutoff_hz_min: float = Field(default=2000.0, gt=0)
    cutoff_hz_max: float = Field(default=8000.0, gt=0)
    order: int = Field(default=2, ge=1, le=8)

    _check_order = model_validator(mode="after")(lambda s: _require(
        s, s.cutoff_hz_min <= s.cutoff_hz_max, "cutoff_hz_min must not exceed cutoff_hz_max"))


class TrainConfig(Section):
    """One training run (teacher or student), SPEC 4.3-4.9 and 6.1-6.4."""

    seed: int
    folds: list[int] | None = None  # None = every fold
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    valid_batch_size: int = Field(ge=1)
    max_lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    pct_start: float = Field(gt=0, lt=1)
    div_factor: float = Field(gt=0)
    final_div_factor: float = Field(gt=0)
    grad_clip_value: float = Field(ge=0)  # 0 = no clipping
    max_shift_seconds: float = Field(ge=0)
    resample_min: int = Field(ge=0)
    mix_p: float = Field(ge=0, le=1)  # dataset-level additive mix (SPEC 4.4)
    mix_weight_min: float = Field(ge=0)
    mix_weight_max: float = Field(ge=0)
    mixup_p: float = Field(ge=0, le=1)  # batch-level mixup (SPEC 6.4)
    loudness_db_range: float = Field(ge=0)
    train_on_all_folds: bool = False  # SPEC 9.1 bug, as a switch
    # stochastic depth of the backbone while training (student noise in Noisy Student)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    soundscape_mix: SoundscapeMixConfig = SoundscapeMixConfig()
    band_limit: BandLimitConfig = BandLimitConfig()
    num_workers: int = Field(ge=0)
    # ddp: DistributedDataParallel over `ddp_processes` processes (torchrun, launched by the
    # stage itself), each on the `auto` device: a GPU each where there are GPUs, else the CPU
    device: Literal["auto", "cpu", "cuda", "ddp"] = "auto"
    ddp_processes: int = Field(default=1, ge=1)
    amp: bool = True  # only on CUDA
    # NHWC convolutions: about 1.25x faster training and 1.9x faster inference on this CPU
    channels_last: bool = False
    compile: bool = False
    threads: int = Field(default=0, ge=0)  # torch CPU threads; 0 = every core

    _check_ddp = model_validator(mode="after")(lambda s: _require(
        s, s.ddp_processes == 1 or s.device == "ddp", "ddp_processes > 1 needs device: ddp"))


class PseudoLabelStreamConfig(Section):
    """How pseudo-labelled soundscape windows enter student training (SPEC 6.2, 6.3 and beyond).

    `mode: extra_items` is SPEC 6.3: each step appends `soundscapes_per_batch` soundscapes' windows
    to the labelled batch as items of their own. `mode: mix` is Noisy-Student mixing: with chance
    `mix_p` a labelled clip gets a pseudo-labelled window added at an amplitude weight in
    [mix_weight_min, mix_weight_max], its targets the element-wise max of both.
    `targets: labelled_only` keeps the same windows and audio but drops their pseudo-labels (mixed
    clips keep the clip's own targets; extra items carry no loss): the augmentation-only arm.
    """

    enabled: bool = True  # false: the control, no soundscape window reaches the student
    mode: Literal["extra_items", "mix"] = "extra_items"
    targets: Literal["pseudo", "labelled_only"] = "pseudo"
    # extra_items mode
    soundscapes_per_batch: int = Field(default=1, ge=1)  # SPEC: 4 soundscapes x 48 windows
    windows_per_soundscape: int | None = None  # None = every window of the soundscape
    dup: int = Field(default=10, ge=1)
    shuffle: bool = False
    restart: bool = True  # SPEC 9.2: False reproduces the refill crash
    # mix mode
    mix_p: float = Field(default=1.0, ge=0, le=1)
    mix_weight_min: float = Field(default=0.5, ge=0)
    mix_weight_max: float = Field(default=0.5, ge=0)
    # which windows: every window alike, or in proportion to its top pseudo-label probability
    sampling: Literal["uniform", "confidence"] = "uniform"
    # the targets: SPEC 6.2's logit blend, which folds' labels, sharpening and zeroing
    max_pl: bool = True
    fold_source: Literal["same_fold", "mean"] = "same_fold"
    power: float = Field(default=1.0, gt=0)  # probabilities raised to this power (sharpening > 1)
    threshold: float = Field(default=0.0, ge=0, lt=1)  # probabilities below it become 0

    _check_order = model_validator(mode="after")(lambda s: _require(
        s, s.mix_weight_min <= s.mix_weight_max, "mix_weight_min must not exceed mix_weight_max"))


class TeacherConfig(TrainConfig):
    pass


class StudentConfig(TrainConfig):
    # random: fresh weights (or model.pretrained_path); labeller: start from the same fold of the
    # models that pseudo-labelled this round (the teachers in round 1)
    init: Literal["random", "labeller"] = "random"
    pseudo_labels: PseudoLabelStreamConfig


class PseudoLabelConfig(Section):
    # Noisy-Student rounds: round r's students learn from labels made by round r-1's students
    # (round 1: the teachers); export ships the last round. At most paths.MAX_ROUNDS.
    rounds: int = Field(default=1, ge=1, le=MAX_ROUNDS)
    batch_size: int = Field(ge=1)
    # ddp: the soundscapes are shared out over `ddp_processes` processes (each a disjoint,
    # deterministic share); rank 0 merges them into the one table, identical to one process's
    device: Literal["auto", "cpu", "cuda", "ddp"] = "auto"
    ddp_processes: int = Field(default=1, ge=1)
    threads: int = Field(default=0, ge=0)  # torch CPU threads per process; 0 = every core

    _check_ddp = model_validator(mode="after")(lambda s: _require(
        s, s.ddp_processes == 1 or s.device == "ddp", "ddp_processes > 1 needs device: ddp"))


class PostprocessConfig(Section):
    reduction: Literal["mean_prob", "mean_logit", "min"] = "mean_prob"
    smoothing: bool = True
    smoothing_kernel: list[float] = [0.1, 0.2, 0.4, 0.2, 0.1]

    _check_kernel = model_validator(mode="after")(lambda s: _require(
        s, len(s.smoothing_kernel) % 2 == 1, "smoothing_kernel must have an odd length"))


class ExportConfig(Section):
    opset: int = Field(default=18, ge=13)
    parity_atol: float = Field(gt=0)
    parity_auc_tol: float = Field(ge=0)
    bench_seconds: float = Field(gt=0)
    fused: bool = True  # every fold in one graph too (ensemble.onnx): one call per batch in predict
    auc_soundscapes: int = Field(default=16, ge=0)  # labelled soundscapes for the engines' AUC cost


class EvaluateConfig(Section):
    """How the labelled soundscapes are scored: the bootstrap behind every standard error."""

    bootstrap: int = Field(default=1000, ge=100)  # resamples of one-minute blocks of windows


class PredictConfig(Section):
    threads: int = Field(default=0, ge=0)
    workers: int = Field(default=0, ge=0)
    batch_windows: int = Field(default=12, ge=1)  # fused graph, 2 cores: 8-12 fastest, 48 needs 1 GB
    on_error: Literal["skip", "fail"] = "skip"
    engine: Literal["onnxruntime", "openvino"] = "onnxruntime"  # bf16: openvino on a bf16 CPU
    precision: Literal["fp32", "bf16"] = "fp32"


class TrackingConfig(Section):
    experiment: str = "birdclef"
    log_models: bool = True  # checkpoints and pseudo-label sets as MLflow artifacts


class StudyConfig(Section):
    """`birdclef study`: the pipeline over several seeds and arms (no stage depends on this).

    Each arm is a set of `dvc exp run -S` overrides on top of params.yaml; the teachers are the same
    in every arm of one seed (DVC restores them from its run cache instead of training them again).
    """

    seeds: int = Field(default=3, ge=1)
    first_seed: int | None = None  # null: make_sample.seed (corpus seeds) or the training seeds
    # corpus: make_sample.seed varies (the generated sample); training: teacher.seed and
    # student.seed vary (any other corpus); auto: corpus when sources.root is the generated one
    vary: Literal["auto", "corpus", "training"] = "auto"
    training_seeds: int = Field(default=1, ge=1)  # per corpus seed: training noise in the interval
    arms: dict[str, dict[str, Any]]


class Params(Section):
    make_sample: MakeSampleConfig
    sources: SourcesConfig
    audio: AudioConfig
    sample: SampleConfig
    frontend: FrontendConfig
    model: ModelConfig
    teacher: TeacherConfig
    pseudo_label: PseudoLabelConfig
    student: StudentConfig
    export: ExportConfig
    postprocess: PostprocessConfig
    evaluate: EvaluateConfig
    predict: PredictConfig
    tracking: TrackingConfig
    study: StudyConfig

    _check_rates = model_validator(mode="after")(lambda s: _require(
        s, s.audio.sample_rate == s.frontend.sample_rate, f"audio.sample_rate ({s.audio.sample_rate}) and "
        f"frontend.sample_rate ({s.frontend.sample_rate}) must agree: the stores feed the model"))


def format_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        kind = e["type"]
        if kind == "missing":
            lines.append(f"{path}: missing key '{key}'")
        elif kind == "extra_forbidden":
            lines.append(f"{path}: unknown key '{key}' (misspelt?)")
        else:
            lines.append(f"{path}: key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file; raise ConfigError naming the file and key on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_error(path, exc)) from None


def schema_json() -> str:
    return json.dumps(Params.model_json_schema(), indent=2)

