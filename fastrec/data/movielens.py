"""Read and validate the MovieLens-1M and MovieLens-100K files.

ML-1M (``ratings.dat``, ``movies.dat``, ``users.dat``) separates fields with ``::``.
ML-100K uses ``u.data`` (tab-separated), ``u.item`` and ``u.user`` (pipe-separated).
Text is decoded as ISO-8859-1 (Latin-1). Lines end with LF. CRLF endings are
accepted too, although the sha256 of such a file differs from the published one.

Ratings go through a vectorized pyarrow path first. When that path rejects the
input, a line-by-line scan repeats the parse with the same rules and raises a
``DataError`` that names the file, the 1-based line number and the line text.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from fastrec.errors import ConfigError, DataError

__all__ = [
    "AGE_GROUPS_ML1M",
    "GENRES_ML1M",
    "GENRES_ML100K",
    "OCCUPATIONS_ML100K",
    "MovieLens",
    "Movies",
    "Ratings",
    "Users",
    "file_sha256",
    "load_movielens",
    "read_movies",
    "read_ratings",
    "read_users",
]

# Genre names in the order of the ML-1M README.
GENRES_ML1M: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# ML-100K's u.item has one 0/1 flag per genre in this order (the order of u.genre).
GENRES_ML100K: tuple[str, ...] = ("unknown",) + GENRES_ML1M
# ML-1M stores an age group code, the lower bound of the group in years
# (1 means "under 18", 56 means "56+").
AGE_GROUPS_ML1M: tuple[int, ...] = (1, 18, 25, 35, 45, 50, 56)
# ML-1M occupation codes run from 0 ("other") to 20 ("writer").
N_OCCUPATIONS_ML1M = 21
# ML-100K names occupations. Users.occupation stores the index in this tuple,
# which is the order of u.occupation.
OCCUPATIONS_ML100K: tuple[str, ...] = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)

ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")
ML100K_FILES = ("u.data", "u.item", "u.user")
ENCODING = "iso-8859-1"
DOWNLOAD_HINT = "python -m fastrec.data.download"

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_MAX_SHOWN_CHARS = 120
_YEAR_AT_END = re.compile(r"\((\d{4})\)\s*$")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, eq=False)
class Ratings:
    """Ratings in file order, with raw (not re-indexed) user and movie ids.

    Ties in ``timestamp`` are common (about half of the ML-1M ratings share their
    second with another rating of the same user), so file order is the only
    tie-break that the data provides. Treat the arrays as read-only.
    """

    user: np.ndarray  # (N,) int32
    item: np.ndarray  # (N,) int32
    rating: np.ndarray  # (N,) int8, 1 to 5
    timestamp: np.ndarray  # (N,) int64, seconds since the Unix epoch

    def __post_init__(self) -> None:
        _check_lengths(self, ("user", "item", "rating", "timestamp"))

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True, eq=False)
class Movies:
    """Movie table in file order."""

    movie_id: np.ndarray  # (M,) int32
    title: list[str]
    genres: list[tuple[str, ...]]
    years: np.ndarray  # (M,) int16, from "(1995)" at the end of the title, else -1

    def __post_init__(self) -> None:
        _check_lengths(self, ("movie_id", "title", "genres", "years"))

    def __len__(self) -> int:
        return len(self.movie_id)


@dataclass(frozen=True, eq=False)
class Users:
    """User table in file order.

    For ML-1M, ``age`` is the age group code (see AGE_GROUPS_ML1M) and
    ``occupation`` the code 0 to 20. For ML-100K, ``age`` is in years and
    ``occupation`` is the index in OCCUPATIONS_ML100K.
    """

    user_id: np.ndarray  # (U,) int32
    gender: list[str]  # "M" or "F"
    age: np.ndarray  # (U,) int16
    occupation: np.ndarray  # (U,) int16
    zip_code: list[str]  # kept as text: "0956456" and "55117-1234" occur

    def __post_init__(self) -> None:
        _check_lengths(self, ("user_id", "gender", "age", "occupation", "zip_code"))

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True, eq=False)
class MovieLens:
    """One MovieLens data set whose three files agree with each other."""

    name: str  # "ml-1m" or "ml-100k"
    ratings: Ratings
    movies: Movies
    users: Users
    sha256: dict[str, str]  # file name -> hex digest of the bytes that were parsed


def _check_lengths(table: object, fields: tuple[str, ...]) -> None:
    lengths = {name: len(getattr(table, name)) for name in fields}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{type(table).__name__} columns differ in length: {lengths}")


# ---------------------------------------------------------------------------
# Files and messages


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Compute the sha256 hex digest of a file, reading it in 1 MiB blocks."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def _fix_hint(path: Path) -> str:
    """Return the sentence that tells the user how to replace a bad file."""
    if path.name in ML100K_FILES:
        return f"Put fresh ML-100K files {', '.join(ML100K_FILES)} into {path.parent}"
    return f"Fetch a fresh copy with `{DOWNLOAD_HINT} --dest {path.parent}`"


# Editors that save "UTF-8 with BOM" put these bytes first. MovieLens files have none.
_UTF8_BOM = b"\xef\xbb\xbf"


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes.

    Raises DataError when the file is missing, is a folder, cannot be read or
    starts with a UTF-8 byte-order mark.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"MovieLens file not found: {path}. {_fix_hint(path)}"
        ) from None
    except IsADirectoryError:
        raise DataError(
            f"expected a MovieLens file but found a folder: {path}"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if data.startswith(_UTF8_BOM):
        raise DataError(
            f"{path} starts with a UTF-8 byte-order mark (bytes EF BB BF), which "
            f"MovieLens files do not have: save the file without it. {_fix_hint(path)}"
        )
    return data


def _shorten(text: str, limit: int = _MAX_SHOWN_CHARS) -> str:
    """Return ``repr(text)``, cut after ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _line_error(path: Path, line_number: int, line: str, problem: str) -> DataError:
    return DataError(
        f"{path}, line {line_number}: {problem}: {_shorten(line)}. Fix the line "
        f"or replace the file. {_fix_hint(path)}"
    )


