"""Shared pytest fixtures: small MovieLens folders that the tests write themselves.

Without a CUDA device the Triton kernels of fastrec.kernels can only run in the
Triton interpreter. Triton reads TRITON_INTERPRET when ``triton.jit`` decorates a
kernel, which happens when fastrec.kernels.triton_topk is first imported, so the
variable is set here, before pytest imports any test module. An explicit
TRITON_INTERPRET in the environment is left unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastrec.data.synthetic import write_synthetic_movielens

# A hand-made ML-1M data set: 3 users, 4 movies (movie 4 is never rated) and
# 6 ratings. Titles contain ":" and the Latin-1 letter "é" (byte 0xE9).
TINY_MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Misérables, Les (1995)::Drama|Musical",
    "3::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi",
    "4::Untitled Project::Documentary",
)
TINY_USERS = (
    "1::F::1::10::48067",
    "2::M::56::16::55117-1234",
    "3::M::25::15::01234",
)
TINY_RATINGS = (
    "1::1::5::978300760",
    "1::2::3::978300760",
    "2::3::4::978302109",
    "2::1::1::978301968",
    "3::2::2::978300275",
    "3::3::5::978824291",
)

WriteLines = Callable[..., Path]


@pytest.fixture()
def write_lines(tmp_path: Path) -> WriteLines:
    """Return a function that writes text lines to a file under ``tmp_path``.

    Call it as ``write_lines(name, lines, line_ending="\\n")``. Each line gets the
    line ending, the text is encoded as Latin-1, and the path is returned.
    """

    def write(name: str, lines: Sequence[str], line_ending: str = "\n") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(line + line_ending for line in lines)
        path.write_bytes(text.encode("iso-8859-1"))
        return path

    return write


@pytest.fixture()
def tiny_ml1m(write_lines: WriteLines) -> Path:
    """Return a folder with the hand-made ML-1M files above."""
    write_lines("ml-1m/movies.dat", TINY_MOVIES)
    write_lines("ml-1m/users.dat", TINY_USERS)
    return write_lines("ml-1m/ratings.dat", TINY_RATINGS).parent


@pytest.fixture(scope="session")
def synthetic_ml1m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a synthetic ML-1M folder (200 users, 300 movies, 12,000 ratings).

    The folder is shared by the whole session, so tests must not change it.
    """
    return write_synthetic_movielens(tmp_path_factory.mktemp("synthetic") / "ml-1m")
