"""A small real file system for full-disk tests (issue 12).

:func:`small_fs` (a pytest fixture) mounts a 40 MB ext4 image on a loop device, or,
where loop devices are missing, a 24 MB tmpfs (``mount -t tmpfs -o size=24m``).  Both
need root (CI runs as root).  If neither can be mounted the test FAILS, saying what is
needed: these tests are never skipped.  Teardown always unmounts (lazily if something
still holds the mount) and deletes the image, also when the test failed.

:meth:`SmallFs.fill` fills the file system with a filler file until the disk is full
(ENOSPC), optionally leaving some bytes free; :meth:`SmallFs.free` deletes the filler
("space returns").  tests/conftest.py loads this module as a plugin, so every test
can ask for ``small_fs``.  ``PYLOG_TEST_SMALLFS=tmpfs`` runs the tests on tmpfs even where
ext4 on a loop device works.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

__all__ = ["SmallFs", "mount_small_fs", "small_fs"]

EXT4_IMAGE_BYTES = 40 << 20
TMPFS_SIZE = "24m"
_CHUNKS = (1 << 20, 64 << 10, 4096, 512, 1)


class SmallFs:
    """A mounted small file system: ``path`` is its root, ``kind`` "ext4" or "tmpfs"."""

    def __init__(self, path: Path, kind: str, image: Optional[Path]) -> None:
        self.path = path
        self.kind = kind
        self.image = image
        self._fillers: List[Path] = []

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int = 0) -> int:
        """Write a filler file until the disk refuses (ENOSPC), then give back
        ``leave_bytes`` by shortening it.  Returns the filler's size."""
        filler = self.path / f".filler-{len(self._fillers)}"
        self._fillers.append(filler)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        size = 0
        try:
            for chunk in _CHUNKS:
                data = b"\xa5" * chunk
                while True:
                    try:
                        n = os.write(fd, data)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    size += n
                    if n < chunk:
                        break
            try:
                os.fsync(fd)
            except OSError:
                pass
            if leave_bytes:
                size = max(0, size - leave_bytes)
                os.ftruncate(fd, size)
                os.fsync(fd)
        finally:
            os.close(fd)
        return size

    def free(self) -> None:
        """Delete every filler: the space returns."""
        for f in self._fillers:
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        self._fillers = []
        os.sync()

    def unmount(self) -> None:
        self.free()
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)
        if self.image is not None:
            try:
                self.image.unlink()
            except FileNotFoundError:
                pass


def _run(cmd: List[str]) -> Optional[str]:
    """None if the command worked, else what went wrong."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]}: {exc}"
    if r.returncode != 0:
        return f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}"
    return None


def mount_small_fs(base: Path) -> SmallFs:
    """Mount ext4 on a loop device under ``base``, else tmpfs; pytest.fail if neither."""
    mnt = base / "smallfs"
    mnt.mkdir(parents=True, exist_ok=True)
    problems = []
    image = base / "smallfs.img"
    mkfs = shutil.which("mkfs.ext4") or next(
        (p for p in ("/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4") if os.path.exists(p)), None)
    if os.environ.get("PYLOG_TEST_SMALLFS") == "tmpfs":
        problems.append("PYLOG_TEST_SMALLFS=tmpfs")
    elif mkfs is None:
        problems.append("mkfs.ext4 not found (install e2fsprogs)")
    else:
        with open(image, "wb") as f:
            f.truncate(EXT4_IMAGE_BYTES)
        err = _run([mkfs, "-q", "-F", "-m", "0", str(image)]) or _run(
            ["mount", "-o", "loop", str(image), str(mnt)])
        if err is None:
            return SmallFs(mnt, "ext4", image)
        problems.append(err)
        image.unlink()
    err = _run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)])
    if err is None:
        return SmallFs(mnt, "tmpfs", None)
    problems.append(err)
    shutil.rmtree(mnt, ignore_errors=True)
    pytest.fail("full-disk tests need a small file system: root with a loop device and mkfs.ext4 "
                "(e2fsprogs), or root to mount a tmpfs; none worked: " + "; ".join(problems),
                pytrace=False)


@pytest.fixture
def small_fs(tmp_path):
    """A freshly mounted small file system (ext4 on a loop device, or tmpfs)."""
    fs = mount_small_fs(tmp_path)
    try:
        yield fs
    finally:
        fs.unmount()
