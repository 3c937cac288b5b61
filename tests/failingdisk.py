"""A real disk that fails on demand, for the I/O-error tests (issue 12, point 4).

:func:`failing_disk` (a pytest fixture) mounts an ext4 file system on a loop device
whose image file is a sparse file on a small tmpfs.  :meth:`FailingDisk.fail` fills
that tmpfs: from then on every block the loop device has not written before cannot be
stored, so the kernel fails the writes to the ext4 file system with **EIO** (an fsync
reports it), ext4 aborts its journal and remounts itself read-only, and later writes
fail with **EROFS** — what a dying disk does, with no fault injected in pylog.
(Device-mapper's dm-error would do the same, but needs the dm module, which
containers often lack; a loop device is all this needs.)

:meth:`FailingDisk.repair` is the operator's repair: unmount, give the space back,
``e2fsck -fy``, mount again.  Teardown always unmounts (lazily if something still
holds it), detaches the loop device and removes the tmpfs, also when the test failed.

Needs root, a loop device, mkfs.ext4 and e2fsck (e2fsprogs).  Without them the test
FAILS saying what to install: these tests are never skipped.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

__all__ = ["FailingDisk", "failing_disk", "mount_failing_disk"]

#: The ext4 file system's size, and the tmpfs under its (sparse) image: the image
#: can fill it only once the test writes far more than it does.
IMAGE_BYTES = 64 << 20
BACKING_SIZE = "48m"


def _tool(name: str) -> Optional[str]:
    return shutil.which(name) or next((p for p in (f"/sbin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)),
                                      None)


def _run(cmd: List[str], ok=(0,)) -> Optional[str]:
    """None if the command worked, else what went wrong."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]}: {exc}"
    if r.returncode not in ok:
        return f"{' '.join(cmd)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}"
    return None


class FailingDisk:
    """A mounted ext4 file system (``path``) that :meth:`fail` makes fail."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.backing = base / "disk-backing"
        self.image = self.backing / "disk.img"
        self.path = base / "disk"
        self.filler = self.backing / "filler"
        self._mounted = self._backing_mounted = False

    # ------------------------------------------------------------------ set up
    def mount(self) -> None:
        mkfs, fsck = _tool("mkfs.ext4"), _tool("e2fsck")
        if mkfs is None or fsck is None:
            pytest.fail("I/O-error tests need mkfs.ext4 and e2fsck: apt-get install e2fsprogs", pytrace=False)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        err = _run(["mount", "-t", "tmpfs", "-o", f"size={BACKING_SIZE}", "tmpfs", str(self.backing)])
        if err is not None:
            pytest.fail(f"I/O-error tests need root to mount a tmpfs: {err}", pytrace=False)
        self._backing_mounted = True
        with open(self.image, "wb") as f:
            f.truncate(IMAGE_BYTES)
        err = _run([mkfs, "-q", "-F", "-m", "0", str(self.image)])
        if err is None:
            err = self._mount_image()
        if err is not None:
            self.teardown()
            pytest.fail(f"I/O-error tests need root and a loop device (ext4 on a loop device): {err}",
                        pytrace=False)

    def _mount_image(self) -> Optional[str]:
        # errors=remount-ro: after an I/O error ext4 turns read-only (EROFS), as a
        # production mount does.
        err = _run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path)])
        self._mounted = err is None
        return err

    # ------------------------------------------------------------------ failing
    def fail(self) -> None:
        """Make the disk fail: writes of new blocks get EIO from now on."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            chunk = b"\0" * (1 << 20)
            for size in (1 << 20, 4096, 1):
                while True:
                    try:
                        if os.write(fd, chunk[:size]) < size:
                            break
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def repair(self) -> None:
        """The operator's repair: unmount, free the space, e2fsck -fy, mount again."""
        self._umount()
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass
        fsck = _tool("e2fsck")
        assert fsck is not None
        err = _run([fsck, "-f", "-y", str(self.image)], ok=(0, 1, 2))
        if err is None:
            err = self._mount_image()
        if err is not None:
            pytest.fail(f"repairing the failed disk: {err}", pytrace=False)

    # ------------------------------------------------------------------ tear down
    def _umount(self) -> None:
        if self._mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self._mounted = False

    def teardown(self) -> None:
        self._umount()
        if self._backing_mounted:
            if subprocess.run(["umount", str(self.backing)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.backing)], capture_output=True)
            self._backing_mounted = False
        shutil.rmtree(self.backing, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)


def mount_failing_disk(base: Path) -> FailingDisk:
    disk = FailingDisk(base)
    disk.mount()
    return disk


@pytest.fixture
def failing_disk(tmp_path):
    """A freshly mounted ext4 file system that ``.fail()`` makes fail with EIO/EROFS."""
    disk = mount_failing_disk(tmp_path)
    try:
        yield disk
    finally:
        disk.teardown()
