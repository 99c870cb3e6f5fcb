"""The data-quality gate: Great Expectations checks over an ingested dataset, run before any training.

:func:`validate_dataset` runs one GX suite over the manifest (one row per image, plus a ``file`` column
naming it) and a second over a per-(class, split) count table, then turns every failed expectation into a
:class:`Failure` that names the offending files. The pipeline's validate step fails with
:meth:`ValidationReport.summary` as its message and keeps :func:`write_report`'s JSON and HTML as artifacts.

Checks that need pixels (sha256, width, height, dtype, pixel std, duplicates, leakage) skip rows whose
``decode_error`` is set: such an image has no pixels to measure and is already reported as undecodable, so
reporting it again as "constant" or "duplicate" (its placeholder pixels are zero) would be noise.

Segmentation datasets (those with masks) get three more checks over the mask columns: every mask decodes and
has its image's size, the source's defect flag (DAGM's Labels.txt) agrees with the mask's content, and a
defect covers between ``min_defect_fraction`` and ``max_defect_fraction`` of its image.

Great Expectations is imported only inside the functions that build and run the checks: importing it costs
about 4 s, which no other command of the package should pay.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pandas as pd

from inspectflow.config import ValidateConfig
from inspectflow.data.dataset import MANIFEST_COLUMNS, MASK_COLUMNS, SPLITS, Dataset, file_name
from inspectflow.errors import DataError

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.expectations.expectation import Expectation

JSON_FILE = "validation.json"
HTML_FILE = "validation.html"
#: Offending files or groups listed in one problem sentence; the rest are counted ("and 7 more").
MAX_LISTED = 20

_FILE = "file"
_GROUP = "group"
_LEAK = "in_train_and_test"
_CONFLICT = "same_pixels_other_label"
_MASK_OK = "mask_matches_image"
_FLAG_OK = "flag_matches_mask"


@dataclass
class Failure:
    """One failed expectation.

    Attributes:
        expectation: GX expectation type, such as ``expect_column_values_to_be_in_set``.
        column: The column checked, such as ``label``.
        problem: A sentence naming the problem and the offending files (the first :data:`MAX_LISTED`; the
            count covers all).
        files: Every offending file (:func:`~inspectflow.data.dataset.file_name`); empty for the class-count
            check, which is about groups, not files.
        values: The offending values where they say something (the bad labels, the decode errors, the
            duplicated hashes), aligned with ``files``; for the class-count check the short ``class/split``
            groups.
    """

    expectation: str
    column: str
    problem: str
    files: list[str]
    values: list[str]


@dataclass
class Passed:
    """One expectation that held.

    Attributes:
        expectation: GX expectation type.
        column: The column checked.
        rule: What held, such as ``label in ['good', 'hole']``.
    """

    expectation: str
    column: str
    rule: str


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_dataset`.

    Attributes:
        success: Every check passed.
        checks: Number of expectations evaluated.
        failures: The failed checks, in check order.
        passed: The checks that held, in check order (for the HTML report).
    """

    success: bool
    checks: int
    failures: list[Failure]
    passed: list[Passed] = field(default_factory=list)

    def summary(self) -> str:
        """Returns a message with one line per failure, naming the files and the problem."""
        if self.success:
            return f"data validation passed: {self.checks} checks"
        lines = [f"data validation failed: {len(self.failures)} of {self.checks} checks failed"]
        lines += [f"  {failure.column}: {failure.problem}" for failure in self.failures]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuilds a report from its JSON form (the content of ``validation.json``)."""
        return cls(
            success=data["success"],
            checks=data["checks"],
            failures=[Failure(**item) for item in data["failures"]],
            passed=[Passed(**item) for item in data["passed"]],
        )


#: Turns a failed check's offending items (file or group names) and their column values into
#: ``(problem, files, values)`` for its :class:`Failure`.
_Explain = Callable[[list[str], list[Any]], tuple[str, list[str], list[str]]]


@dataclass(frozen=True)
class _Check:
    """An expectation with what to say when it passes (``rule``) and when it fails (``explain``)."""

    expectation: Expectation
    rule: str
    explain: _Explain


#: The rule sets a task may ask for (``Task.data_rules``): per image, per class and split, per mask, and
#: good and defective parts per split (a task that learns from good parts only).
RULE_SETS = ("manifest", "counts", "masks", "good_parts")


def validate_dataset(
    dataset: Dataset,
    classes: list[str],
    config: ValidateConfig,
    rules: tuple[str, ...] = ("manifest", "counts"),
) -> ValidationReport:
    """Runs the data-quality checks over an ingested dataset.

    Checks, over the manifest: no missing label, split, sha256, width or height; every image decodable;
    labels in ``classes``; splits ``train``/``test``; source dtype uint8; width and height at least
    ``config.min_side`` (and equal to ``config.expected_side`` when set); no constant image; no duplicated
    image; no image in both train and test. Over the class counts: every class has at least
    ``config.min_per_class`` images in each split.

    Args:
        dataset: The ingested dataset.
        classes: Expected class names (labels outside them fail).
        config: The validate section of the pipeline config.
        rules: The rule sets of :data:`RULE_SETS` the run's task applies (``Task.data_rules``): ``masks``
            adds that every mask decodes, fits its image, agrees with the source's defect flag and covers
            a share of the image within the configured bounds; ``good_parts`` that the training split holds
            at least ``config.min_per_class`` good parts to learn from and the test split both good and
            defective ones (:meth:`Dataset.defective`) to be scored on.

    Returns:
        The report; ``success`` is False when any check failed.

    Raises:
        DataError: The manifest lacks columns, so the checks cannot run.
    """
    unknown = set(rules) - set(RULE_SETS)
    if unknown:
        raise ValueError(f"unknown rule sets {sorted(unknown)}; known: {', '.join(RULE_SETS)}")
    with_masks = "masks" in rules
    manifest = _manifest_frame(dataset.manifest, with_masks)
    counts = _count_frame(manifest, classes)
    where = {
        name: (str(split), str(sha))
        for name, split, sha in zip(manifest[_FILE], manifest["split"], manifest["sha256"], strict=True)
    }
    checks = _manifest_checks(classes, config, where) if "manifest" in rules else []
    if with_masks:
        checks += _mask_checks(config)
    suites = [("manifest", manifest, checks, _FILE)]
    if "counts" in rules:
        suites.append(("class_counts", counts, _count_checks(config.min_per_class), _GROUP))
    if "good_parts" in rules:
        needed = {"good/train": config.min_per_class, "good/test": 1, "defective/test": 1}
        suites.append(("good_parts", _parts_frame(dataset, needed), _parts_checks(needed), _GROUP))
    outcomes = _run_suites(suites)
    failures = [outcome for outcome in outcomes if isinstance(outcome, Failure)]
    passed = [outcome for outcome in outcomes if isinstance(outcome, Passed)]
    return ValidationReport(success=not failures, checks=len(outcomes), failures=failures, passed=passed)


def write_report(report: ValidationReport, out_dir: Path) -> tuple[Path, Path]:
    """Writes ``validation.json`` and a readable, self-contained ``validation.html``.

    Args:
        report: The report of :func:`validate_dataset`.
        out_dir: Directory to write to (created if missing).

    Returns:
        The paths of the JSON and HTML files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_FILE, out_dir / HTML_FILE
    json_path.write_text(json.dumps(asdict(report), indent=2))
    html_path.write_text(_html(report))
    return json_path, html_path


