"""`birdclef study`: does pseudo-labelling help? The real pipeline over several seeds and arms.

For every seed (corpus seeds `make_sample.seed` on the generated sample, training seeds
`teacher.seed`/`student.seed` on any other corpus) and every arm of `study.arms` (sets of
`dvc exp run -S` overrides: the students with pseudo-labels, the control without, ...), the study
runs one DVC experiment (`dvc exp run --temp`), named `<study>-s<seed>[-t<k>]-<arm>`. The arms of one
seed share their teachers: DVC restores every stage up to the teachers' evaluation from its run
cache. A finished experiment is never run again, so an interrupted study continues where it
stopped, and `--report-only` rebuilds the report from the experiments alone.

The report compares each arm's ensemble (smoothed AUC on the labelled soundscapes) with the
teachers and with the `student` arm: per seed, the mean and standard deviation over seeds, and the
paired differences with a 95 % t-interval over seeds (corpus, training and evaluation noise) and a
bootstrap interval over one-minute blocks of the evaluation (evaluation noise only).
Outputs: metrics/study.json, reports/study_scores.csv (DVC plot), an MLflow parent run with one
child per seed and arm, and the table on stdout.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from birdclef import paths, tracking
from birdclef.config import ConfigError, Params, load_params
from birdclef.evaluation import ModelSetScores, block_resamples, bootstrap, eval_folder
from birdclef.io import write_csv, write_json
from birdclef.study_params import PRIMARY, arms_that_change_something, changed_params, with_overrides

log = logging.getLogger(__name__)

TRAINING_SEED_STEP = 1000  # training seed k adds k * this to teacher.seed and student.seed
LOGS = Path(".dvc/tmp/study-logs")
SCORE = "ensemble_smoothed"


@dataclass(frozen=True)
class Unit:
    """One seed of the study: a corpus seed, and a training-seed index within it."""

    seed: int
    training: int

    @property
    def label(self) -> str:
        return f"s{self.seed}" + (f"-t{self.training}" if self.training else "")


@dataclass
class Experiment:
    name: str
    unit: Unit
    arm: str
    overrides: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)


def resolve_vary(params: Params) -> str:
    if params.study.vary != "auto":
        return params.study.vary
    generated = Path(params.sources.root).resolve() == Path(params.make_sample.out_dir).resolve()
    return "corpus" if generated else "training"


def seed_overrides(params: Params, unit: Unit, vary: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if vary == "corpus":
        out["make_sample.seed"] = unit.seed
        step = unit.training * TRAINING_SEED_STEP
    else:
        step = unit.seed
    if step:
        out["teacher.seed"] = params.teacher.seed + step
        out["student.seed"] = params.student.seed + step
    return out


def check_same_params(exp: Experiment, read: Callable[[Path], bytes], base: dict[str, Any]) -> None:
    """A finished experiment is reused only if it ran with today's params (`base`, the params file as
    read) plus its overrides."""
    found = yaml.safe_load(read(Path("params.yaml")))
    changed = changed_params(with_overrides(base, exp.overrides), found)
    if changed:
        raise ConfigError(f"study: experiment {exp.name} ran with other params ({', '.join(changed[:5])}); "
                          "give this study another --name")


def plan(params: Params, name: str, seeds: int, first_seed: int | None, training_seeds: int,
         arms: list[str], common: dict[str, Any]) -> list[Experiment]:
    vary = resolve_vary(params)
    if first_seed is None:
        first_seed = params.make_sample.seed if vary == "corpus" else 0
    units = [Unit(s, t) for s in range(first_seed, first_seed + seeds)
             for t in range(training_seeds if vary == "corpus" else 1)]
    experiments = []
    for unit in units:
        for arm in arms:
            overrides = {**seed_overrides(params, unit, vary), **params.study.arms[arm], **common}
            experiments.append(Experiment(f"{name}-{unit.label}-{arm}", unit, arm, overrides))
    return experiments


def experiment_refs() -> dict[str, str]:
    """Experiment name -> git ref, the current baseline's first."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"],
                         capture_output=True, text=True, check=True).stdout.split()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    refs: dict[str, str] = {}
    for ref in sorted(out, key=lambda r: head[2:] not in r):  # current baseline wins
        refs.setdefault(ref.rsplit("/", 1)[-1], ref)
    return refs