def _empty_error(path: Path) -> DataError:
    return DataError(f"{path} is empty. {_fix_hint(path)}")


def _is_blank(data: bytes) -> bool:
    return not data.strip(b" \t\r\n")


def _text_lines(data: bytes, path: Path) -> list[str]:
    """Decode a Latin-1 file into lines without their LF or CRLF ending.

    Raise DataError for an empty file or a blank line. One final line ending is
    allowed. ``str.splitlines`` is not used because it also splits on characters
    such as U+0085, which is the Latin-1 byte 0x85.
    """
    if _is_blank(data):
        raise _empty_error(path)
    lines = data.decode(ENCODING).split("\n")
    if lines[-1] == "":
        lines.pop()
    for index, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
            lines[index] = line
        if not line.strip():
            raise _line_error(path, index + 1, line, "blank line")
    return lines


def _nth_line(data: bytes, index: int) -> str:
    """Return line ``index`` (0-based) of a file that has no blank lines."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    start = 0 if index == 0 else int(ends[index - 1]) + 1
    end = int(ends[index]) if index < len(ends) else len(data)
    return data[start:end].decode(ENCODING).removesuffix("\r")


def _infer_dataset(path: Path) -> str:
    if path.name in ML100K_FILES or path.suffix in (".base", ".test"):
        return "ml-100k"
    return "ml-1m"


def _resolve_dataset(path: Path, dataset: str | None) -> str:
    if dataset is None:
        return _infer_dataset(path)
    if dataset not in ("ml-1m", "ml-100k"):
        raise ConfigError(f"unknown dataset {dataset!r}: expected 'ml-1m' or 'ml-100k'")
    return dataset


# ---------------------------------------------------------------------------
# Integer fields


def _parse_int(
    field: str, name: str, low: int, high: int, path: Path, number: int, line: str
) -> int:
    """Parse a field of ASCII digits that must lie in [low, high]."""
    if _DIGITS.fullmatch(field) is None:
        problem = f"{name} {_shorten(field, 40)} is not an integer"
        raise _line_error(path, number, line, problem)
    value = int(field)
    if not low <= value <= high:
        raise _line_error(
            path, number, line, f"{name} {value} is outside the range {low} to {high}"
        )
    return value


def _split_fields(
    line: str, separator: str, names: tuple[str, ...], path: Path, number: int
) -> list[str]:
    fields = line.split(separator)
    if len(fields) != len(names):
        problem = _field_count_problem(separator, names, len(fields))
        raise _line_error(path, number, line, problem)
    return fields


def _field_count_problem(separator: str, names: tuple[str, ...], found: int) -> str:
    expected = f"{len(names)} fields separated by {separator!r}"
    if len(names) <= 5:
        expected += f" ({', '.join(names)})"
    return f"expected {expected}, found {found}"


# ---------------------------------------------------------------------------
# Ratings


@dataclass(frozen=True)
class _RatingsLayout:
    """How one data set lays out a ratings line, for both parse paths."""

    separator: str  # between fields, for the line-by-line scan
    delimiter: str  # one byte, for pyarrow
    allowed: bytes  # every byte that a valid file may contain, after CRLF -> LF
    columns: tuple[str, ...]  # pyarrow columns; "" marks the empty field in "::"


_ML1M_RATINGS = _RatingsLayout(
    separator="::",
    delimiter=":",
    allowed=b"0123456789:\n",
    # "a::b" splits on ":" into a, "", b, so the empty fields get null-typed columns
    # that reject any text.
    columns=("user", "", "item", "", "rating", "", "timestamp"),
)
_ML100K_RATINGS = _RatingsLayout(
    separator="\t",
    delimiter="\t",
    allowed=b"0123456789\t\n",
    columns=("user", "item", "rating", "timestamp"),
)
_RATING_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
_RATING_TYPES = {
    "user": pa.int32(),
    "item": pa.int32(),
    "rating": pa.int8(),
    "timestamp": pa.int64(),
}
_NUMPY_TYPES = {
    pa.int8(): np.dtype(np.int8),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
}


def read_ratings(path: str | os.PathLike[str], dataset: str | None = None) -> Ratings:
    """Read a ratings file (ML-1M ``ratings.dat`` or ML-100K ``u.data``).

    ``dataset`` is "ml-1m" or "ml-100k". By default, ``u.data`` and the ML-100K
    split files (``.base``, ``.test``) are read as ML-100K and anything else as
    ML-1M. Raise DataError naming the first bad line when a line has the wrong
    number of fields, a field that is not an integer, a rating outside 1 to 5, an
    id below 1 or an id above the int32 range, and for a blank line, an empty file
    or a missing file.
    """
    path = Path(path)
    dataset = _resolve_dataset(path, dataset)
    return _parse_ratings(_read_bytes(path), path, dataset)


def _parse_ratings(data: bytes, path: Path, dataset: str) -> Ratings:
    layout = _ML1M_RATINGS if dataset == "ml-1m" else _ML100K_RATINGS
    if _is_blank(data):
        raise _empty_error(path)
    ratings = _parse_ratings_vectorized(data, layout)
    if ratings is None:
        # The scan raises at the first bad line. It returns only if the fast
        # path rejected input that the scan accepts.
        ratings = _scan_ratings(data, path, layout)
    return ratings


def _parse_ratings_vectorized(data: bytes, layout: _RatingsLayout) -> Ratings | None:
    """Parse with pyarrow and return None when any check fails.

    This path accepts only input that ``_scan_ratings`` accepts too, and returns
    the same arrays. The byte check excludes signs, spaces and stray CRs. pyarrow
    rejects a wrong field count, text between the two colons of "::" and integer
    overflow. Nulls mark blank lines and empty fields.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if data.translate(None, layout.allowed):
        return None
    names = [name or f"empty{index}" for index, name in enumerate(layout.columns)]
    types = {name: _RATING_TYPES.get(name, pa.null()) for name in names}
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(
                delimiter=layout.delimiter,
                quote_char=False,
                escape_char=False,
                ignore_empty_lines=False,
            ),
            convert_options=pa_csv.ConvertOptions(column_types=types),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows == 0:
        return None
    columns = {}
    for name in _RATING_TYPES:
        column = table.column(name)
        if column.null_count:
            return None
        # np.concatenate copies, so the arrays are writable and own their memory.
        columns[name] = np.concatenate([_chunk_values(c) for c in column.chunks])
    rating = columns["rating"]
    if rating.min() < 1 or rating.max() > 5:
        return None
    if columns["user"].min() < 1 or columns["item"].min() < 1:
        return None
    return Ratings(**columns)