def _manifest_frame(manifest: pd.DataFrame, with_masks: bool = False) -> pd.DataFrame:
    """Copies the manifest columns and adds the derived ones the checks read.

    Derived: ``file`` (the image's name), the leakage flag and, with masks, whether each mask fits its
    image and agrees with the source's defect flag.
    """
    columns = MANIFEST_COLUMNS + (MASK_COLUMNS if with_masks else [])
    missing = [column for column in columns if column not in manifest.columns]
    if missing:
        raise DataError(f"manifest lacks the columns {missing}; re-run ingest")
    frame = manifest[columns].reset_index(drop=True)
    frame[_FILE] = [file_name(str(s), i) for s, i in zip(frame["source"], frame["index"], strict=True)]
    # An in-memory manifest may mark "no error" as ""; a reloaded one reads that as missing. Treat both alike.
    frame["decode_error"] = frame["decode_error"].astype("string").replace("", pd.NA)
    decodable = frame["decode_error"].isna() & frame["sha256"].notna()
    hashes = [set(frame.loc[decodable & (frame["split"] == split), "sha256"]) for split in SPLITS]
    frame[_LEAK] = decodable & frame["sha256"].isin(set.intersection(*hashes))
    labels_per_hash = frame[decodable].groupby("sha256")["label"].nunique()
    frame[_CONFLICT] = decodable & frame["sha256"].isin(labels_per_hash[labels_per_hash > 1].index)
    if with_masks:
        frame["mask_error"] = frame["mask_error"].astype("string").replace("", pd.NA)
        # Rows whose image or mask cannot be decoded are reported by those checks; they pass these two.
        judged = decodable & frame["mask_error"].isna()
        same_size = (frame["mask_width"] == frame["width"]) & (frame["mask_height"] == frame["height"])
        frame[_MASK_OK] = ~judged | same_size
        flagged = frame["defect_flag"].notna()
        agrees = frame["defect_flag"].fillna(0).astype(bool) == (frame["defect_fraction"].fillna(0) > 0)
        frame[_FLAG_OK] = ~(judged & flagged) | agrees
    return frame


