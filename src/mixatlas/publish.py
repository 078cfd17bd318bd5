"""Atomic publishing of output folders: a reader sees the old complete folder or the new complete one.

A run writes into a staging folder beside its output (`.NAME.partial` in the same parent, so the final
rename never crosses a file system) and `publish(staging, out)` swaps it into place: with Linux's
`renameat2(RENAME_EXCHANGE)` in one step, elsewhere as two renames (between them `out` is briefly absent,
never mixed). Nothing is ever written into `out` itself, so a kill at any point leaves `out` as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mixatlas.errors import MixAtlasError

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def staging_dir(out: Path) -> Path:
    """The staging sibling of `out`: `PARENT/.NAME.partial` (hidden, same file system)."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def target_of(staging: Path) -> Path:
    """The output folder a staging folder publishes to (the inverse of `staging_dir`)."""
    staging = Path(staging)
    name = staging.name
    if not (name.startswith(".") and name.endswith(".partial")):
        raise ValueError(f"{staging}: not a staging folder")
    return staging.with_name(name[1 : -len(".partial")])


def check_replaceable(out: Path, markers: tuple[str, ...], option: str = "--out") -> None:
    """Refuse an `out` that holds something other than an earlier output (publishing replaces it whole):
    it must be absent, empty, or hold one of `markers` (e.g. the output's summary file)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise MixAtlasError(f"{option} {out}: exists and is not a folder; choose another path")
    if any(out.iterdir()) and not any((out / marker).exists() for marker in markers):
        raise MixAtlasError(
            f"{option} {out}: holds other files (the output replaces the whole folder); "
            "choose a new or empty folder"
        )


def fresh_staging(out: Path) -> Path:
    """An empty staging folder for `out` (a leftover of a killed run is removed first)."""
    staging = staging_dir(out)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out: Path) -> None:
    """Put the finished folder `staging` at `out`, replacing what was there, atomically where the OS can.

    `out` must be absent or a folder; the previous folder is deleted after the swap.
    """
    staging, out = Path(staging), Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    _fsync_tree(staging)
    if out.exists() and _exchange(staging, out):
        shutil.rmtree(staging)  # now holds the previous output
    else:
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
        if old.exists():
            shutil.rmtree(old)
    _fsync_dir(out.parent)


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Hold `PARENT/.NAME.lock` while a run writes `out`: a second writer gets one MixAtlasError line.

    The OS drops the lock when the process dies, so a killed run never blocks the next one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with pid_lock(out.with_name(f".{out.name}.lock"),
                  f"{out}: being written by {{holder}}; wait for it or choose another --out"):
        yield


@contextlib.contextmanager
def pid_lock(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path`, which names this process ("pid N") while held; when
    another process holds it, raise MixAtlasError(`busy` with `{holder}` replaced by what the file names)."""
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise MixAtlasError(busy.format(holder=holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def published(out: Path) -> Iterator[Path]:
    """Yield a fresh staging folder for `out` (under the `writing` lock); publish it when the block ends
    normally. On an exception (or a kill) `out` keeps its previous content; a failed block's staging is
    removed."""
    out = Path(out)
    with writing(out):
        staging = fresh_staging(out)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish(staging, out)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(folder: Path) -> None:
    """Flush every file of `folder` to disk so the published folder survives a power cut, not only a kill."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