def _chunk_values(chunk: pa.Array) -> np.ndarray:
    """Return a view of the values of a pyarrow integer array without nulls.

    ``Array.to_numpy`` would do the same, but in pyarrow 26 it imports pandas on
    first use, which took about 0.3 s on a 2-core machine.
    """
    dtype = _NUMPY_TYPES[chunk.type]
    values = chunk.buffers()[1]
    offset = chunk.offset * dtype.itemsize
    return np.frombuffer(values, dtype=dtype, count=len(chunk), offset=offset)


def _scan_ratings(data: bytes, path: Path, layout: _RatingsLayout) -> Ratings:
    lines = _text_lines(data, path)
    count = len(lines)
    user = np.empty(count, dtype=np.int32)
    item = np.empty(count, dtype=np.int32)
    rating = np.empty(count, dtype=np.int8)
    timestamp = np.empty(count, dtype=np.int64)
    for index, line in enumerate(lines):
        number = index + 1
        fields = _split_fields(line, layout.separator, _RATING_FIELDS, path, number)
        user[index] = _parse_int(fields[0], "UserID", 1, _INT32_MAX, path, number, line)
        item[index] = _parse_int(
            fields[1], "MovieID", 1, _INT32_MAX, path, number, line
        )
        rating[index] = _parse_int(fields[2], "Rating", 1, 5, path, number, line)
        timestamp[index] = _parse_int(
            fields[3], "Timestamp", 0, _INT64_MAX, path, number, line
        )
    return Ratings(user=user, item=item, rating=rating, timestamp=timestamp)


