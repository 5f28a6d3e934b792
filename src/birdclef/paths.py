"""Where every stage output lives, relative to the repository root: the one place besides dvc.yaml
that names them (a test checks the two agree).

Pseudo-labelling rounds (SPEC 6 is round 1): round r's labels come from the teachers (r = 1) or from
round r-1's students, and train round r's students.
"""

from __future__ import annotations

from pathlib import Path

METADATA = Path("data/interim/metadata.parquet")
CLIPS = Path("data/interim/clips")
SOUNDSCAPES = Path("data/interim/soundscapes")
# Every audio file preprocess could not use as it is: skipped (undecodable, no samples) or
# repaired (NaN/inf samples, truncated), with the reason.
BAD_FILES = Path("data/interim/bad_files.csv")
TRAIN = Path("data/processed/train.parquet")
CLASSES = Path("data/processed/classes.json")
TEACHER = Path("models/teacher")
ONNX = Path("models/onnx")
EVALUATION = Path("data/evaluation")
METRICS = Path("metrics")
REPORTS = Path("reports")
RUNS = Path("runs")
RESUME = Path(".resume")  # training resume states: not a DVC output, removed when a stage completes
# The rounds dvc.yaml declares (its `round_slots`); pseudo_label.rounds may use at most this many.
MAX_ROUNDS = 3


def pseudo_labels(round_: int) -> Path:
    return Path("data/pseudo_labels") / f"round{round_}.parquet"


def students(round_: int) -> Path:
    return Path("models/student") / f"round{round_}"


def labeller(round_: int) -> Path:
    """The models that pseudo-label round `round_`: the teachers, then the previous students."""
    return TEACHER if round_ == 1 else students(round_ - 1)


def metrics(name: str) -> Path:
    """Headline numbers (DVC metrics: `dvc exp show`, `dvc metrics diff`)."""
    return METRICS / f"{name}.json"


def details(name: str) -> Path:
    """Everything else a stage measured (counts, timings, hashes, per-fold values): git-tracked,
    not a DVC metric, so comparisons of experiments show the scores first."""
    return REPORTS / "details" / f"{name}.json"


def report(name: str) -> Path:
    return REPORTS / name


def scores(model_set: str) -> Path:
    """Per-window, per-fold logits of one model set on the labelled soundscapes."""
    return EVALUATION / f"{model_set}.parquet"


def trained_rounds() -> list[int]:
    """The rounds whose students exist (a round beyond pseudo_label.rounds holds none)."""
    return [r for r in range(1, MAX_ROUNDS + 1) if any(students(r).glob("fold*.pt"))]
