"""sample: the labelled training table (SPEC 4.1), its folds (SPEC 4.2) and the selection report.

Outputs:
    data/processed/train.parquet    one row per training record (columns in the README)
    data/processed/classes.json     the class list: sorted species codes = model output order
    reports/details/sample.json     counts per source, kept and dropped, cap binding
    reports/sample_species.csv      per-species counts by source (also a DVC plot)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.io import write_csv, write_json, write_parquet
from birdclef.selection import (
    KEPT,
    SelectionError,
    assign_folds,
    is_main,
    labelled_table,
    species_report,
)
from birdclef.sources import read_near_duplicates
from birdclef.paths import CLASSES, METADATA, TRAIN

log = logging.getLogger(__name__)
DETAILS = paths.details("sample")
REPORT = paths.report("sample_species.csv")


def check_submission_columns(classes: list[str], main_root: str) -> None:
    """The model's outputs must be the main competition's species columns, in the same order."""
    path = Path(main_root) / "sample_submission.csv"
    if not path.is_file():
        return
    columns = list(pd.read_csv(path, nrows=0).columns)[1:]
    if columns != classes:
        missing = sorted(set(columns) - set(classes))
        extra = sorted(set(classes) - set(columns))
        raise SelectionError(
            f"{path}: species columns differ from the training species "
            f"(no training records: {missing}; not in the submission: {extra})"
        )


def build(params: Params) -> tuple[pd.DataFrame, list[str], pd.DataFrame, dict[str, Any]]:
    candidates = pd.read_parquet(METADATA)
    near_duplicates = read_near_duplicates(params.sources.near_duplicates)
    table = labelled_table(candidates, near_duplicates)
    table["fold"] = assign_folds(table, params.sample.n_folds, params.sample.fold_seed)
    classes = sorted(table["primary_label"].unique().tolist())
    check_submission_columns(classes, params.sources.main_path)
    main_source = params.sources.main
    report = species_report(candidates, table, params.sample.cap, main_source)

    status = candidates.groupby(["source", "status"]).size()
    main_candidates = candidates[is_main(candidates)]
    two_folder = int(main_candidates.duplicated("record_id").sum())
    main_rows = int((table["source"] == main_source).sum())
    metrics: dict[str, Any] = {
        "training_rows": int(len(table)),
        "classes": len(classes),
        f"{main_source}_rows": main_rows,
        "extra_rows": int(len(table) - main_rows),
        "near_duplicates_removed": int(len(main_candidates) - main_rows - two_folder),
        "two_folder_records": two_folder,
        "species_cap_binds": int(report["cap_binds"].sum()),
        "species_extras_fill": int(report["extras_fill"].sum()),
        "min_rows_per_species": int(report["training_rows"].min()),
    }
    for (source, state), count in status.items():
        metrics[f"{source}.{state}"] = int(count)
    for source, count in candidates[candidates["status"] == KEPT]["source"].value_counts().items():
        metrics[f"extra_kept.{source}"] = int(count)
    return table, classes, report, metrics


def main(params: Params) -> None:
    with tracking.stage_run(
        "sample",
        {"sample": params.sample.model_dump(), "near_duplicates": params.sources.near_duplicates},
        params.tracking.experiment,
        # sources.root: the near-duplicates file (optional) lies under it
        inputs=[str(METADATA), params.sources.root],
        upstream=["preprocess"],
    ) as run:
        table, classes, report, metrics = build(params)
        write_parquet(TRAIN, table)
        write_json(CLASSES, classes)
        write_csv(REPORT, report)
        write_json(DETAILS, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        run.log_artifact(TRAIN, "tables")
        run.log_artifact(REPORT, "reports")
    log.info("sample: %d training rows, %d classes, cap binds for %d species, extras fill %d",
             len(table), len(classes), metrics["species_cap_binds"], metrics["species_extras_fill"])
