"""What a vote looks like on the wire: named ``uint8`` arrays, checked on receipt.

A vote over ``count`` coordinates travels as

- ``signs``: the packed sign plane (:func:`fl_election.voting.pack_signs`), always;
- ``abstain``: the packed abstain plane, only when the vote has a zero; or instead
- ``abstain-zlib``: the same plane zlib-compressed, when that is at least 1/8 smaller.

Why the compressed form: on real models many abstentions are structural, not ties (a weight
whose gradient is exactly zero on every sample, e.g. behind an always-blank pixel, abstains in
every vote), so the abstain plane of a worker with an odd number of partitions is mostly a
short repeated pattern. zlib shrinks it to a few percent (measured on digits: 3,266 -> ~175
bytes), bringing such a vote back to about 1 bit per coordinate. Ties of even loads are
random and stay uncompressed.

:func:`decode_vote` accepts only these names, shapes and dtypes, and bounds decompression
to the plane's size, so a malformed or hostile payload raises ``ValueError`` instead of
reaching the voting kernels or exhausting memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_election.voting import pack_signs

UInt8Array = npt.NDArray[np.uint8]

SIGNS = "signs"
ABSTAIN = "abstain"
ABSTAIN_ZLIB = "abstain-zlib"
VOTE_KEYS = (SIGNS, ABSTAIN, ABSTAIN_ZLIB)

#: A compressed abstain plane is sent only when it saves at least this fraction.
MIN_SAVING = 1 / 8
#: Bytes beyond the plane's size a received compressed plane may have (zlib's header and
#: checksum on tiny planes); anything longer is refused before it is inflated.
ZLIB_SLACK = 64


def encode_vote(vote: Any) -> dict[str, UInt8Array]:
    """Return the arrays that carry a vote in {-1, 0, +1} (numpy or torch, 1-D).

    Parameters
    ----------
    vote : numpy.ndarray or torch.Tensor
        The worker's (local majority) vote.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``signs`` and, where the vote has zeros, ``abstain`` or ``abstain-zlib``.
    """
    signs, abstain = pack_signs(vote)
    arrays = {SIGNS: signs}
    if abstain is not None:
        compressed = zlib.compress(abstain.tobytes(), 6)
        if len(compressed) <= (1 - MIN_SAVING) * abstain.nbytes:
            arrays[ABSTAIN_ZLIB] = np.frombuffer(compressed, dtype=np.uint8).copy()
        else:
            arrays[ABSTAIN] = abstain
    return arrays


def _plane(arrays: Mapping[str, np.ndarray], key: str, num_bytes: int) -> UInt8Array:
    plane = np.asarray(arrays[key])
    if plane.dtype != np.uint8 or plane.shape != (num_bytes,):
        raise ValueError(
            f"{key!r} must be uint8 of shape ({num_bytes},), got {plane.dtype} of shape "
            f"{plane.shape}"
        )
    return plane


def decode_vote(
    arrays: Mapping[str, np.ndarray], count: int
) -> tuple[UInt8Array, UInt8Array | None]:
    """Check the arrays of a received vote and return its sign and abstain planes.

    Parameters
    ----------
    arrays : Mapping[str, numpy.ndarray]
        The vote's arrays by name (see the module docstring).
    count : int
        Number of coordinates ``d`` the vote must cover.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray | None]
        The sign plane and the (decompressed) abstain plane, or ``None``.

    Raises
    ------
    ValueError
        On a missing sign plane, an unknown array, both abstain forms, a wrong dtype or
        shape, or a compressed plane that is longer than the plane, is not valid zlib of
        exactly the plane's size, or has data after its end.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    unknown = sorted(set(arrays) - set(VOTE_KEYS))
    if unknown:
        raise ValueError(f"unexpected arrays in the vote: {unknown}")
    if SIGNS not in arrays:
        raise ValueError(f"the vote has no {SIGNS!r} plane")
    if ABSTAIN in arrays and ABSTAIN_ZLIB in arrays:
        raise ValueError(f"the vote holds both {ABSTAIN!r} and {ABSTAIN_ZLIB!r}")
    num_bytes = (count + 7) // 8
    signs = _plane(arrays, SIGNS, num_bytes)
    if ABSTAIN in arrays:
        return signs, _plane(arrays, ABSTAIN, num_bytes)
    if ABSTAIN_ZLIB not in arrays:
        return signs, None
    data = np.asarray(arrays[ABSTAIN_ZLIB])
    if data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError(f"{ABSTAIN_ZLIB!r} must be a 1-D uint8 array")
    if data.size > num_bytes + ZLIB_SLACK:
        # A sender compresses only when that saves at least MIN_SAVING of the plane.
        raise ValueError(f"{ABSTAIN_ZLIB!r} is longer than the plane it compresses")
    inflater = zlib.decompressobj()
    try:
        # Bounded: a hostile payload cannot inflate past one byte more than the plane.
        raw = inflater.decompress(data.tobytes(), num_bytes + 1)
    except zlib.error as err:
        raise ValueError(f"{ABSTAIN_ZLIB!r} is not valid zlib data ({err})") from err
    if len(raw) != num_bytes or not inflater.eof:
        raise ValueError(f"{ABSTAIN_ZLIB!r} does not inflate to exactly {num_bytes} bytes")
    if inflater.unused_data or inflater.unconsumed_tail:
        raise ValueError(f"{ABSTAIN_ZLIB!r} has data after the end of its zlib stream")
    return signs, np.frombuffer(raw, dtype=np.uint8).copy()