def _count_frame(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Counts images per (class, split), with a zero row for every pair that has none."""
    sizes = manifest.groupby(["label", "split"]).size()
    rows = [
        {_GROUP: f"{label}/{split}", "count": int(sizes.get((label, split), 0))}
        for label in classes
        for split in SPLITS
    ]
    return pd.DataFrame(rows, columns=[_GROUP, "count"])


def _parts_frame(dataset: Dataset, needed: dict[str, int]) -> pd.DataFrame:
    """Good and defective images per split, less the number each group needs (``spare``)."""
    found = {
        f"{kind}/{split}": int((flags if kind == "defective" else ~flags).sum())
        for split in SPLITS
        for flags in [dataset.defective(split)]
        for kind in ("good", "defective")
    }
    rows = [{_GROUP: group, "spare": found[group] - least} for group, least in needed.items()]
    return pd.DataFrame(rows, columns=[_GROUP, "spare"])


def _parts_checks(needed: dict[str, int]) -> list[_Check]:
    """Builds the check over :func:`_parts_frame`'s table: every group has the images it needs."""
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )

    def explain(groups: list[str], spare: list[Any]) -> tuple[str, list[str], list[str]]:
        items = [
            f"{group} has {needed[group] + int(s)}, needs {needed[group]}"
            for group, s in zip(groups, spare, strict=True)
        ]
        return f"too few parts to learn from good ones and be scored: {_listing(items, '; ')}", [], groups

    rule = ", ".join(f"{group} >= {least}" for group, least in needed.items())
    return [_Check(ExpectColumnValuesToBeBetween(column="spare", min_value=0), f"images: {rule}", explain)]


def _expectations() -> SimpleNamespace:
    """The Great Expectations expectation classes the checks use."""
    # From the defining modules: ``gx.expectations`` re-exports them implicitly, which mypy --strict rejects.
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_null import (
        ExpectColumnValuesToBeNull,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_unique import (
        ExpectColumnValuesToBeUnique,
    )
    from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
        ExpectColumnValuesToNotBeNull,
    )

    return SimpleNamespace(
        between=ExpectColumnValuesToBeBetween,
        in_set=ExpectColumnValuesToBeInSet,
        null=ExpectColumnValuesToBeNull,
        unique=ExpectColumnValuesToBeUnique,
        not_null=ExpectColumnValuesToNotBeNull,
    )


def _decodable() -> Any:
    """The row condition of rows whose image decoded."""
    from great_expectations.expectations.row_conditions import Column

    return Column(name="decode_error").is_null()


def _manifest_checks(
    classes: list[str], config: ValidateConfig, where: dict[str, tuple[str, str]]
) -> list[_Check]:
    """Builds the manifest's checks; ``where`` maps a file to its split and hash, to group duplicates."""
    return [*_completeness_checks(classes), *_size_checks(config), *_content_checks(config, where)]


