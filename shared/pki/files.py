"""Writing key material to disk without clobbering, half-writing or leaking it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import PKIError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) as 0700 if missing; an existing directory is left as is.

    Existing directories keep their mode because the operator may have chosen it (a
    shared secrets mount, say); only what we create ourselves is locked down.
    """
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise PKIError(f"cannot create directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise PKIError(f"{path} exists and is not a directory; choose another path")


def refuse_existing(paths: list[Path]) -> None:
    """Fail before writing anything if any target exists, so a refusal leaves no partial set."""
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        raise PKIError(
            f"refusing to overwrite existing file(s): {names}; "
            "move them away or pass --force (force=True) to replace them"
        )


def write_file(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` with `mode` from the first byte on.

    Without `overwrite` the file is created with O_EXCL, so a file that appeared since
    the caller checked is never replaced. With `overwrite` the data goes to a temporary
    file in the same directory that is then renamed over the target, so readers (a
    server reloading its certificate) see either the old or the new file, never half.
    """
    try:
        if overwrite:
            _replace(path, data, mode)
        else:
            _create(path, data, mode)
    except FileExistsError as exc:
        raise PKIError(
            f"refusing to overwrite existing file {path}; move it away or use --force"
        ) from exc
    except OSError as exc:
        raise PKIError(f"cannot write {path}: {exc.strerror}") from exc


def _create(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the CA directory.

    Revocation and CRL numbering are read-modify-write on files in the CA directory;
    two `vallum ca` invocations at once must not lose a revocation or reuse a CRL number.
    """
    lock_path = directory / "ca.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    except OSError as exc:
        raise PKIError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
