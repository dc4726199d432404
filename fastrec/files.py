"""Temporary files for outputs that are written first and then renamed into place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# NOTE: read once at import, because os.umask can only be read by setting it,
# which would race with other threads that create files. A umask set later in
# the process is not followed.
UMASK = _read_umask()


def temporary_sibling(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """Create a temporary file next to ``path`` and return its descriptor and name.

    tempfile.mkstemp creates the file with mode 0600. This one gets the mode a
    plain ``open()`` would give (0666 less the umask), so the renamed output is as
    readable as any other file the user writes.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
    except OSError:
        pass  # Filesystems without Unix modes (vfat, some network mounts) refuse it.
    return fd, name