# ---------------------------------------------------------------------------
# Movies


def read_movies(path: str | os.PathLike[str], dataset: str | None = None) -> Movies:
    """Read a movie table (ML-1M ``movies.dat`` or ML-100K ``u.item``).

    ``dataset`` is inferred from the file name as in ``read_ratings``. ML-1M titles
    may contain ":" but not "::". Raise DataError naming the line for a wrong field
    count, a bad or repeated movie id, a genre outside GENRES_ML1M (or a genre flag
    other than 0/1 in ML-100K), a blank line, an empty file or a missing file.
    """
    path = Path(path)
    dataset = _resolve_dataset(path, dataset)
    return _parse_movies(_read_bytes(path), path, dataset)


def _parse_movies(data: bytes, path: Path, dataset: str) -> Movies:
    parse_line = _parse_movie_ml1m if dataset == "ml-1m" else _parse_movie_ml100k
    movie_ids: list[int] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    first_line: dict[int, int] = {}
    for index, line in enumerate(_text_lines(data, path)):
        number = index + 1
        movie_id, title, movie_genres = parse_line(line, path, number)
        if movie_id in first_line:
            problem = (
                f"movie {movie_id} is already defined on line {first_line[movie_id]}"
            )
            raise _line_error(path, number, line, problem)
        first_line[movie_id] = number
        movie_ids.append(movie_id)
        titles.append(title)
        genres.append(movie_genres)
    return Movies(
        movie_id=np.array(movie_ids, dtype=np.int32),
        title=titles,
        genres=genres,
        years=np.array([_title_year(title) for title in titles], dtype=np.int16),
    )


def _title_year(title: str) -> int:
    match = _YEAR_AT_END.search(title)
    return int(match.group(1)) if match else -1


_MOVIE_FIELDS_ML1M = ("MovieID", "Title", "Genres")