def format_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def run_experiment(exp: Experiment) -> None:
    """One `dvc exp run --temp`, its output in .dvc/tmp/study-logs/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    command = ["dvc", "exp", "run", "--temp", "-n", exp.name]
    for key, value in exp.overrides.items():
        command += ["-S", f"{key}={format_value(value)}"]
    logfile = LOGS / f"{exp.name}.log"
    log.info("study: %s (%s)", exp.name, " ".join(command[6:]) or "params.yaml as is")
    started = time.perf_counter()
    with open(logfile, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    if result.returncode != 0:
        raise RuntimeError(f"study: experiment {exp.name} failed (exit {result.returncode}); "
                           f"see {logfile}")
    log.info("study: %s done in %.0f s", exp.name, time.perf_counter() - started)


def experiment_files(ref: str, root: Path = Path(".")) -> Callable[[Path], bytes]:
    """A reader of one experiment's files, git-tracked (metrics) or DVC-tracked (details and scores,
    from the cache), through one DVC file system (one per file would cost about 0.5 s each)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=ref)
    return lambda path: fs.read_bytes(path.as_posix())


def collect(read: Callable[[Path], bytes], ref: str) -> dict[str, Any]:
    """What the report needs from one finished experiment (`read`: its files)."""
    evaluate = json.loads(read(paths.details("evaluate")))
    lock = yaml.safe_load(read(Path("dvc.lock")))
    teacher_md5 = [o["md5"] for o in lock["stages"]["train_teacher"]["outs"]
                   if o["path"] == str(paths.TEACHER)][0]
    frames = {name: pd.read_parquet(io.BytesIO(read(paths.scores(name))))
              for name in ("teacher", "student", "truth")}
    return {"evaluate": evaluate, "teacher_md5": teacher_md5, "frames": frames, "ref": ref}


def ensembles(frames: dict[str, pd.DataFrame], params: Params) -> tuple[np.ndarray, dict, np.ndarray]:
    """(truth, {'teacher': probs, 'student': probs}, blocks) of one experiment, smoothed."""
    truth_frame = frames["truth"]
    classes = [c for c in truth_frame.columns if c not in ("row_id", "block")]
    probs = {}
    for name in ("teacher", "student"):
        scores = ModelSetScores(frames[name], classes)
        if scores.row_ids != truth_frame["row_id"].tolist():
            raise ValueError(f"{name} scores and the truth list different windows")
        probs[name] = scores.ensemble(params.postprocess, smoothed=True)
    return truth_frame[classes].to_numpy(np.float32), probs, truth_frame["block"].to_numpy()


def t_interval(values: np.ndarray) -> dict[str, float]:
    n = len(values)
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": n, "ci95_low": mean - half, "ci95_high": mean + half}


def unit_scores(experiments: list[Experiment], arms: list[str]) -> pd.DataFrame:
    """One row per unit: the teachers' and every arm's score (and their evaluation SE). `teacher`
    is the first arm's teachers; an arm that trains other teachers (a teacher param among its
    overrides) has them as `<arm>_teacher`. Earlier rounds' students are `<arm>_round<r>`."""
    rows = []
    for unit in dict.fromkeys(e.unit for e in experiments):
        mine = {e.arm: e for e in experiments if e.unit == unit}
        first = mine[arms[0]].result["evaluate"]
        row = {"seed": unit.seed, "training": unit.training, "teacher": first["teacher"][SCORE],
               "teacher_raw": first["teacher"]["ensemble"],
               "teacher_fold_mean": first["teacher"]["fold_mean"],
               "teacher_se": first["teacher"][f"{SCORE}_se"]}
        for arm in arms:
            evaluate = mine[arm].result["evaluate"]
            student = evaluate["student"]
            row.update({arm: student[SCORE], f"{arm}_raw": student["ensemble"],
                        f"{arm}_fold_mean": student["fold_mean"], f"{arm}_se": student[f"{SCORE}_se"],
                        f"{arm}_teacher": evaluate["teacher"][SCORE]})
            row.update({f"{arm}_{key}": value[SCORE] for key, value in evaluate.items()
                        if key.startswith("student_round") and isinstance(value, dict)
                        and SCORE in value})
        rows.append(row)
    return pd.DataFrame(rows)


def own_teachers(experiments: list[Experiment], arms: list[str]) -> set[str]:
    """The arms whose teachers are not the first arm's (they changed a teacher param)."""
    first = {e.unit: e.result["teacher_md5"] for e in experiments if e.arm == arms[0]}
    return {e.arm for e in experiments if e.result["teacher_md5"] != first[e.unit]}


def comparisons(arms: list[str]) -> list[tuple[str, str]]:
    pairs = [(arm, "teacher") for arm in arms]
    return pairs + [(PRIMARY, arm) for arm in arms if arm != PRIMARY]


