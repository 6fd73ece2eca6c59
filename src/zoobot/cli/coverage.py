"""`zoobot coverage`: how often the posterior predictive intervals hold the volunteers' real votes."""

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from zoobot.catalog import CatalogError, read_table, schema_spec_of, vote_counts
from zoobot.cli.app import app, fail
from zoobot.files import atomic_path, write_json_atomic
from zoobot.ids import describe_ids
from zoobot.schema import Schema
from zoobot.uncertainty import LEVELS, MAX_ERROR, check_levels, coverage

CSV_COLUMNS = [
    "question", "kind", "level", "used_level", "max_error", "predicted", "observed", "stderr", "credible_observed",
    "n_galaxies", "mean_votes",
]


def observed_counts(catalog_path: Path, ids: np.ndarray, schema: Schema, ignore_extra: bool) -> np.ndarray:
    """(galaxy, answer) vote counts of ``ids`` (in that order) from a catalog with id_str and vote columns.

    CatalogError naming the ids or columns for: no id_str, repeated ids, missing vote columns,
    predicted galaxies the catalog lacks, catalog galaxies that were not predicted (unless
    ``ignore_extra``), and counts that are NaN, fractional or negative.
    """
    table = read_table(catalog_path)
    if "id_str" not in table.columns:
        raise CatalogError(f"{catalog_path}: no 'id_str' column; expected id_str and the vote columns of schema {schema.name!r}")
    table["id_str"] = table["id_str"].astype(str)
    repeated = table["id_str"][table["id_str"].duplicated()].unique()
    if len(repeated):
        raise CatalogError(f"{catalog_path}: column 'id_str' must be unique; repeated ids {describe_ids(repeated)}")
    missing_columns = [c for c in schema.answer_columns if c not in table.columns]
    if missing_columns:
        recorded = schema_spec_of(catalog_path) if catalog_path.suffix.lower() == ".parquet" else None
        made_for = f" (it records schema {recorded!r})" if recorded else ""
        raise CatalogError(
            f"{catalog_path}{made_for}: no vote columns {describe_ids(missing_columns)} of the predictions' "
            f"schema {schema.name!r}; score predictions against a catalog of the same schema"
        )
    known = pd.Index(table["id_str"])
    absent = ids[~pd.Index(ids).isin(known)]
    if len(absent):
        raise CatalogError(
            f"{catalog_path} has no votes for {len(absent)} predicted galaxies: {describe_ids(absent)}; "
            "score against the catalog the predicted galaxies came from"
        )
    extra = table["id_str"][~known.isin(ids)]
    if len(extra) and not ignore_extra:
        raise CatalogError(
            f"{catalog_path} has {len(extra)} galaxies that were not predicted: {describe_ids(extra)}; "
            "pass --ignore-extra to score only the predicted ones (e.g. against a master catalog or "
            "a manifest of every split)"
        )
    table = table.set_index("id_str").loc[ids]
    columns = [
        vote_counts(table[c], table.index, f"{catalog_path}: column {c!r}", "Vote columns hold integer counts >= 0.")
        for c in schema.answer_columns
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((len(ids), 0), np.int64)


def coverage_table(report: dict) -> pd.DataFrame:
    """The report as one long table: a row per (question, level) and per (question, +-w); after
    recalibration also a row per (question, level) of kind "recalibrated"."""
    rows = []
    for name, part in [*report["questions"].items(), ("all", report["all"])]:
        common = {"question": name, "n_galaxies": part["n_galaxies"], "mean_votes": part["mean_votes"]}
        for row in part["intervals"]:
            rows.append({**common, "kind": "interval", **row})
        for row in part["within"]:
            rows.append({**common, "kind": "within", **row})
        if "recalibrated" in report:
            after = report["recalibrated"]["all" if name == "all" else "questions"]
            for row in (after if name == "all" else after[name])["intervals"]:
                rows.append({**common, "kind": "recalibrated", **row})
    return pd.DataFrame(rows).reindex(columns=CSV_COLUMNS)


def plot_coverage(report: dict, path: Path) -> None:
    """Two panels: observed coverage of the predictive intervals against their nominal level, per
    question and pooled (with the credible interval's for contrast); the 2019 paper's +-w plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    levels = report["levels"]
    left.plot([0, 1], [0, 1], color="0.6", lw=1, label="nominal")
    for name, part in report["questions"].items():
        if part["n_galaxies"]:
            left.plot(levels, [r["observed"] for r in part["intervals"]], color="tab:blue", alpha=0.3, lw=1, marker=".")
    pooled = report["all"]
    if pooled["n_galaxies"]:
        left.plot(levels, [r["observed"] for r in pooled["intervals"]], color="tab:blue", lw=2, marker="o",
                  label="observed (thin: per question)")
        left.plot(levels, [r["predicted"] for r in pooled["intervals"]], color="black", ls=":", marker="x",
                  label="predicted mass")
        left.plot(levels, [r["credible_observed"] for r in pooled["intervals"]], color="tab:red", ls="--", marker="s",
                  label="credible interval of\nthe mean, observed")
        if "recalibrated" in report:
            left.plot(levels, [r["observed"] for r in report["recalibrated"]["all"]["intervals"]], color="tab:green",
                      lw=2, marker="D", label="observed after\nrecalibration")
        widths = [r["max_error"] for r in pooled["within"]]
        right.plot(widths, [r["predicted"] for r in pooled["within"]], color="black", label="predicted")
        right.plot(widths, [r["observed"] for r in pooled["within"]], color="tab:blue", marker="o", ls="", label="observed")
    left.set(xlabel="nominal level of the predictive interval", ylabel="fraction of observed counts inside", xlim=(0, 1), ylim=(0, 1.02),
             title=f"coverage, {pooled['n_galaxies']} galaxies, all questions")
    left.legend(fontsize=7, loc="upper left")
    right.set(xlabel="w (votes)", ylabel="P(|k - round(E[k])| <= w)", ylim=(0, 1.02),
              title="within +-w of the expected count")
    right.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def print_report(report: dict, note: str = "") -> None:
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = 200  # whole rows in files, pipes and CI logs
    title = f"coverage of the posterior predictive intervals ({report['schema']}, {report['n_samples']} samples)"
    table = Table(title=f"{title}, {note}" if note else title)
    for column in ("question", "galaxies", "mean N"):
        table.add_column(column, justify="right", no_wrap=True)
    for level in report["levels"]:
        table.add_column(f"{level:g}: obs / pred", justify="right", no_wrap=True)
    table.add_column("calib. error", justify="right", no_wrap=True)
    for name, part in [*report["questions"].items(), ("all", report["all"])]:
        cells = [f"{r['observed']:.3f} / {r['predicted']:.3f}" if part["n_galaxies"] else "-" for r in part["intervals"]]
        mean_votes = "-" if part["mean_votes"] is None else f"{part['mean_votes']:.1f}"
        error = "-" if part["calibration_error"] is None else f"{part['calibration_error']:.3f}"
        table.add_row(name, str(part["n_galaxies"]), mean_votes, *cells, error)
    console.print(table)


@app.command("coverage")
def coverage_command(
    predictions: Path = typer.Argument(
        ..., help="A `zoobot predict --save-samples` Parquet catalog (its <stem>_samples.npy beside it).", show_default=False
    ),
    catalog: Path = typer.Argument(
        ..., help="CSV or Parquet with id_str and the schema's vote columns: a master or experiment catalog, "
        "or a shard folder's manifest.parquet.", show_default=False,
    ),
    out: Path = typer.Option(..., "--out", help="Folder for coverage.json, coverage.csv and coverage.png.", show_default=False),
    level: list[float] = typer.Option(list(LEVELS), "--level", help="Interval level (repeatable)."),
    max_error: int = typer.Option(MAX_ERROR, help="The +-w table runs over w = 0..this many votes."),
    ignore_extra: bool = typer.Option(
        False, "--ignore-extra", help="Score only the predicted galaxies when the catalog has more."
    ),
    recalibrate_on: Optional[Path] = typer.Option(
        None, "--recalibrate-on", show_default=False,
        help="Predictions (--save-samples) of other labelled galaxies, e.g. the val split: fit per-question "
        "interval levels there and report coverage before and after (recalibration.json).",
    ),
) -> None:
    """Observed against predicted coverage of the predictive intervals, per question, on real votes."""
    from zoobot.prediction_writer import read_predictions
    from zoobot.recalibration import check_disjoint, fit_levels, used_levels

    try:
        levels = check_levels(level)
        if max_error < 0:
            raise ValueError(f"--max-error: expected a whole number of votes >= 0, got {max_error}")
        read = read_predictions(predictions)
        ids = read.catalog["id_str"].astype(str).to_numpy()
        counts = observed_counts(Path(catalog), ids, read.schema, ignore_extra)
        report = coverage(read.samples, counts, read.schema, levels, max_error)
        fit = recalibrated = None
        if recalibrate_on is not None:
            calibration = read_predictions(recalibrate_on)
            if calibration.schema != read.schema:
                raise ValueError(
                    f"--recalibrate-on {recalibrate_on}: schema {calibration.schema.name!r}, but the predictions "
                    f"have {read.schema.name!r}; predict both splits with the same checkpoint"
                )
            fit_ids = calibration.catalog["id_str"].astype(str).to_numpy()
            check_disjoint(fit_ids, ids)
            fit_counts = observed_counts(Path(catalog), fit_ids, read.schema, ignore_extra=True)
            fit = fit_levels(calibration.samples, fit_counts, read.schema, levels)
            fit = {"fitted_on": str(Path(recalibrate_on).resolve()), **fit}
            recalibrated = coverage(read.samples, counts, read.schema, levels, max_error, used_levels(fit))
    except (ValueError, KeyError) as error:
        fail(str(error.args[0]) if isinstance(error, KeyError) else str(error))
    report = {"predictions": str(Path(predictions).resolve()), "catalog": str(Path(catalog).resolve()), **report}
    if recalibrated is not None:
        report["recalibrated"] = recalibrated
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "coverage.json", report)
    with atomic_path(out / "coverage.csv") as tmp:
        coverage_table(report).to_csv(tmp, index=False)
    plot_coverage(report, out / "coverage.png")
    print_report(report)
    written = "coverage.json, coverage.csv and coverage.png"
    if fit is not None:
        write_json_atomic(out / "recalibration.json", fit)
        print_report(recalibrated, f"after recalibration fitted on {fit_counts.shape[0]} galaxies of {recalibrate_on}")
        written = "coverage.json, coverage.csv, coverage.png and recalibration.json"
    typer.echo(f"wrote {written} to {out}")
