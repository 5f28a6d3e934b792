"""birdclef: the BirdCLEF pipeline's command line. One sub-command per DVC stage (dvc.yaml runs
them; run them by hand to debug one stage), plus predict, study, benchmarks and schema.

examples:
  dvc repro                                  run every stage that changed (the usual way)
  birdclef predict soundscapes/ --output submission.csv
  birdclef study --seeds 3                   does pseudo-labelling help? (teacher, student, control)
  birdclef benchmark --minutes 4             inference throughput of the exported ensemble
  birdclef schema                            the JSON schema of params.yaml
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from birdclef.config import ConfigError, load_params, schema_json
from birdclef.profiles import write_profile

# command -> (module under birdclef.stages whose main(params) runs it, description)
STAGES: dict[str, tuple[str, str]] = {
    "make-sample": ("make_sample", "generate the embedded sample corpus (Kaggle layouts)"),
    "preprocess": ("preprocess", "read every source, apply the cap merge, decode kept audio"),
    "sample": ("sample", "training table, folds and the selection report"),
    "train-teacher": ("train_teacher", "k-fold teachers on the labelled clips"),
    "evaluate-teacher": ("evaluate_teacher", "score the teachers on the labelled soundscapes"),
    "pseudo-label": ("pseudo_label", "label every soundscape window (one round)"),
    "train-student": ("train_student", "k-fold students on clips + pseudo-labels (one round)"),
    "export": ("export", "last round's students to ONNX, parity check, model registry"),
    "evaluate": ("evaluate", "score the shipped students against the teachers"),
}
ROUND_STAGES = {"pseudo-label", "train-student"}
REEXEC_FLAG = "BIRDCLEF_WORKSPACE_CODE"


class TqdmHandler(logging.Handler):
    """Log lines printed through tqdm, so they do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(verbose: bool) -> None:
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("birdclef")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input data or params: reported in one line, no traceback."""
    from birdclef.audio import AudioDecodeError
    from birdclef.selection import SelectionError
    from birdclef.sources import SourceError

    return (ConfigError, SourceError, AudioDecodeError, SelectionError, FileNotFoundError)


def _stage_command(module: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        params = load_params(args.params)
        main = importlib.import_module(f"birdclef.stages.{module}").main
        main(params, args.round) if hasattr(args, "round") else main(params)

    return run


def _lazy(module: str, function: str = "cli") -> Callable[[argparse.Namespace], None]:
    return lambda args: getattr(importlib.import_module(module), function)(args)


def _add_stage_commands(sub: argparse._SubParsersAction) -> None:
    for command, (module, description) in STAGES.items():
        stage = sub.add_parser(command, help=description, description=f"{description}.")
        if command in ROUND_STAGES:
            stage.add_argument("--round", type=int, default=1,
                               help="pseudo-labelling round, 1 to paths.MAX_ROUNDS (default 1)")
        stage.set_defaults(func=_stage_command(module))


def _add_predict(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser(
        "predict", help="soundscapes folder -> submission.csv (ONNX, CPU)",
        description="Every audio file of a folder -> the competition's submission.csv: decode, "
        "5-s windows, mel once, every exported fold, fold reduction and smoothing (params.yaml's "
        "postprocess and predict sections).")
    predict.add_argument("input", help="folder of audio files (ogg, mp3, wav, flac)")
    predict.add_argument("--output", default="submission.csv", help="CSV to write (default %(default)s)")
    predict.add_argument("--models", default="models/onnx",
                         help="exported model folder (default %(default)s)")
    predict.add_argument("--threads", type=int, default=None,
                         help="ONNX Runtime threads (default predict.threads; 0 = every core)")
    predict.add_argument("--workers", type=int, default=None,
                         help="decoding processes (default predict.workers; 0 = one per core)")
    predict.add_argument("--on-error", choices=["skip", "fail"], default=None,
                         help="an undecodable file: skip it and list it, or stop (default "
                         "predict.on_error)")
    predict.add_argument("--no-smoothing", action="store_true",
                         help="submit the fold-reduced probabilities without temporal smoothing")
    predict.set_defaults(func=_lazy("birdclef.prediction"))


def _add_study(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser(
        "study", help="does pseudo-labelling help? the pipeline over seeds and arms",
        description="Runs the pipeline as DVC experiments for several seeds and arms (teacher, "
        "student, control, ...: params.yaml's `study` section), then reports each arm's score per "
        "seed, the means, and the paired differences with 95%% intervals. Writes "
        "metrics/study.json, reports/study_scores.csv and one MLflow parent run.")
    study.add_argument("--seeds", type=int, default=None, help="seeds to run (default study.seeds)")
    study.add_argument("--first-seed", type=int, default=None,
                       help="first seed (default study.first_seed, else make_sample.seed)")
    study.add_argument("--training-seeds", type=int, default=None,
                       help="training seeds per corpus seed (default study.training_seeds)")
    study.add_argument("--arms", default=None,
                       help="comma-separated subset of study.arms to run (default: all of them)")
    study.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override for every arm, as dvc exp run -S (repeatable)")
    study.add_argument("--name", default=None,
                       help="name of this study (default study-<timestamp>); experiments are "
                       "named <name>-s<seed>-<arm>")
    study.add_argument("--report-only", action="store_true",
                       help="do not run anything: rebuild the report from the named study's "
                       "finished experiments")
    study.set_defaults(func=_lazy("birdclef.study"))


def _add_benchmarks(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "benchmark", help="inference throughput: ONNX ensemble vs eager PyTorch",
        description="Times predict's path on generated soundscape files (decode included) and "
        "inference alone; writes metrics/benchmark.json.")
    bench.add_argument("--minutes", type=float, default=4.0,
                       help="minutes of audio to run (default %(default)s)")
    bench.add_argument("--models", default="models/onnx",
                       help="exported model folder (default %(default)s)")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads (default predict.threads; 0 = every core)")
    bench.set_defaults(func=_lazy("birdclef.benchmark"))

    train_bench = sub.add_parser(
        "benchmark-training", help="training throughput: data loader vs training steps",
        description="Teacher training samples/s with the training engine's own step, against the "
        "data loader alone; writes metrics/benchmark_training.json.")
    train_bench.add_argument("--batches", type=int, default=10,
                             help="batches to time (default %(default)s)")
    train_bench.set_defaults(func=_lazy("birdclef.benchmark", "training_cli"))

    plots = sub.add_parser(
        "plots", help="dvc plots show/diff as a page that renders without a network",
        description="Render the DVC plots (or, with revisions, dvc plots diff) into an HTML page "
        "with the Vega libraries inlined; fetches them once with npm into .plots-vendor/.")
    plots.add_argument("revisions", nargs="*",
                       help="git revisions or experiment names to compare (default: the workspace)")
    plots.add_argument("--out", default="dvc_plots", help="output folder (default %(default)s)")
    plots.set_defaults(func=_lazy("birdclef.plots"))

    profile = sub.add_parser(
        "profile", help="write a profile (profiles/base.yaml + an overlay) as params.yaml",
        description="Merge profiles/<name>.yaml over profiles/base.yaml and write the result to "
        "the params file (--params, default params.yaml).")
    profile.add_argument("name", help="profile name: sample, tiny, full2024, ... (profiles/*.yaml)")
    profile.set_defaults(func=lambda a: write_profile(a.name, Path(a.params)))

    schema = sub.add_parser("schema", help="print the JSON schema of params.yaml",
                            description="Print the JSON schema that params.yaml is checked against.")
    schema.set_defaults(func=lambda a: print(schema_json()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="birdclef", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="debug messages too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _add_stage_commands(sub)
    _add_predict(sub)
    _add_study(sub)
    _add_benchmarks(sub)
    return parser


def run_workspace_code(argv: list[str] | None) -> None:
    """Re-run this command with the code of the repository it runs in.

    The console command comes from the virtual environment's editable install, which points at one
    checkout; `dvc exp run --temp/--queue` runs stages in a copy under .dvc/tmp/exps, and a second
    clone may share the environment. Each must run its own code, or an experiment's results would
    not belong to its commit. The re-run process hands its children the environment it was given.
    """
    if REEXEC_FLAG in os.environ:  # the re-run process: restore what the children should see
        original = os.environ.pop(REEXEC_FLAG)
        if original:
            os.environ["PYTHONPATH"] = original
        else:
            os.environ.pop("PYTHONPATH", None)
        return
    local = Path.cwd() / "src" / "birdclef"
    if argv is not None or not (local / "cli.py").is_file():
        return
    if local.resolve() == Path(__file__).resolve().parent:
        return
    original = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, REEXEC_FLAG: original,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(local.parent), original]))}
    os.execve(sys.executable, [sys.executable, "-m", "birdclef.cli", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    run_workspace_code(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.func(args)
    except _user_errors() as exc:
        print(f"birdclef {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