def _completeness_checks(classes: list[str]) -> list[_Check]:
    """Every image decodes and has a label in the classes, a split, a hash, a size and 8-bit samples."""
    gx, decodable = _expectations(), _decodable()
    checks = [
        _Check(
            gx.not_null(column=column),
            f"every image has a {column}",
            _per_file(f"image has no {column}", f"images have no {column}", None),
        )
        for column in ("label", "split")
    ]
    checks += [
        _Check(
            gx.not_null(column=column, row_condition=decodable),
            f"every decodable image has a {column}",
            _per_file(f"image has no {column}", f"images have no {column}", None),
        )
        for column in ("sha256", "width", "height")
    ]
    checks += [
        _Check(
            gx.null(column="decode_error"),
            "every image decodes",
            _per_file("image cannot be decoded", "images cannot be decoded", str),
        ),
        _Check(
            gx.in_set(column="label", value_set=classes),
            f"label in {classes}",
            _per_file(
                f"image has a label outside {classes}",
                f"images have a label outside {classes}",
                _value("label", quote=True),
            ),
        ),
        _Check(
            gx.in_set(column="split", value_set=list(SPLITS)),
            f"split in {list(SPLITS)}",
            _per_file(
                f"image has a split outside {list(SPLITS)}",
                f"images have a split outside {list(SPLITS)}",
                _value("split", quote=True),
            ),
        ),
        _Check(
            gx.in_set(column="dtype", value_set=["uint8"], row_condition=decodable),
            "source dtype uint8",
            _per_file("image is not uint8", "images are not uint8", _value("dtype", quote=True)),
        ),
    ]
    return checks


def _size_checks(config: ValidateConfig) -> list[_Check]:
    """Width and height at least ``min_side`` (and equal to ``expected_side`` when set)."""
    gx, decodable = _expectations(), _decodable()
    checks = []
    for column, adjective in (("width", "wide"), ("height", "high")):
        checks.append(
            _Check(
                gx.between(column=column, min_value=config.min_side, row_condition=decodable),
                f"{column} >= {config.min_side} px",
                _per_file(
                    f"image is less than {config.min_side} px {adjective}",
                    f"images are less than {config.min_side} px {adjective}",
                    _value(column),
                ),
            )
        )
        if config.expected_side is not None:
            side = config.expected_side
            checks.append(
                _Check(
                    gx.between(column=column, min_value=side, max_value=side, row_condition=decodable),
                    f"{column} == {side} px",
                    _per_file(
                        f"image is not {side} px {adjective}",
                        f"images are not {side} px {adjective}",
                        _value(column),
                    ),
                )
            )
    return checks


def _content_checks(config: ValidateConfig, where: dict[str, tuple[str, str]]) -> list[_Check]:
    """No constant image, no duplicate (or no contradicting one), no image in both splits."""
    gx, decodable = _expectations(), _decodable()
    return [
        _Check(
            gx.between(column="pixel_std", min_value=0, strict_min=True, row_condition=decodable),
            "no constant image (pixel_std > 0)",
            _per_file("image is constant", "images are constant", _value("pixel_std")),
        ),
        _Check(
            gx.unique(column="sha256", row_condition=decodable),
            "no two images have the same pixels",
            _by_hash(
                "image is a duplicate (identical pixels)",
                "images are duplicates (identical pixels)",
                where,
                keep_hashes=True,
            ),
        )
        if config.unique_images
        # Real sets hold repeated images; harmless unless their labels contradict each other.
        else _Check(
            gx.in_set(column=_CONFLICT, value_set=[False]),
            "no two images with the same pixels have different labels",
            _by_hash(
                "image has the pixels of an image of another class",
                "images have the same pixels but different labels",
                where,
                keep_hashes=False,
            ),
        ),
        _Check(
            gx.in_set(column=_LEAK, value_set=[False]),
            "no image in both train and test",
            _by_hash(
                "image is in both train and test (leakage)",
                "images are in both train and test (leakage)",
                where,
                keep_hashes=False,
            ),
        ),
    ]


