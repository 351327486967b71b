"""Writing a file so that a crash never leaves half of it: a temporary file beside it, then a rename."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_write(path, mode: str = "wb", *, suffix: str = ".tmp", fsync: bool = False):
    """Open a temporary file in ``path``'s folder for writing; rename it over ``path`` when the block ends.

    An exception inside the block (or while renaming) removes the temporary file and
    leaves ``path`` as it was. The rename is atomic because both lie on one file system.
    ``fsync`` forces the bytes to disk before the rename, for files a run cannot lose.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; as readable as a file open() writes
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
