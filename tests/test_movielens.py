"""Parsing and validation of the MovieLens-1M and MovieLens-100K files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fastrec.data import movielens
from fastrec.data.movielens import (
    GENRES_ML1M,
    GENRES_ML100K,
    OCCUPATIONS_ML100K,
    file_sha256,
    load_movielens,
    read_movies,
    read_ratings,
    read_users,
)
from fastrec.errors import ConfigError, DataError

WriteLines = Callable[..., Path]


def assert_line_error(error: pytest.ExceptionInfo, path: Path, number: int, text: str):
    message = str(error.value)
    assert str(path) in message
    assert f"line {number}:" in message
    assert text in message


# ---------------------------------------------------------------------------
# ratings.dat


def test_ratings_values_and_dtypes(tiny_ml1m: Path):
    ratings = read_ratings(tiny_ml1m / "ratings.dat")
    assert ratings.user.tolist() == [1, 1, 2, 2, 3, 3]
    assert ratings.item.tolist() == [1, 2, 3, 1, 2, 3]
    assert ratings.rating.tolist() == [5, 3, 4, 1, 2, 5]
    assert ratings.timestamp[0] == 978300760
    assert ratings.user.dtype == np.int32
    assert ratings.item.dtype == np.int32
    assert ratings.rating.dtype == np.int8
    assert ratings.timestamp.dtype == np.int64
    assert len(ratings) == 6


def test_ratings_arrays_writable(tiny_ml1m: Path):
    ratings = read_ratings(tiny_ml1m / "ratings.dat")
    assert ratings.user.flags.writeable
    assert ratings.timestamp.flags.owndata


def test_ratings_without_final_newline(tmp_path: Path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"1::2::3::4\n5::6::1::8")
    ratings = read_ratings(path)
    assert ratings.user.tolist() == [1, 5]
    assert ratings.timestamp.tolist() == [4, 8]


def test_ratings_crlf_line_endings(write_lines: WriteLines):
    path = write_lines("ratings.dat", ["1::2::3::4", "5::6::1::8"], line_ending="\r\n")
    ratings = read_ratings(path)
    assert ratings.item.tolist() == [2, 6]
    assert ratings.timestamp.tolist() == [4, 8]


def test_ratings_large_ids_and_timestamps(write_lines: WriteLines):
    path = write_lines("ratings.dat", ["2147483647::7::1::9223372036854775807"])
    ratings = read_ratings(path)
    assert ratings.user[0] == 2**31 - 1
    assert ratings.timestamp[0] == 2**63 - 1


MALFORMED_RATINGS = [
    # (bad line, problem in the message)
    ("1::10::5", "expected 4 fields"),
    ("1::10::5::978300760::7", "expected 4 fields"),
    ("1:10:5:978300760", "expected 4 fields"),
    ("1:::10::5::978300760", "is not an integer"),
    ("1::x::5::978300760", "MovieID 'x' is not an integer"),
    ("1::10::4.5::978300760", "Rating '4.5' is not an integer"),
    ("1::10::0::978300760", "Rating 0 is outside the range 1 to 5"),
    ("1::10::6::978300760", "Rating 6 is outside the range 1 to 5"),
    ("1::10::300::978300760", "Rating 300 is outside"),
    ("0::10::5::978300760", "UserID 0 is outside"),
    ("1::0::5::978300760", "MovieID 0 is outside"),
    ("-1::10::5::978300760", "UserID '-1' is not an integer"),
    ("+1::10::5::978300760", "UserID '+1' is not an integer"),
    (" 1::10::5::978300760", "UserID ' 1' is not an integer"),
    ("1::10::5::-978300760", "Timestamp '-978300760' is not an integer"),
    ("1::10::5::", "Timestamp '' is not an integer"),
    ("::10::5::978300760", "UserID '' is not an integer"),
    ("2147483648::10::5::978300760", "UserID 2147483648 is outside"),
    ("1::10::5::9223372036854775808", "Timestamp 9223372036854775808 is outside"),
    ("1::10::5::97830\r0760", "is not an integer"),
    ("1::1é::5::978300760", "MovieID '1é' is not an integer"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED_RATINGS)
def test_ratings_malformed_line(write_lines: WriteLines, bad: str, problem: str):
    lines = ["1::10::5::978300760", "2::20::3::978300761", bad, "3::30::1::5"]
    path = write_lines("ratings.dat", lines)
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert_line_error(error, path, 3, repr(bad))
    assert problem in str(error.value)


def test_ratings_blank_line_inside(write_lines: WriteLines):
    path = write_lines("ratings.dat", ["1::10::5::97", "", "2::20::3::98"])
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert_line_error(error, path, 2, "blank line")


def test_ratings_blank_line_at_end(write_lines: WriteLines):
    # One final newline is allowed, a second one is a blank line.
    path = write_lines("ratings.dat", ["1::10::5::97", ""])
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert_line_error(error, path, 2, "blank line")


def test_ratings_bad_line_deep_in_file(write_lines: WriteLines):
    lines = [
        f"{1 + i // 50}::{1 + i % 97}::{1 + i % 5}::{10**9 + i}" for i in range(5000)
    ]
    lines[4321] = "7::8::9::10"
    path = write_lines("ratings.dat", lines)
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert_line_error(error, path, 4322, "'7::8::9::10'")


def test_ratings_long_line_truncated(write_lines: WriteLines):
    bad = "1::2::3::" + "9" * 5000 + "x"
    path = write_lines("ratings.dat", [bad])
    with pytest.raises(DataError) as error:
        read_ratings(path)
    message = str(error.value)
    assert "..." in message
    assert len(message) < 1000


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\n", b"  \n"])
def test_ratings_empty_file(tmp_path: Path, content: bytes):
    path = tmp_path / "ratings.dat"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert f"{path} is empty" in str(error.value)


@pytest.mark.parametrize("name", ["ratings.dat", "movies.dat", "users.dat"])
def test_byte_order_mark_is_named(tiny_ml1m: Path, name: str):
    path = tiny_ml1m / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.raises(DataError) as error:
        load_movielens(tiny_ml1m)
    message = str(error.value)
    assert str(path) in message
    assert "byte-order mark" in message


def test_ratings_missing_file(tmp_path: Path):
    path = tmp_path / "ml-1m" / "ratings.dat"
    with pytest.raises(DataError) as error:
        read_ratings(path)
    message = str(error.value)
    assert str(path) in message
    assert "python -m fastrec.data.download" in message


def test_ratings_folder_instead_of_file(tmp_path: Path):
    with pytest.raises(DataError) as error:
        read_ratings(tmp_path)
    assert "found a folder" in str(error.value)


def test_ratings_unknown_dataset(tiny_ml1m: Path):
    with pytest.raises(ConfigError):
        read_ratings(tiny_ml1m / "ratings.dat", dataset="ml-25m")


def test_fast_path_accepts_valid_file(synthetic_ml1m: Path):
    data = (synthetic_ml1m / "ratings.dat").read_bytes()
    parsed = movielens._parse_ratings_vectorized(data, movielens._ML1M_RATINGS)
    assert parsed is not None


def test_fast_path_matches_scan(synthetic_ml1m: Path):
    path = synthetic_ml1m / "ratings.dat"
    fast = read_ratings(path)
    scanned = movielens._scan_ratings(path.read_bytes(), path, movielens._ML1M_RATINGS)
    for name in ("user", "item", "rating", "timestamp"):
        assert np.array_equal(getattr(fast, name), getattr(scanned, name)), name
        assert getattr(fast, name).dtype == getattr(scanned, name).dtype, name


# ---------------------------------------------------------------------------
# movies.dat


def test_movies_latin1_title(tiny_ml1m: Path):
    movies = read_movies(tiny_ml1m / "movies.dat")
    assert movies.title[1] == "Misérables, Les (1995)"


def test_movies_byte_e9_is_e_acute(tmp_path: Path):
    path = tmp_path / "movies.dat"
    path.write_bytes(b"7::Caf\xe9 au Lait (1993)::Comedy\n")
    assert read_movies(path).title == ["Café au Lait (1993)"]


def test_movies_byte_85_stays_in_title(tmp_path: Path):
    # 0x85 is U+0085 (NEL) in Latin-1, which str.splitlines would treat as a break.
    path = tmp_path / "movies.dat"
    path.write_bytes(b"7::A\x85B (1993)::Comedy\n8::C (1994)::Drama\n")
    movies = read_movies(path)
    assert movies.title == ["A\x85B (1993)", "C (1994)"]


def test_movies_colon_in_title(tiny_ml1m: Path):
    movies = read_movies(tiny_ml1m / "movies.dat")
    assert movies.title[2] == "Star Wars: Episode IV - A New Hope (1977)"


def test_movies_title_ending_in_colon(write_lines: WriteLines):
    path = write_lines("movies.dat", ["9::Why Not?:::Drama|War"])
    movies = read_movies(path)
    assert movies.title == ["Why Not?:"]
    assert movies.genres == [("Drama", "War")]


def test_movies_genres_split(tiny_ml1m: Path):
    movies = read_movies(tiny_ml1m / "movies.dat")
    assert movies.genres[0] == ("Animation", "Children's", "Comedy")
    assert movies.genres[3] == ("Documentary",)


def test_movies_ids_and_years(tiny_ml1m: Path):
    movies = read_movies(tiny_ml1m / "movies.dat")
    assert movies.movie_id.tolist() == [1, 2, 3, 4]
    assert movies.movie_id.dtype == np.int32
    assert movies.years.tolist() == [1995, 1995, 1977, -1]
    assert len(movies) == 4


MALFORMED_MOVIES = [
    ("5::No Genres (1999)", "expected 3 fields"),
    ("5::A::B::Drama", "expected 3 fields"),
    ("x::Title (1999)::Drama", "MovieID 'x' is not an integer"),
    ("5::Title (1999)::Drama|Cartoon", "unknown genre 'Cartoon'"),
    ("5::Title (1999)::Drama||Comedy", "unknown genre ''"),
    ("5::Title (1999)::", "unknown genre ''"),
    ("1::Toy Story Again (1999)::Comedy", "movie 1 is already defined on line 1"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED_MOVIES)
def test_movies_malformed_line(write_lines: WriteLines, bad: str, problem: str):
    good = ["1::Toy Story (1995)::Comedy", "2::Heat (1995)::Action|Crime"]
    path = write_lines("movies.dat", good + [bad])
    with pytest.raises(DataError) as error:
        read_movies(path)
    assert_line_error(error, path, 3, repr(bad))
    assert problem in str(error.value)


def test_genres_ml1m_fixed_order():
    assert len(GENRES_ML1M) == 18
    assert len(set(GENRES_ML1M)) == 18
    assert GENRES_ML1M[0] == "Action"
    assert GENRES_ML1M[-1] == "Western"
    assert GENRES_ML100K == ("unknown",) + GENRES_ML1M


# ---------------------------------------------------------------------------
# users.dat


def test_users_fields(tiny_ml1m: Path):
    users = read_users(tiny_ml1m / "users.dat")
    assert users.user_id.tolist() == [1, 2, 3]
    assert users.gender == ["F", "M", "M"]
    assert users.age.tolist() == [1, 56, 25]
    assert users.occupation.tolist() == [10, 16, 15]
    assert users.age.dtype == np.int16
    assert users.occupation.dtype == np.int16


def test_users_zip_codes_stay_strings(tiny_ml1m: Path):
    users = read_users(tiny_ml1m / "users.dat")
    assert users.zip_code == ["48067", "55117-1234", "01234"]


MALFORMED_USERS = [
    ("4::M::25::15", "expected 5 fields"),
    ("4::X::25::15::12345", "gender 'X' is neither 'M' nor 'F'"),
    ("4::M::30::15::12345", "Age 30 is not an age group code"),
    ("4::M::25::21::12345", "Occupation 21 is outside the range 0 to 20"),
    ("4::M::twenty::15::12345", "Age 'twenty' is not an integer"),
    ("2::M::25::15::12345", "user 2 is already defined on line 2"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED_USERS)
def test_users_malformed_line(write_lines: WriteLines, bad: str, problem: str):
    good = ["1::F::1::10::48067", "2::M::56::16::70072"]
    path = write_lines("users.dat", good + [bad])
    with pytest.raises(DataError) as error:
        read_users(path)
    assert_line_error(error, path, 3, repr(bad))
    assert problem in str(error.value)


# ---------------------------------------------------------------------------
# Whole ML-1M folder


def test_load_ml1m_counts(tiny_ml1m: Path):
    data = load_movielens(tiny_ml1m)
    assert data.name == "ml-1m"
    assert len(data.ratings) == 6
    assert len(data.movies) == 4
    assert len(data.users) == 3


def test_load_ml1m_sha256(tiny_ml1m: Path):
    data = load_movielens(tiny_ml1m)
    assert set(data.sha256) == {"ratings.dat", "movies.dat", "users.dat"}
    for name, digest in data.sha256.items():
        assert digest == file_sha256(tiny_ml1m / name), name


def test_load_rating_of_unknown_movie(tiny_ml1m: Path, write_lines: WriteLines):
    ratings = (tiny_ml1m / "ratings.dat").read_text().splitlines()
    path = write_lines("ml-1m/ratings.dat", ratings + ["3::99::4::5"])
    with pytest.raises(DataError) as error:
        load_movielens(tiny_ml1m)
    assert_line_error(error, path, 7, "'3::99::4::5'")
    assert "movie 99 is not in movies.dat" in str(error.value)


def test_load_rating_by_unknown_user(tiny_ml1m: Path, write_lines: WriteLines):
    ratings = (tiny_ml1m / "ratings.dat").read_text().splitlines()
    ratings.insert(2, "42::1::4::5")
    path = write_lines("ml-1m/ratings.dat", ratings)
    with pytest.raises(DataError) as error:
        load_movielens(tiny_ml1m)
    assert_line_error(error, path, 3, "'42::1::4::5'")
    assert "user 42 is not in users.dat" in str(error.value)


def test_load_missing_movies_file(tiny_ml1m: Path):
    (tiny_ml1m / "movies.dat").unlink()
    with pytest.raises(DataError) as error:
        load_movielens(tiny_ml1m)
    message = str(error.value)
    assert str(tiny_ml1m / "movies.dat") in message
    assert "python -m fastrec.data.download" in message


@pytest.mark.parametrize("make_folder", [True, False])
def test_load_folder_without_files(tmp_path: Path, make_folder: bool):
    folder = tmp_path / "nothing"
    if make_folder:
        folder.mkdir()
    with pytest.raises(DataError) as error:
        load_movielens(folder)
    message = str(error.value)
    assert str(folder) in message
    assert "ratings.dat" in message
    assert "python -m fastrec.data.download" in message


def test_load_reports_bad_movies_line(tiny_ml1m: Path, write_lines: WriteLines):
    movies = (tiny_ml1m / "movies.dat").read_text("iso-8859-1").splitlines()
    path = write_lines("ml-1m/movies.dat", movies + ["5::Bad"])
    with pytest.raises(DataError) as error:
        load_movielens(tiny_ml1m)
    assert_line_error(error, path, 5, "'5::Bad'")


def test_file_sha256_matches_hashlib(tmp_path: Path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_file_sha256_missing_file(tmp_path: Path):
    with pytest.raises(DataError) as error:
        file_sha256(tmp_path / "absent")
    assert "absent" in str(error.value)


# ---------------------------------------------------------------------------
# ML-100K

ML100K_FLAGS_DRAMA = "|".join("1" if g == "Drama" else "0" for g in GENRES_ML100K)
ML100K_FLAGS_NONE = "|".join("1" if g == "unknown" else "0" for g in GENRES_ML100K)
ML100K_ITEMS = (
    f"1|Toy Story (1995)|01-Jan-1995||http://example.org/1|{ML100K_FLAGS_DRAMA}",
    f"2|Misérables, Les (1995)|01-Jan-1995||http://example.org/2|{ML100K_FLAGS_DRAMA}",
    f"3|unknown||||{ML100K_FLAGS_NONE}",
)
ML100K_USERS = ("1|24|M|technician|85711", "2|53|F|other|01234")
ML100K_DATA = ("1\t1\t3\t881250949", "2\t3\t1\t891717742", "1\t2\t5\t878887116")


@pytest.fixture()
def tiny_ml100k(write_lines: WriteLines) -> Path:
    write_lines("ml-100k/u.item", ML100K_ITEMS)
    write_lines("ml-100k/u.user", ML100K_USERS)
    return write_lines("ml-100k/u.data", ML100K_DATA).parent


def test_ml100k_load(tiny_ml100k: Path):
    data = load_movielens(tiny_ml100k)
    assert data.name == "ml-100k"
    assert data.ratings.user.tolist() == [1, 2, 1]
    assert data.ratings.item.tolist() == [1, 3, 2]
    assert data.ratings.rating.tolist() == [3, 1, 5]
    assert data.ratings.timestamp.tolist() == [881250949, 891717742, 878887116]
    assert set(data.sha256) == {"u.data", "u.item", "u.user"}


def test_ml100k_movies(tiny_ml100k: Path):
    movies = read_movies(tiny_ml100k / "u.item")
    assert movies.movie_id.tolist() == [1, 2, 3]
    assert movies.title[1] == "Misérables, Les (1995)"
    assert movies.genres == [("Drama",), ("Drama",), ("unknown",)]
    assert movies.years.tolist() == [1995, 1995, -1]


def test_ml100k_users(tiny_ml100k: Path):
    users = read_users(tiny_ml100k / "u.user")
    assert users.age.tolist() == [24, 53]
    assert users.gender == ["M", "F"]
    technician = OCCUPATIONS_ML100K.index("technician")
    assert users.occupation.tolist() == [technician, OCCUPATIONS_ML100K.index("other")]
    assert users.zip_code == ["85711", "01234"]


def test_ml100k_crlf_files(write_lines: WriteLines):
    write_lines("ml-100k/u.item", ML100K_ITEMS, line_ending="\r\n")
    write_lines("ml-100k/u.user", ML100K_USERS, line_ending="\r\n")
    path = write_lines("ml-100k/u.data", ML100K_DATA, line_ending="\r\n")
    data = load_movielens(path.parent)
    assert data.users.zip_code == ["85711", "01234"]
    assert data.ratings.timestamp[-1] == 878887116


def test_ml100k_malformed_rating(write_lines: WriteLines):
    path = write_lines("u.data", ["1\t1\t3\t881250949", "1::2::5::878887116"])
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert_line_error(error, path, 2, "'1::2::5::878887116'")
    assert "expected 4 fields" in str(error.value)


def test_ml100k_bad_genre_flag(write_lines: WriteLines):
    bad = ML100K_ITEMS[0].replace("|1|", "|2|")
    path = write_lines("u.item", [bad])
    with pytest.raises(DataError) as error:
        read_movies(path)
    assert_line_error(error, path, 1, "genre flag 'Drama' is '2'")


def test_ml100k_unknown_occupation(write_lines: WriteLines):
    path = write_lines("u.user", ["1|24|M|astronaut|85711"])
    with pytest.raises(DataError) as error:
        read_users(path)
    assert_line_error(error, path, 1, "unknown occupation 'astronaut'")