def _parse_movie_ml1m(
    line: str, path: Path, number: int
) -> tuple[int, str, tuple[str, ...]]:
    # The title sits between the first and the last "::", so a title that ends
    # in ":" (as in "X:::Drama") still leaves the genres intact.
    head, first_separator, rest = line.partition("::")
    title, last_separator, genre_field = rest.rpartition("::")
    if not first_separator or not last_separator or "::" in title:
        found = line.count("::") + 1
        problem = _field_count_problem("::", _MOVIE_FIELDS_ML1M, found)
        raise _line_error(path, number, line, problem)
    movie_id = _parse_int(head, "MovieID", 1, _INT32_MAX, path, number, line)
    genres = tuple(genre_field.split("|"))
    for genre in genres:
        if genre not in GENRES_ML1M:
            problem = (
                f"unknown genre {_shorten(genre, 40)} "
                f"(expected one of {', '.join(GENRES_ML1M)})"
            )
            raise _line_error(path, number, line, problem)
    return movie_id, title, genres


# u.item: id | title | release date | video release date | IMDb URL | 19 flags
_MOVIE_FIELDS_ML100K = (
    "movie id",
    "movie title",
    "release date",
    "video release date",
    "IMDb URL",
) + GENRES_ML100K


def _parse_movie_ml100k(
    line: str, path: Path, number: int
) -> tuple[int, str, tuple[str, ...]]:
    fields = _split_fields(line, "|", _MOVIE_FIELDS_ML100K, path, number)
    movie_id = _parse_int(fields[0], "movie id", 1, _INT32_MAX, path, number, line)
    flags = fields[5:]
    genres = []
    for genre, flag in zip(GENRES_ML100K, flags):
        if flag not in ("0", "1"):
            problem = f"genre flag {genre!r} is {_shorten(flag, 40)}, expected 0 or 1"
            raise _line_error(path, number, line, problem)
        if flag == "1":
            genres.append(genre)
    return movie_id, fields[1], tuple(genres)


# ---------------------------------------------------------------------------
# Users


def read_users(path: str | os.PathLike[str], dataset: str | None = None) -> Users:
    """Read a user table (ML-1M ``users.dat`` or ML-100K ``u.user``).

    ``dataset`` is inferred from the file name as in ``read_ratings``. Zip codes
    stay strings. Raise DataError naming the line for a wrong field count, a bad or
    repeated user id, a gender other than M or F, an unknown age group or
    occupation, a blank line, an empty file or a missing file.
    """
    path = Path(path)
    dataset = _resolve_dataset(path, dataset)
    return _parse_users(_read_bytes(path), path, dataset)


_UserRow = tuple[int, str, int, int, str]


def _parse_users(data: bytes, path: Path, dataset: str) -> Users:
    parse_line: Callable[[str, Path, int], _UserRow]
    parse_line = _parse_user_ml1m if dataset == "ml-1m" else _parse_user_ml100k
    rows: list[_UserRow] = []
    first_line: dict[int, int] = {}
    for index, line in enumerate(_text_lines(data, path)):
        number = index + 1
        row = parse_line(line, path, number)
        if row[0] in first_line:
            problem = f"user {row[0]} is already defined on line {first_line[row[0]]}"
            raise _line_error(path, number, line, problem)
        first_line[row[0]] = number
        rows.append(row)
    return Users(
        user_id=np.array([row[0] for row in rows], dtype=np.int32),
        gender=[row[1] for row in rows],
        age=np.array([row[2] for row in rows], dtype=np.int16),
        occupation=np.array([row[3] for row in rows], dtype=np.int16),
        zip_code=[row[4] for row in rows],
    )


def _check_gender(gender: str, path: Path, number: int, line: str) -> str:
    if gender not in ("M", "F"):
        problem = f"gender {_shorten(gender, 40)} is neither 'M' nor 'F'"
        raise _line_error(path, number, line, problem)
    return gender


_USER_FIELDS_ML1M = ("UserID", "Gender", "Age", "Occupation", "Zip-code")