def _mask_checks(config: ValidateConfig) -> list[_Check]:
    """Builds the checks of segmentation masks over the columns :func:`_manifest_frame` derives."""
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_null import (
        ExpectColumnValuesToBeNull,
    )
    from great_expectations.expectations.row_conditions import Column

    low, high = config.min_defect_fraction, config.max_defect_fraction
    return [
        _Check(
            ExpectColumnValuesToBeNull(column="mask_error"),
            "every mask decodes",
            _per_file("image's mask cannot be read", "images' masks cannot be read", _value("mask_error")),
        ),
        _Check(
            ExpectColumnValuesToBeInSet(column=_MASK_OK, value_set=[True]),
            "every mask has its image's size",
            _per_file("image's mask has another size", "images' masks have another size", None),
        ),
        _Check(
            ExpectColumnValuesToBeInSet(column=_FLAG_OK, value_set=[True]),
            "the defect flag (Labels.txt) agrees with the mask",
            _per_file(
                "image's Labels.txt defect flag contradicts its mask (defective with an empty mask, or clean "
                "with defect pixels)",
                "images' Labels.txt defect flags contradict their masks (defective with an empty mask, or "
                "clean with defect pixels)",
                None,
            ),
        ),
        _Check(
            ExpectColumnValuesToBeBetween(
                column="defect_fraction",
                min_value=low,
                max_value=high,
                row_condition=Column(name="defect_fraction") > 0,
            ),
            f"defect area between {low:.2%} and {high:.2%} of the image",
            _per_file(
                f"image's defect area is outside {low:.2%}..{high:.2%}",
                f"images' defect areas are outside {low:.2%}..{high:.2%}",
                _value("defect_fraction"),
            ),
        ),
    ]


def _count_checks(min_per_class: int) -> list[_Check]:
    """Builds the class-count check over :func:`_count_frame`'s table."""
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )

    def explain(groups: list[str], counts: list[Any]) -> tuple[str, list[str], list[str]]:
        items = [f"{group} ({count})" for group, count in zip(groups, counts, strict=True)]
        subject = _plural(
            len(groups),
            f"class/split has fewer than {min_per_class} images",
            f"class/splits have fewer than {min_per_class} images",
        )
        return f"{subject}: {_listing(items, ', ')}", [], groups

    return [
        _Check(
            ExpectColumnValuesToBeBetween(column="count", min_value=min_per_class),
            f"every class has >= {min_per_class} images in each split",
            explain,
        )
    ]


