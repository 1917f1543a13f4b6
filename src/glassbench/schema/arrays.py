"""Per-atom arrays as one compressed binary value per frame.

Format: zlib-compressed ``.npy`` bytes (dtype, shape and order travel with the data), so a
frame's positions are one column value rather than one row per atom.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, cast

import numpy as np
import numpy.typing as npt


def pack_array(array: npt.ArrayLike, *, level: int = 1) -> bytes:
    """Compress an array to bytes; level 1 because frames are written during MD (speed > size)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buf.getvalue(), level)


def unpack_array(blob: bytes) -> npt.NDArray[Any]:
    """Inverse of :func:`pack_array`; never unpickles."""
    # np.load is typed Any (it may return an NpzFile); a ``.npy`` stream is one array.
    return cast(npt.NDArray[Any], np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False))
