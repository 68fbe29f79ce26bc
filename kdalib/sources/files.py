"""Reading files whose names come from contributed text, without leaving the folder they name.

sources.yaml, the manifest and the pages name files: snapshots in the snapshot store, recorded
results and pages in the book's folder. Such a name is a contribution like any other, so
:func:`read_inside` reads it only when it is

* a plain relative path: not empty, no absolute path, no ``..``, no backslash, no control
  character (a NUL included) -- :func:`path_problem` says which rule a name breaks;
* made of real folders and a regular file: no component is a symbolic link (each is opened
  with ``O_NOFOLLOW`` relative to the folder before it, so a link swapped in during the walk
  is refused too), and the file is not a device, a pipe or a folder;
* no larger than the caller's cap (checked before and while reading).

:func:`read_capped` is the same for a path the user gives on the command line (``--sources``,
``--snapshot``): it may be anywhere and may be a link, but it must be a regular file under the cap.
Every refusal is an :class:`UnsafeFile` whose message names the file and the rule.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path, PurePosixPath

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeFile(OSError):
    """A file that is not read; ``missing`` tells a file that does not exist from a refused one."""

    def __init__(self, name: str, problem: str, missing: bool = False):
        self.name = name
        self.problem = problem
        self.missing = missing
        super().__init__(f"{_shown(name)} {problem}")


def _shown(name: str) -> str:
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(name))
    return text if len(text) <= 120 else text[:117] + "..."


def path_problem(name: object) -> str | None:
    """Why ``name`` is not a plain relative path inside its folder, or None when it is."""
    if not isinstance(name, str) or not name.strip():
        return "is empty; give a file name"
    if _CONTROL.search(name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash; separate folders with '/'"
    if PurePosixPath(name).is_absolute() or _DRIVE.match(name):
        return "is an absolute path; give a path relative to its folder"
    if ".." in PurePosixPath(name).parts:
        return "climbs out of its folder with '..'"
    return None


def read_inside(root: str | os.PathLike[str], name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``name`` inside the folder ``root`` (see the module docstring).

    Raises:
        UnsafeFile: the name breaks a rule, a component is a link or not a folder, the file is
            missing, not a regular file, over ``max_bytes``, or cannot be read.
    """
    problem = path_problem(name)
    if problem is not None:
        raise UnsafeFile(name, problem)
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if not parts:
        raise UnsafeFile(name, "names the folder itself, not a file")
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise UnsafeFile(name, f"is not found: the folder {root} does not exist", missing=True) from None
    except OSError as err:
        raise UnsafeFile(name, f"cannot be read: the folder {root} cannot be opened ({err.strerror})") from None
    try:
        for index, part in enumerate(parts[:-1]):
            inner = _open_step(folder, part, "/".join(parts[: index + 1]), name, os.O_DIRECTORY)
            os.close(folder)
            folder = inner
        handle = _open_step(folder, parts[-1], name, name, os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    finally:
        os.close(folder)
    return _read_regular(handle, name, max_bytes)


def _open_step(folder: int, part: str, walked: str, name: str, flags: int) -> int:
    """Open ``part`` relative to the descriptor ``folder`` without following a link."""
    try:
        return os.open(part, os.O_RDONLY | os.O_NOFOLLOW | flags, dir_fd=folder)
    except FileNotFoundError:
        raise UnsafeFile(name, "is not found", missing=True) from None
    except OSError as err:
        if err.errno == errno.ELOOP or _is_link(folder, part):
            raise UnsafeFile(name, f"is refused: {walked} is a symbolic link") from None
        if err.errno == errno.ENOTDIR:
            raise UnsafeFile(name, f"is refused: {walked} is not a folder") from None
        raise UnsafeFile(name, f"cannot be read ({err.strerror or err})") from None


def _is_link(folder: int, part: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_capped(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path`` (a path the user chose; links are followed).

    Raises:
        UnsafeFile: missing, not a regular file, over ``max_bytes``, or unreadable.
    """
    name = str(path)
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UnsafeFile(name, "is not found", missing=True) from None
    except OSError as err:
        raise UnsafeFile(name, f"cannot be read ({err.strerror or err})") from None
    return _read_regular(handle, name, max_bytes)


def _read_regular(handle: int, name: str, max_bytes: int) -> bytes:
    """Read an open file to its end, refusing a non-regular file and more than ``max_bytes``; closes it."""
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(name, "is refused: it is not a regular file (a folder, device or pipe)")
        if info.st_size > max_bytes:
            raise UnsafeFile(name, f"is refused: it has {info.st_size} bytes, over the {max_bytes}-byte cap")
        os.set_blocking(handle, True)
        chunks, size = [], 0
        while chunk := os.read(handle, min(1 << 20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UnsafeFile(name, f"is refused: it grew past the {max_bytes}-byte cap while read")
        return b"".join(chunks)
    except OSError as err:
        if isinstance(err, UnsafeFile):
            raise
        raise UnsafeFile(name, f"cannot be read ({err.strerror or err})") from None
    finally:
        os.close(handle)


def entries_below(root: Path) -> list[str]:
    """Every name below ``root`` that is not a folder (files, links, devices), relative, sorted;
    links to folders are listed, never followed."""
    if not root.is_dir():
        return []
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder)
        links = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in links]
        found.extend((base / n).relative_to(root).as_posix() for n in [*names, *links])
    return sorted(found)