def _run_suites(suites: Sequence[tuple[str, pd.DataFrame, list[_Check], str]]) -> list[Failure | Passed]:
    """Validates each ``(name, frame, checks, index_column)`` in one ephemeral GX context.

    ``index_column`` names the offending rows of a failed check: ``file`` for the manifest.

    Returns:
        The outcome of every check, in the order given.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # 1.24 ships no analytics client, so progress bars are the only thing to silence: without this, every
    # run draws a tqdm "Calculating Metrics" bar on stderr.
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("inspectflow")
    outcomes: list[Failure | Passed] = []
    for name, frame, checks, index_column in suites:
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        # GX does not promise results in suite order, so each expectation carries its position.
        for position, check in enumerate(checks):
            check.expectation.meta = {"check": position}
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[check.expectation for check in checks])
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=suite, name=name)
        )
        run = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]},
        )
        judged = [_judge(checks, result, index_column) for result in run.results]
        outcomes += [outcome for _, outcome in sorted(judged, key=lambda pair: pair[0])]
    return outcomes


def _judge(
    checks: list[_Check], result: ExpectationValidationResult, index_column: str
) -> tuple[int, Failure | Passed]:
    """Turns one GX result into ``(check position, outcome)``."""
    configuration = result.expectation_config
    if configuration is None:  # GX fills it for every result of a suite run
        raise RuntimeError("Great Expectations returned a result without its expectation")
    position = int(configuration.meta["check"])
    check = checks[position]
    expectation, column = configuration.type, str(configuration.kwargs["column"])
    errors = _exception_messages(result.exception_info)
    if errors:
        return position, Failure(
            expectation, column, f"check {check.rule!r} could not run: {'; '.join(errors)}", [], []
        )
    if result.success:
        return position, Passed(expectation, column, check.rule)
    rows = result.result.get("unexpected_index_list") or []
    items = [str(row[index_column]) for row in rows]
    problem, files, values = check.explain(items, [row[column] for row in rows])
    return position, Failure(expectation, column, problem, files, values)


def _exception_messages(info: dict[str, Any]) -> list[str]:
    """Collects the errors of a check that could not run.

    GX gives either one ``{"raised_exception": ..., "exception_message": ...}`` dict or a dict of them
    keyed by the failing metric.
    """
    entries = [info] if "raised_exception" in info else list(info.values())
    return sorted({str(e["exception_message"]) for e in entries if e.get("raised_exception")})


def _per_file(one: str, many: str, detail: Callable[[Any], str] | None) -> _Explain:
    """Explains a per-image failure: ``3 images are constant: a.png (pixel_std 0.0), ...``.

    Args:
        one: Predicate for a single image, with its noun (``image is constant``).
        many: The same for several images (``images are constant``).
        detail: Formats a file's offending value, shown in brackets and kept in ``values``; None when the
            value says nothing (a missing value).
    """

    def explain(files: list[str], values: list[Any]) -> tuple[str, list[str], list[str]]:
        if detail is None:
            return f"{_plural(len(files), one, many)}: {_listing(files, ', ')}", files, []
        items = [f"{name} ({detail(value)})" for name, value in zip(files, values, strict=True)]
        return f"{_plural(len(files), one, many)}: {_listing(items, ', ')}", files, [str(v) for v in values]

    return explain


def _by_hash(one: str, many: str, where: dict[str, tuple[str, str]], keep_hashes: bool) -> _Explain:
    """Explains a failure about images sharing pixels, listing each group as ``a.png (train) = b.png (test)``.

    Args:
        one: Predicate for a single image.
        many: The same for several images.
        where: Each file's split and hash.
        keep_hashes: Keep each file's hash in ``values``.
    """

    def explain(files: list[str], values: list[Any]) -> tuple[str, list[str], list[str]]:
        groups: dict[str, list[str]] = {}
        for name in files:
            split, sha = where[name]
            groups.setdefault(sha, []).append(f"{name} ({split})")
        items = [" = ".join(members) for members in groups.values()]
        hashes = [where[name][1] for name in files] if keep_hashes else []
        return f"{_plural(len(files), one, many)}: {_listing(items, '; ')}", files, hashes

    return explain


def _value(name: str, quote: bool = False) -> Callable[[Any], str]:
    """Formats an offending value for a problem sentence: ``width 4``, ``label 'stain'``."""
    return lambda value: f"{name} {str(value)!r}" if quote else f"{name} {value}"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _listing(items: list[str], separator: str) -> str:
    """Joins the first :data:`MAX_LISTED` items and counts the rest."""
    text = separator.join(items[:MAX_LISTED])
    rest = len(items) - MAX_LISTED
    return f"{text}{separator}and {rest} more" if rest > 0 else text


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.pass { color: #176f2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
code { font-size: 0.9em; }
"""


def _html(report: ValidationReport) -> str:
    """Renders the report as one self-contained HTML page: a row per check, failures first."""
    rows = [
        (failure.column, failure.expectation, "fail", failure.problem, failure.files)
        for failure in report.failures
    ]
    rows += [(check.column, check.expectation, "pass", check.rule, []) for check in report.passed]
    body = "\n".join(
        f"<tr><td><code>{html.escape(column)}</code></td><td><code>{html.escape(expectation)}</code></td>"
        f'<td class="{status}">{status}</td><td>{html.escape(text)}</td>'
        f"<td>{html.escape(_listing(files, ', '))}</td></tr>"
        for column, expectation, status, text, files in rows
    )
    verdict = "passed" if report.success else "failed"
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Data validation: {verdict}</title><style>{_STYLE}</style></head>
<body>
<h1>Data validation <span class="{"pass" if report.success else "fail"}">{verdict}</span></h1>
<p>{len(report.failures)} of {report.checks} checks failed.</p>
<table>
<tr><th>Column</th><th>Expectation</th><th>Result</th><th>Details</th><th>Offending files</th></tr>
{body}
</table>
</body>
</html>
"""