def bootstrap_differences(
    experiments: list[Experiment], pairs: list[tuple[str, str]], own: set[str], params: Params
) -> dict[str, dict[str, float]]:
    """Each difference's seed mean on shared block resamples: its spread is evaluation noise.
    An arm with teachers of its own is compared with those."""
    per_pair: dict[str, list[np.ndarray]] = {f"{a}_minus_{b}": [] for a, b in pairs}
    for unit in dict.fromkeys(e.unit for e in experiments):
        mine = {e.arm: e for e in experiments if e.unit == unit}
        probs: dict[str, np.ndarray] = {}
        for arm, exp in mine.items():
            truth, arm_probs, blocks = ensembles(exp.result["frames"], params)
            probs[arm] = arm_probs["student"]
            probs.setdefault("teacher", arm_probs["teacher"])
            probs[f"{arm}_teacher"] = arm_probs["teacher"]
        resamples = block_resamples(blocks, params.evaluate.bootstrap, unit.seed)
        names = list(probs)
        values = bootstrap(truth, [probs[n] for n in names], resamples)
        for a, b in pairs:
            b_name = f"{a}_teacher" if b == "teacher" and a in own else b
            per_pair[f"{a}_minus_{b}"].append(values[:, names.index(a)] - values[:, names.index(b_name)])
    out = {}
    for key, draws in per_pair.items():
        mean_draws = np.mean(draws, axis=0)
        out[key] = {"bootstrap_se": float(np.std(mean_draws, ddof=1)),
                    "bootstrap_ci95_low": float(np.percentile(mean_draws, 2.5)),
                    "bootstrap_ci95_high": float(np.percentile(mean_draws, 97.5))}
    return out


def summarise(experiments: list[Experiment], arms: list[str], params: Params) -> dict[str, Any]:
    table = unit_scores(experiments, arms)
    # training seeds of one corpus are averaged first: the corpus seeds are the independent units
    by_seed = table.groupby("seed", sort=True).mean(numeric_only=True)
    own = own_teachers(experiments, arms)
    summary = {name: t_interval(by_seed[name].to_numpy()) for name in ["teacher", *arms]}
    for name in ["teacher", *arms]:
        summary[name]["raw_mean"] = float(by_seed[f"{name}_raw"].mean())
        summary[name]["fold_mean"] = float(by_seed[f"{name}_fold_mean"].mean())
        summary[name]["evaluation_se"] = float(by_seed[f"{name}_se"].mean())
    for column in by_seed.columns:
        if "_round" in column or (column.endswith("_teacher") and column[: -len("_teacher")] in own):
            summary[column] = t_interval(by_seed[column].to_numpy())
    pairs = comparisons(arms)
    boot = bootstrap_differences(experiments, pairs, own, params)
    differences = {}
    for a, b in pairs:
        key = f"{a}_minus_{b}"
        reference = f"{a}_teacher" if b == "teacher" and a in own else b
        values = (by_seed[a] - by_seed[reference]).to_numpy()
        differences[key] = {**t_interval(values), **boot[key],
                            "per_seed": [float(v) for v in values],
                            "seeds_above_zero": int(np.sum(values > 0))}
    return {"per_unit": table.to_dict("records"), "summary": summary, "differences": differences,
            "arms_with_own_teachers": sorted(own)}


def print_report(report: dict[str, Any], arms: list[str]) -> None:
    names = ["teacher", *arms]
    lines = ["", f"{'seed':>10} " + " ".join(f"{n:>14}" for n in names)]
    for row in report["per_unit"]:
        label = f"{row['seed']}" + (f"/t{row['training']}" if row["training"] else "")
        lines.append(f"{label:>10} " + " ".join(
            f"{row[n]:>8.3f} ±{row[f'{n}_se']:.3f}" for n in names))
    summary = report["summary"]
    lines.append(f"{'mean':>10} " + " ".join(f"{summary[n]['mean']:>14.3f}" for n in names))
    lines.append(f"{'sd':>10} " + " ".join(f"{summary[n]['sd']:>14.3f}" for n in names))
    others = [n for n in summary if n not in names]  # earlier rounds, arms' own teachers
    for name in others:
        lines.append(f"{name:>28}: mean {summary[name]['mean']:.3f}, sd {summary[name]['sd']:.3f}")
    lines.append("")
    lines.append(f"{'difference':<30} {'mean':>7} {'95% over seeds':>18} {'bootstrap 95%':>18} "
                 f"{'>0':>4}")
    for key, d in report["differences"].items():
        lines.append(
            f"{key:<30} {d['mean']:>+7.3f} {d['ci95_low']:>+8.3f}..{d['ci95_high']:<+8.3f} "
            f"{d['bootstrap_ci95_low']:>+8.3f}..{d['bootstrap_ci95_high']:<+8.3f} "
            f"{d['seeds_above_zero']:>2}/{d['n']}")
    lines.append("(ensemble AUC on the labelled soundscapes, smoothed; ± = bootstrap SE over one-"
                 "minute blocks of the evaluation)")
    print("\n".join(lines))


