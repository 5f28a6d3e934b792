"""The code's structure: stage outputs named once (birdclef.paths) and declared in dvc.yaml, stage
modules that import only core modules, and every stage's code listed among its DVC deps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from birdclef import paths, tracking
from tests.conftest import REPO

SRC = REPO / "src"
STAGES_DIR = SRC / "birdclef" / "stages"
# The dispatcher only routes a command to its stage: not a dependency of the results.
NOT_DEPS = {"src/birdclef/cli.py", "src/birdclef/__init__.py", "src/birdclef/stages/__init__.py"}


def declared() -> dict[str, tuple[set[str], set[str]]]:
    """stage name -> (outs, deps) as DVC resolves dvc.yaml."""
    with Repo(str(REPO)) as repo:
        return {s.addressing: ({str(o.def_path) for o in s.outs}, {str(d.def_path) for d in s.deps})
                for s in repo.index.stages}


def expected_outs() -> dict[str, set[Path]]:
    def run(name: str) -> Path:
        return tracking.run_file(name)

    out = {
        "make_sample": {paths.details("make_sample"), run("make_sample")},
        "preprocess": {paths.METADATA, paths.CLIPS, paths.SOUNDSCAPES, paths.BAD_FILES,
                       paths.details("preprocess"), run("preprocess")},
        "sample": {paths.TRAIN, paths.CLASSES, paths.details("sample"),
                   paths.report("sample_species.csv"), run("sample")},
        "train_teacher": {paths.TEACHER, paths.metrics("teacher"), paths.details("teacher"),
                          paths.report("teacher_curves.csv"),
                          paths.report("teacher_per_class_auc.csv"), run("train_teacher")},
        "evaluate_teacher": {paths.scores("teacher"), paths.scores("truth"),
                             paths.details("evaluate_teacher"), run("evaluate_teacher")},
        "export": {paths.ONNX, paths.details("export"), run("export")},
        "evaluate": {paths.scores("student"), paths.metrics("evaluate"), paths.details("evaluate"),
                     paths.report("evaluate_per_class.csv"), run("evaluate")},
    }
    for r in range(1, paths.MAX_ROUNDS + 1):
        out[f"pseudo_label@{r}"] = {paths.pseudo_labels(r), paths.details(f"pseudo_label_round{r}"),
                                    paths.report(f"pseudo_label_round{r}_max_prob.csv"),
                                    run(f"pseudo_label_round{r}")}
        name = f"student_round{r}"
        out[f"train_student@{r}"] = {paths.students(r), paths.details(name),
                                     paths.report(f"{name}_curves.csv"),
                                     paths.report(f"{name}_per_class_auc.csv"),
                                     run(f"train_student_round{r}")}
    return out


def test_stage_outputs_in_code_and_dvc_yaml_agree() -> None:
    stages = declared()
    for stage, outs in expected_outs().items():
        if stage == "make_sample":
            outs = outs | {Path("data/raw/sample")}  # ${make_sample.out_dir}
        assert {str(p) for p in outs} == stages[stage][0], stage


def test_round_slots_match_max_rounds_and_labellers() -> None:
    slots = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["round_slots"]
    assert sorted(int(k) for k in slots) == list(range(1, paths.MAX_ROUNDS + 1))
    for key, item in slots.items():
        assert item["labeller"] == str(paths.labeller(int(key)))


def imported_modules(path: Path) -> set[str]:
    """birdclef modules a file imports, anywhere in it (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("birdclef"):
            if node.module != "birdclef":  # `from birdclef import x` imports x, not the package
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("birdclef"))
    return found


def module_file(module: str) -> Path | None:
    """The file of a module; a package below birdclef (birdclef.synth) counts as its folder."""
    parts = module.split(".")
    for depth in range(2, len(parts) + 1):
        base = SRC / Path(*parts[:depth])
        if (base / "__init__.py").is_file() and depth >= 2 and parts[1] != "stages":
            return base
    base = SRC / Path(*parts)
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def closure(module: str) -> set[str]:
    """Files (a package counts as its folder) of `module` and everything it imports in birdclef."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            todo.extend(imported_modules(file))
    rels = {p.relative_to(REPO).as_posix() for p in seen}
    return rels - NOT_DEPS - {"src/birdclef"}


def test_stage_modules_import_only_core_modules() -> None:
    for path in STAGES_DIR.glob("*.py"):
        stages = {m for m in imported_modules(path) if m.startswith("birdclef.stages")}
        assert not stages, f"{path.name} imports {stages}"


@pytest.mark.parametrize("stage", sorted(expected_outs()))
def test_every_stage_lists_its_code_as_deps(stage: str) -> None:
    module = {"pseudo_label": "pseudo_label", "train_student": "train_student"}.get(
        stage.split("@")[0], stage)
    needed = closure(f"birdclef.stages.{module}")
    listed = declared()[stage][1]
    missing = sorted(needed - listed)
    assert not missing, f"dvc.yaml: stage {stage} does not list {missing}"