def _parse_user_ml1m(line: str, path: Path, number: int) -> _UserRow:
    fields = _split_fields(line, "::", _USER_FIELDS_ML1M, path, number)
    user_id = _parse_int(fields[0], "UserID", 1, _INT32_MAX, path, number, line)
    gender = _check_gender(fields[1], path, number, line)
    age = _parse_int(fields[2], "Age", 0, 2**15 - 1, path, number, line)
    if age not in AGE_GROUPS_ML1M:
        groups = ", ".join(map(str, AGE_GROUPS_ML1M))
        problem = f"Age {age} is not an age group code ({groups})"
        raise _line_error(path, number, line, problem)
    max_code = N_OCCUPATIONS_ML1M - 1
    occupation = _parse_int(fields[3], "Occupation", 0, max_code, path, number, line)
    return user_id, gender, age, occupation, fields[4]


_USER_FIELDS_ML100K = ("user id", "age", "gender", "occupation", "zip code")


def _parse_user_ml100k(line: str, path: Path, number: int) -> _UserRow:
    fields = _split_fields(line, "|", _USER_FIELDS_ML100K, path, number)
    user_id = _parse_int(fields[0], "user id", 1, _INT32_MAX, path, number, line)
    age = _parse_int(fields[1], "age", 0, 2**15 - 1, path, number, line)
    gender = _check_gender(fields[2], path, number, line)
    if fields[3] not in OCCUPATIONS_ML100K:
        problem = f"unknown occupation {_shorten(fields[3], 40)}"
        raise _line_error(path, number, line, problem)
    return user_id, gender, age, OCCUPATIONS_ML100K.index(fields[3]), fields[4]


# ---------------------------------------------------------------------------
# Whole data set


def load_movielens(data_dir: str | os.PathLike[str]) -> MovieLens:
    """Read and cross-check the three files of ML-1M or ML-100K in ``data_dir``.

    The folder is ML-1M when it contains ``ratings.dat`` and ML-100K when it
    contains ``u.data``. Besides the checks of the read_* functions, raise DataError
    naming the ratings line of the first rating whose movie is not in the movie
    table or whose user is not in the user table.
    """
    data_dir = Path(data_dir)
    if (data_dir / "ratings.dat").is_file():
        name, files = "ml-1m", ML1M_FILES
    elif (data_dir / "u.data").is_file():
        name, files = "ml-100k", ML100K_FILES
    else:
        where = "folder" if data_dir.is_dir() else "missing folder"
        raise DataError(
            f"no MovieLens files in {where} {data_dir}: expected ratings.dat (ML-1M) "
            f"or u.data (ML-100K). Fetch MovieLens-1M with "
            f"`{DOWNLOAD_HINT} --dest {data_dir}`"
        )
    paths = [data_dir / file_name for file_name in files]
    contents = [_read_bytes(path) for path in paths]
    ratings = _parse_ratings(contents[0], paths[0], name)
    movies = _parse_movies(contents[1], paths[1], name)
    users = _parse_users(contents[2], paths[2], name)
    _check_known_ids(
        ratings.item, movies.movie_id, "movie", paths[0], contents[0], paths[1]
    )
    _check_known_ids(
        ratings.user, users.user_id, "user", paths[0], contents[0], paths[2]
    )
    sha256 = {
        path.name: hashlib.sha256(content).hexdigest()
        for path, content in zip(paths, contents)
    }
    return MovieLens(
        name=name, ratings=ratings, movies=movies, users=users, sha256=sha256
    )


def _check_known_ids(
    used: np.ndarray,
    known: np.ndarray,
    kind: str,
    ratings_path: Path,
    ratings_data: bytes,
    table_path: Path,
) -> None:
    """Raise DataError at the first rating whose id is not in ``known``."""
    # A table lookup for small id ranges, and a sort of both arrays otherwise.
    small = len(known) > 0 and int(known.max()) - int(known.min()) <= 1 << 24
    missing = np.flatnonzero(~np.isin(used, known, kind="table" if small else None))
    if len(missing) == 0:
        return
    index = int(missing[0])
    problem = (
        f"{kind} {int(used[index])} is not in {table_path.name} "
        f"({len(missing)} of {len(used)} ratings have an unknown {kind})"
    )
    line = _nth_line(ratings_data, index)
    raise DataError(
        f"{ratings_path}, line {index + 1}: {problem}: {_shorten(line)}. The files "
        f"in {ratings_path.parent} are incomplete or come from different data sets. "
        f"{_fix_hint(ratings_path)}"
    )
