"""Content hashes of model and structure files (files or directories), streamed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """sha256 of a model file, streamed (model files can be hundreds of MB).

    For a plain file this is the ordinary sha256 of its bytes. A directory (a TensorFlow
    saved model, as GRACE uses) is hashed as the sequence of its regular files in sorted
    relative-path order, each contributing its POSIX relative path, a NUL byte, its size and
    its bytes, so renaming, adding or changing any file changes the digest.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        files = sorted(
            (f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix()
        )
        for f in files:
            h.update(f.relative_to(p).as_posix().encode("utf-8") + b"\0")
            h.update(str(f.stat().st_size).encode("ascii") + b"\0")
            _update_from_file(h, f, chunk)
        return h.hexdigest()
    _update_from_file(h, p, chunk)
    return h.hexdigest()


def _update_from_file(h: Any, path: Path, chunk: int) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