def log_to_mlflow(report: dict[str, Any], experiments: list[Experiment], params: Params) -> str:
    with tracking.parent_run(report["name"], params.tracking.experiment,
                             {"study": params.study.model_dump(), "arms_run": report["arms"],
                              "seeds": report["seeds"]}) as run:
        for key, value in report["summary"].items():
            run.log_metrics({f"{key}.mean": value["mean"], f"{key}.sd": value["sd"]})
        for key, value in report["differences"].items():
            run.log_metrics({f"{key}.mean": value["mean"], f"{key}.ci95_low": value["ci95_low"],
                             f"{key}.ci95_high": value["ci95_high"]})
        for exp in experiments:
            evaluate = exp.result["evaluate"]
            with run.child(f"{exp.unit.label}-{exp.arm}",
                           {"dvc.exp_name": exp.name, "birdclef.arm": exp.arm,
                            "birdclef.seed": exp.unit.seed}) as child:
                child.log_params({"arm": exp.arm, "seed": exp.unit.seed,
                                  "training_seed": exp.unit.training, **exp.overrides})
                child.log_metrics({"teacher": evaluate["teacher"][SCORE],
                                   "student": evaluate["student"][SCORE],
                                   "student_raw": evaluate["student"]["ensemble"],
                                   "student_fold_mean": evaluate["student"]["fold_mean"],
                                   "student_minus_teacher":
                                       evaluate["student"][SCORE] - evaluate["teacher"][SCORE]})
        return run.run_id


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (values read as YAML, as dvc exp run -S does) -> overrides."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def cli(args: Any) -> None:
    params = load_params(args.params)
    eval_folder(params)  # the study scores labelled soundscapes: stop before running anything
    cfg = params.study
    arms = list(cfg.arms) if args.arms is None else [a.strip() for a in args.arms.split(",")]
    unknown = [a for a in arms if a not in cfg.arms]
    if unknown or PRIMARY not in arms:
        raise ValueError(f"study arms {unknown} are not in study.arms {sorted(cfg.arms)}"
                         if unknown else f"the '{PRIMARY}' arm is needed (it is the comparison)")
    arms = arms_that_change_something(params, arms)
    common = parse_sets(args.set)
    name = args.name or time.strftime("study-%Y%m%d-%H%M%S")
    seeds = args.seeds or cfg.seeds
    training_seeds = args.training_seeds or cfg.training_seeds
    first_seed = args.first_seed if args.first_seed is not None else cfg.first_seed
    experiments = plan(params, name, seeds, first_seed, training_seeds, arms, common)
    base = yaml.safe_load(Path(args.params).read_text())
    started = time.perf_counter()
    refs = experiment_refs()
    for exp in experiments:
        if exp.name not in refs:
            if args.report_only:
                raise FileNotFoundError(f"experiment {exp.name} has not run (drop --report-only)")
            run_experiment(exp)
            refs = experiment_refs()
        read = experiment_files(refs[exp.name])
        check_same_params(exp, read, base)
        exp.result = collect(read, refs[exp.name])
    report = {
        "name": name, "arms": arms, "vary": resolve_vary(params),
        "seeds": sorted({e.unit.seed for e in experiments}), "training_seeds": training_seeds,
        "experiments": {e.name: {"arm": e.arm, "seed": e.unit.seed, "training": e.unit.training,
                                 "overrides": e.overrides} for e in experiments},
        "git_commit": tracking.git_commit(), "params": params.model_dump(mode="json"),
        "score": f"student ensemble {SCORE} AUC on the labelled soundscapes",
        "seconds_taken": round(time.perf_counter() - started, 1),
        **summarise(experiments, arms, params),
    }
    report["mlflow_run_id"] = log_to_mlflow(report, experiments, params)
    write_json(paths.metrics("study"), report)
    write_csv(paths.report("study_scores.csv"), pd.DataFrame(
        [{"seed": row["seed"], "training": row["training"], "arm": arm, "auc": row[arm]}
         for row in report["per_unit"] for arm in ["teacher", *arms]]))
    print_report(report, arms)
    print(f"\nstudy {name}: {len(experiments)} experiments; metrics/study.json, "
          f"reports/study_scores.csv; MLflow run {report['mlflow_run_id']}", file=sys.stderr)
