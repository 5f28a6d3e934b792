"""`birdclef <command>`: one sub-command per DVC stage, plus predict, benchmark and schema.

Stage modules are imported lazily so `birdclef --help` and the data stages do not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from birdclef.config import ConfigError, load_params, schema_json

# command -> module under birdclef.stages whose main(params) runs it
STAGES: dict[str, str] = {
    "make-sample": "make_sample",
    "preprocess": "preprocess",
    "sample": "sample",
    "train-teacher": "train_teacher",
    "pseudo-label": "pseudo_label",
    "train-student": "train_student",
    "export": "export",
    "evaluate": "evaluate",
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input data or params: reported in one line, no traceback."""
    from birdclef.audio import AudioDecodeError
    from birdclef.selection import SelectionError
    from birdclef.sources import SourceError

    return (ConfigError, SourceError, AudioDecodeError, SelectionError, FileNotFoundError)


def _stage_command(module: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        params = load_params(args.params)
        importlib.import_module(f"birdclef.stages.{module}").main(params)

    return run


def _extra_commands(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser("predict", help="soundscapes folder -> submission.csv (ONNX, CPU)")
    predict.add_argument("input", help="folder of audio files (ogg, mp3, wav, flac)")
    predict.add_argument("--output", default="submission.csv")
    predict.add_argument("--models", default="models/onnx", help="exported model folder")
    predict.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    predict.add_argument("--workers", type=int, default=None, help="decoding processes")
    predict.add_argument("--on-error", choices=["skip", "fail"], default=None)
    predict.add_argument("--no-smoothing", action="store_true")
    predict.set_defaults(func=lambda a: importlib.import_module("birdclef.stages.predict").cli(a))

    bench = sub.add_parser("benchmark", help="inference throughput: ONNX ensemble vs eager PyTorch")
    bench.add_argument("--minutes", type=float, default=4.0, help="minutes of audio to run")
    bench.add_argument("--models", default="models/onnx")
    bench.add_argument("--threads", type=int, default=None)
    bench.set_defaults(func=lambda a: importlib.import_module("birdclef.benchmark").cli(a))

    train_bench = sub.add_parser("benchmark-training", help="data loader vs training throughput")
    train_bench.add_argument("--batches", type=int, default=10)
    train_bench.set_defaults(
        func=lambda a: importlib.import_module("birdclef.benchmark").training_cli(a)
    )

    schema = sub.add_parser("schema", help="print the JSON schema of params.yaml")
    schema.set_defaults(func=lambda a: print(schema_json()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="birdclef", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, module in STAGES.items():
        sub.add_parser(command, help=f"run the {module} stage").set_defaults(
            func=_stage_command(module)
        )
    _extra_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except _user_errors() as exc:
        print(f"birdclef {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
