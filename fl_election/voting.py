"""Packed-sign voting: local and global majority votes on 1-bit planes.

The two votes of election coding (Sohn, Han, Choi, Moon, "Election Coding for Distributed
Learning: Protecting SignSGD against Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093):
worker ``i`` sends its **local majority** ``c_i = sign(sum_j G[i, j] s_j)`` over the sign
vectors of the partitions it holds, and the master elects the **global majority**
``v = sign(sum_i c_i)``; both signs give 0 on a tie.

Wire format
-----------
A vote over ``count`` coordinates with values in {-1, 0, +1} travels as

* a **sign plane**: ``np.uint8`` array of ``ceil(count / 8)`` bytes, packed with
  :func:`numpy.packbits` in big-endian bit order (the numpy default); bit 1 means +1, bit 0
  means -1 (or abstain); the padding bits of the last byte are 0;
* an optional **abstain plane** of the same shape: bit 1 means the worker abstains (votes 0)
  on that coordinate, and its sign bit there is then 0.

**Abstain rule.** A vote without any 0 sends *no* abstain plane (``None``): exactly 1 bit per
coordinate. A worker holding an odd number of partitions never ties, so it always sends 1 bit
per coordinate; only a worker with an even load may need the second plane, and only when one
of its coordinates actually ties. On the receiving side an abstain bit takes precedence over
the sign bit, so every pair of byte strings of the right length decodes to a valid vote (a
malformed plane cannot crash the election; it can only cast a vote). Padding bits of received
planes are ignored.

How the election is computed
----------------------------
:func:`global_majority` has one fast kernel, compiled with numba (a hard dependency) on the
first election and cached on disk, so that processes that only pack their votes never import
numba. It makes a single pass per 64-bit word position and never unpacks the votes: the
``n`` sign words (and abstain words) of a position are loaded once and added bit-sliced in
registers, with full adders of five bitwise operations, into a counter that starts at a bias
chosen so that its top bit is "+1 wins" and a tie is one pattern of the other bits; the
"+1 wins" and "-1 wins" words are then decoded to 64 ``int8`` coordinates through a
byte-to-eight-lanes table while they are in L1. With abstentions, a vote ``c_i`` is counted
as ``c_i + 1`` in {0, 1, 2} (the sign bit, with abstentions masked out, with weight 2 and
the abstain bit with weight 1) and the sum ``T = sum_i (c_i + 1)`` is compared with ``n``.
The last ``< 8`` bytes of the planes go through the kernel as one zero-padded word, so
padding bits never count.

The counter has at most nine bits, so the kernel counts at most :data:`NUMBA_MAX_VOTES`
votes. Larger elections, and ``kernel="reference"``, take the plain reference instead: every
vote unpacked to ``int32`` in {-1, 0, +1}, summed and signed, a block of coordinates at a
time so that memory stays bounded. It is also the tests' oracle for the kernel; both give
identical results. :func:`packed_agreement` has the same two kernels.

Numpy and torch inputs are both accepted; torch is never imported by this module unless a
torch tensor is passed in, and torch input gives torch output.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

__all__ = [
    "NUMBA_MAX_VOTES",
    "global_majority",
    "local_majority",
    "pack_signs",
    "packed_agreement",
    "unpack_signs",
]

Int8Array = npt.NDArray[np.int8]
UInt8Array = npt.NDArray[np.uint8]

# Elements per block when packing / unpacking / summing full-length vectors.
_PACK_BLOCK = 1 << 18
# Result bytes decoded per np.unpackbits call: its 64 KiB output stays below glibc's mmap
# threshold, so the temporaries are recycled instead of page-faulted in every call.
_DECODE_BLOCK = 8 * 1024
# Plane bytes per block of the reference kernels: 2**18 coordinates, so each voter's
# unpacked block and the running sum take 1 MiB each, whatever n and count.
_REFERENCE_BLOCK_BYTES = 1 << 15
# Words per chunk of abstain planes passed one by one, copied into a staging matrix (n rows
# of 64 KiB) that the compiled kernel reads from cache.
_STAGING_WORDS = 8 * 1024
# Accepted values of ``kernel=`` (``None`` means the first).
_KERNELS = ("numba", "reference")


# --------------------------------------------------------------------------- helpers


def _torch_module() -> Any:
    """Return the torch module (only called once a torch tensor has been seen)."""
    import torch

    return torch


def _is_torch_tensor(value: object) -> bool:
    """Tell whether ``value`` is a torch tensor, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _num_bytes(count: int) -> int:
    """Return the number of bytes of a plane over ``count`` coordinates."""
    return (count + 7) // 8


def _check_count(count: object) -> int:
    """Validate a coordinate count and return it as an ``int``."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ValueError(f"count must be an integer, got {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return int(count)


def _padding_mask(count: int) -> int:
    """Return the mask of the valid bits of the last byte of a plane."""
    used = count % 8
    return 0xFF if used == 0 else (0xFF << (8 - used)) & 0xFF


def _plane_to_numpy(plane: object, name: str) -> UInt8Array:
    """Return a packed plane (numpy or torch) as a numpy ``uint8`` array (no copy if possible)."""
    if _is_torch_tensor(plane):
        torch = _torch_module()
        if plane.dtype != torch.uint8:  # type: ignore[attr-defined]
            raise ValueError(f"{name} must have dtype uint8, got {plane.dtype}")  # type: ignore[attr-defined]
        plane = plane.detach().cpu().numpy()  # type: ignore[attr-defined]
    if not isinstance(plane, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy uint8 array or torch uint8 tensor, got {type(plane).__name__}"
        )
    if plane.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {plane.dtype}")
    return plane


def _check_plane(plane: object, count: int, name: str) -> UInt8Array:
    """Validate a single 1-D plane over ``count`` coordinates."""
    array = _plane_to_numpy(plane, name)
    expected = _num_bytes(count)
    if array.shape != (expected,):
        raise ValueError(
            f"{name} must have shape ({expected},) = (ceil(count / 8),) for count={count}, "
            f"got shape {array.shape}"
        )
    return array


def _decode_planes(positive: UInt8Array, negative: UInt8Array, count: int) -> Int8Array:
    """Decode a "+1" plane and a disjoint "-1" plane into an ``int8`` vector of length count.

    Works in blocks of ``_DECODE_BLOCK`` bytes; the 0/1 bytes subtract in ``uint8``, wrapping
    -1 to 0xFF.
    """
    out = np.empty(8 * positive.shape[0], dtype=np.uint8)
    for low in range(0, positive.shape[0], _DECODE_BLOCK):
        high = min(positive.shape[0], low + _DECODE_BLOCK)
        np.subtract(
            np.unpackbits(positive[low:high]),
            np.unpackbits(negative[low:high]),
            out[8 * low : 8 * high],
        )
    return out.view(np.int8)[:count]


# --------------------------------------------------------------------------- pack / unpack


def _check_sign_values(values: npt.NDArray[Any], name: str) -> None:
    """Raise ``ValueError`` unless every entry of a numeric array is -1, 0 or +1."""
    if values.size == 0:
        return
    kind = values.dtype.kind
    if kind in "iu":
        low, high = values.min(), values.max()
        if low < -1 or high > 1:
            bad = low if low < -1 else high
            raise ValueError(f"{name} must only contain -1, 0 and +1, found {bad}")
        return
    if kind != "f":
        raise ValueError(f"{name} must have an integer or floating dtype, got {values.dtype}")
    # |x| is 0 or 1 exactly when every nonzero |x| equals 1; NaN is nonzero and not 1.
    magnitude = np.abs(values)
    if np.count_nonzero(magnitude) != np.count_nonzero(magnitude == 1):
        flat = values.reshape(-1)
        bad_index = int(np.flatnonzero((flat != 1) & (flat != -1) & (flat != 0))[0])
        raise ValueError(
            f"{name} must only contain -1, 0 and +1 (take the sign first), "
            f"found {flat[bad_index]!r}"
        )


class _SignBlocks:
    """Validates blocks of sign values and converts them to ``int8`` in reused buffers.

    Reading a full-size vote once, block by block, with preallocated scratch space keeps the
    temporaries in cache and avoids page-faulting fresh arrays for every block.
    """

    def __init__(self, dtype: np.dtype[Any], shape: tuple[int, ...], name: str) -> None:
        self.dtype = dtype
        self.name = name
        self.converted = np.empty(shape, dtype=np.int8) if dtype != np.int8 else None
        self.mismatch = np.empty(shape, dtype=np.bool_) if dtype.kind == "f" else None

    def as_int8(self, block: npt.NDArray[Any]) -> npt.NDArray[np.int8]:
        """Return ``block`` as ``int8`` after checking that it only holds -1, 0 and +1."""
        if block.size == 0:
            return block.astype(np.int8)
        width = block.shape[-1]
        if self.dtype.kind in "iu":
            low, high = block.min(), block.max()
            if low < -1 or high > 1:
                _check_sign_values(block, self.name)  # raises, naming the value
        if self.converted is None:
            return block
        values = self.converted[..., :width]
        if self.mismatch is None:
            np.copyto(values, block, casting="unsafe")
            return values
        mismatch = self.mismatch[..., :width]
        with np.errstate(invalid="ignore"):  # NaN / inf casts are caught just below
            np.copyto(values, block, casting="unsafe")
        # A non-integer, NaN or infinite value does not survive the round trip through int8.
        np.not_equal(values, block, out=mismatch)
        if mismatch.any() or values.min() < -1 or values.max() > 1:
            _check_sign_values(block, self.name)
        return values


def _check_torch_sign_values(values: Any, name: str) -> None:
    """Torch twin of :func:`_check_sign_values` that runs on the tensor's device."""
    if values.dtype.is_complex or values.dtype == _torch_module().bool:
        raise ValueError(f"{name} must have an integer or floating dtype, got {values.dtype}")
    if values.numel() == 0:
        return
    valid = (values == 1) | (values == -1) | (values == 0)
    if not bool(valid.all()):
        bad = values[~valid].reshape(-1)[0].item()
        raise ValueError(
            f"{name} must only contain -1, 0 and +1 (take the sign first), found {bad!r}"
        )


def _signs_to_numpy_int8(signs: object, name: str) -> npt.NDArray[Any]:
    """Return a 1-D sign vector as a numpy array.

    Torch input is validated here and converted to int8; numpy input is validated block by
    block by the caller.
    """
    if _is_torch_tensor(signs):
        if signs.dim() != 1:  # type: ignore[attr-defined]
            raise ValueError(f"{name} must be 1-D, got shape {tuple(signs.shape)}")  # type: ignore[attr-defined]
        _check_torch_sign_values(signs, name)
        torch = _torch_module()
        return signs.detach().to(torch.int8).cpu().numpy()  # type: ignore[attr-defined, no-any-return]
    if not isinstance(signs, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy array or torch tensor, got {type(signs).__name__}"
        )
    if signs.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {signs.shape}")
    if signs.dtype.kind not in "iuf":
        raise ValueError(f"{name} must have an integer or floating dtype, got {signs.dtype}")
    return signs


def pack_signs(signs: npt.NDArray[Any] | torch.Tensor) -> tuple[UInt8Array, UInt8Array | None]:
    """Pack a vote in {-1, 0, +1} into its sign plane and optional abstain plane.

    Parameters
    ----------
    signs : numpy.ndarray or torch.Tensor
        1-D vector of any length, any integer or floating dtype, with values -1, 0 or +1 only
        (take the sign of a gradient first; 0 is an abstention).

    Returns
    -------
    tuple of numpy.ndarray
        ``(sign_plane, abstain_plane)``: ``uint8`` planes of ``ceil(len(signs) / 8)`` bytes in
        the wire format of this module. ``abstain_plane`` is ``None`` when ``signs`` has no 0.

    Raises
    ------
    ValueError
        If ``signs`` is not 1-D, has a non-numeric dtype, or holds another value (NaN too).
    """
    values = _signs_to_numpy_int8(signs, "signs")
    count = values.shape[0]
    num_bytes = _num_bytes(count)
    sign_plane = np.empty(num_bytes, dtype=np.uint8)
    abstain_plane: UInt8Array | None = None
    block_size = max(1, min(_PACK_BLOCK, count))
    blocks = _SignBlocks(values.dtype, (block_size,), "signs")
    positive = np.empty(block_size, dtype=np.bool_)
    # Blocks of _PACK_BLOCK elements (a multiple of 8): the vector is read from memory once.
    for start in range(0, count, _PACK_BLOCK):
        stop = min(count, start + _PACK_BLOCK)
        block = blocks.as_int8(values[start:stop])
        plane_bytes = slice(start // 8, _num_bytes(stop))
        sign_plane[plane_bytes] = np.packbits(np.greater(block, 0, out=positive[: stop - start]))
        if np.count_nonzero(block) < stop - start:
            if abstain_plane is None:
                abstain_plane = np.zeros(num_bytes, dtype=np.uint8)
            abstain_plane[plane_bytes] = np.packbits(block == 0)
    return sign_plane, abstain_plane


def unpack_signs(
    sign_plane: UInt8Array | torch.Tensor,
    count: int,
    abstain: UInt8Array | torch.Tensor | None = None,
) -> Int8Array:
    """Decode a sign plane (and optional abstain plane) into an ``int8`` vote in {-1, 0, +1}.

    Parameters
    ----------
    sign_plane : numpy.ndarray or torch.Tensor
        ``uint8`` plane of ``ceil(count / 8)`` bytes.
    count : int
        Number of coordinates, ``>= 0``.
    abstain : numpy.ndarray or torch.Tensor or None (default: None)
        Abstain plane of the same shape; a set bit gives 0 whatever the sign bit.

    Returns
    -------
    numpy.ndarray
        ``int8`` vector of length ``count``.

    Raises
    ------
    ValueError
        On a wrong dtype, a shape other than ``(ceil(count / 8),)`` or a negative count.
    """
    count = _check_count(count)
    signs = _check_plane(sign_plane, count, "sign_plane")
    if abstain is None:
        return _decode_planes(signs, np.invert(signs), count)
    abstains = _check_plane(abstain, count, "abstain")
    positive = signs & np.invert(abstains)
    negative = np.invert(signs | abstains)
    return _decode_planes(positive, negative, count)


# --------------------------------------------------------------------------- local majority


@overload
def local_majority(signs: torch.Tensor) -> torch.Tensor: ...


@overload
def local_majority(signs: npt.NDArray[Any]) -> Int8Array: ...


def local_majority(signs: npt.NDArray[Any] | torch.Tensor) -> Int8Array | torch.Tensor:
    """Return a worker's local majority vote over the sign vectors of its partitions.

    Parameters
    ----------
    signs : numpy.ndarray or torch.Tensor
        ``(L, d)`` array, one row per partition the worker holds (``L >= 1``), values -1, 0
        or +1, any integer or floating dtype.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``int8`` vector of length ``d``, ``sign(sum of the rows)`` with 0 on a tie; a torch
        tensor (on the input's device) for torch input, numpy otherwise.

    Raises
    ------
    ValueError
        If ``signs`` is not 2-D, has no row, a non-numeric dtype or a value outside {-1, 0, +1}.
    """
    if _is_torch_tensor(signs):
        tensor: Any = signs
        if tensor.dim() != 2:
            raise ValueError(
                f"signs must be 2-D (partitions x coordinates), got shape {tuple(tensor.shape)}"
            )
        if tensor.shape[0] < 1:
            raise ValueError("signs must hold at least one partition's row (L >= 1)")
        _check_torch_sign_values(tensor, "signs")
        torch = _torch_module()
        accumulate = None if tensor.dtype.is_floating_point else torch.int32
        return torch.sign(tensor.sum(dim=0, dtype=accumulate)).to(torch.int8)  # type: ignore[no-any-return]
    if not isinstance(signs, np.ndarray):
        raise ValueError(f"signs must be a numpy array or torch tensor, got {type(signs).__name__}")
    if signs.ndim != 2:
        raise ValueError(f"signs must be 2-D (partitions x coordinates), got shape {signs.shape}")
    if signs.shape[0] < 1:
        raise ValueError("signs must hold at least one partition's row (L >= 1)")
    if signs.dtype.kind not in "iuf":
        raise ValueError(f"signs must have an integer or floating dtype, got {signs.dtype}")
    num_rows, count = signs.shape
    # |sum| <= L: int8 accumulation is exact up to 127 rows.
    accumulator = np.int8 if num_rows <= 127 else np.int32
    vote = np.empty(count, dtype=np.int8)
    block_size = max(1, min(max(8, _PACK_BLOCK // num_rows), count))
    blocks = _SignBlocks(signs.dtype, (num_rows, block_size), "signs")
    total = np.empty(block_size, dtype=accumulator)
    # Column blocks: each row is read from memory once and the sum stays in cache.
    for start in range(0, count, block_size):
        stop = min(count, start + block_size)
        columns = blocks.as_int8(signs[:, start:stop])
        block_total = total[: stop - start]
        np.add.reduce(columns, axis=0, dtype=accumulator, out=block_total)
        np.sign(block_total, out=block_total)
        np.copyto(vote[start:stop], block_total, casting="unsafe")
    return vote


# --------------------------------------------------------------------------- election inputs


def _check_kernel(kernel: object) -> str:
    """Return the kernel name for ``kernel=`` (``None`` is ``"numba"``)."""
    if kernel is None:
        return _KERNELS[0]
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        raise ValueError(f"kernel must be None, 'numba' or 'reference', got {kernel!r}")
    return kernel


def _as_vote_matrix(packed_votes: object, count: int) -> UInt8Array:
    """Validate the stacked sign planes of ``n`` voters."""
    votes = _plane_to_numpy(packed_votes, "packed_votes")
    expected = _num_bytes(count)
    if votes.ndim != 2:
        raise ValueError(
            f"packed_votes must be 2-D (voters x ceil(count / 8) bytes), got shape {votes.shape}"
        )
    if votes.shape[0] < 1:
        raise ValueError("packed_votes must hold at least one vote (n >= 1)")
    if votes.shape[1] != expected:
        raise ValueError(
            f"packed_votes rows have {votes.shape[1]} bytes, but count={count} needs "
            f"ceil(count / 8) = {expected}"
        )
    if votes.strides[1] != 1:
        votes = np.ascontiguousarray(votes)
    return votes


def _as_abstain(
    abstain: object, num_votes: int, count: int
) -> tuple[UInt8Array | None, list[UInt8Array | None] | None]:
    """Validate the abstain argument.

    Returns ``(matrix, planes)``: ``planes`` holds one plane (or ``None``) per voter, or is
    ``None`` itself when no voter sends a plane; ``matrix`` is the 2-D array when the planes
    were given as one.
    """
    if abstain is None:
        return None, None
    num_bytes = _num_bytes(count)
    if isinstance(abstain, np.ndarray) or _is_torch_tensor(abstain):
        matrix = _plane_to_numpy(abstain, "abstain")
        if matrix.shape != (num_votes, num_bytes):
            raise ValueError(
                f"abstain must have the shape of packed_votes ({num_votes}, {num_bytes}), "
                f"got {matrix.shape}"
            )
        if matrix.strides[1] != 1:
            matrix = np.ascontiguousarray(matrix)
        return matrix, list(matrix)
    if isinstance(abstain, (str, bytes)) or not isinstance(abstain, Sequence):
        raise ValueError(
            "abstain must be None, a uint8 array shaped like packed_votes, or a sequence of "
            f"per-vote planes (None for no abstention), got {type(abstain).__name__}"
        )
    if len(abstain) != num_votes:
        raise ValueError(f"abstain has {len(abstain)} entries, but there are {num_votes} votes")
    planes: list[UInt8Array | None] = [
        None if plane is None else _check_plane(plane, count, f"abstain[{voter}]")
        for voter, plane in enumerate(abstain)
    ]
    return None, (planes if any(plane is not None for plane in planes) else None)


# --------------------------------------------------------------------------- reference kernel


def _unpack_vote(
    signs: UInt8Array, abstain: UInt8Array | None, width: int
) -> npt.NDArray[np.int32]:
    """Return the first ``width`` coordinates of a packed vote as ``int32`` in {-1, 0, +1}."""
    vote = 2 * np.unpackbits(signs, count=width).astype(np.int32) - 1
    if abstain is not None:
        vote *= 1 - np.unpackbits(abstain, count=width)  # 0 where the abstain bit is set
    return vote


def _reference_majority(
    votes: UInt8Array, abstain: list[UInt8Array | None] | None, count: int
) -> Int8Array:
    """Elect ``sign(sum_i c_i)`` by unpacking every vote, block by block of coordinates."""
    elected = np.empty(count, dtype=np.int8)
    for low in range(0, votes.shape[1], _REFERENCE_BLOCK_BYTES):
        high = min(votes.shape[1], low + _REFERENCE_BLOCK_BYTES)
        width = min(count, 8 * high) - 8 * low
        total = np.zeros(width, dtype=np.int32)
        for voter in range(votes.shape[0]):
            plane = None if abstain is None else abstain[voter]
            total += _unpack_vote(
                votes[voter, low:high], None if plane is None else plane[low:high], width
            )
        elected[8 * low : 8 * low + width] = np.sign(total)
    return elected


def _reference_agreement(
    votes: UInt8Array, abstain: list[UInt8Array | None] | None, result: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Return per voter the fraction of coordinates where its unpacked vote equals ``result``."""
    count = result.shape[0]
    agree = np.zeros(votes.shape[0], dtype=np.int64)
    for low in range(0, votes.shape[1], _REFERENCE_BLOCK_BYTES):
        high = min(votes.shape[1], low + _REFERENCE_BLOCK_BYTES)
        width = min(count, 8 * high) - 8 * low
        expected = result[8 * low : 8 * low + width]
        for voter in range(votes.shape[0]):
            plane = None if abstain is None else abstain[voter]
            vote = _unpack_vote(
                votes[voter, low:high], None if plane is None else plane[low:high], width
            )
            agree[voter] += np.count_nonzero(vote == expected)
    fractions: npt.NDArray[np.float64] = agree / count
    return fractions


# --------------------------------------------------------------------------- compiled kernel
#
# The ``_nb_*`` functions are plain Python that :func:`_numba_kernels` compiles with numba on
# first use, so that processes that only pack their votes never import numba (about a second).
# The vote kernels load every 64-bit word of the planes once per voter, count the votes of
# that word bit-sliced in registers (counter bits ``c0..c8``, so ``T <= 511``), compare the
# count with the thresholds and decode the result block by block while it is in L1. All
# constants are uint64: numba turns a mix of uint64 and int64 operands into float64.

#: Most votes the compiled kernel counts (with abstentions ``T <= 2n`` must fit in nine bits);
#: larger elections take the reference kernel.
NUMBA_MAX_VOTES = 255
# Counter bits of the compiled kernels: numba freezes this global at compile time, and
# :func:`_numba_kernels` compiles every kernel twice, with 5 bits (up to 31 votes, or 15 with
# abstentions: the common case, cheap) and with 9 bits (up to NUMBA_MAX_VOTES).
_NB_WIDTH = 9
_NB_WIDTHS = (5, 9)
# Words per block of the compiled kernel: the block's result words (2 x 2 KiB) are decoded
# while they are still in L1.
_NUMBA_BLOCK_WORDS = 256
_U64_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_U64_SHIFT_1 = np.uint64(1)
_U64_SHIFT_2 = np.uint64(2)
_U64_SHIFT_4 = np.uint64(4)
_U64_SHIFT_56 = np.uint64(56)
_U64_M1 = np.uint64(0x5555_5555_5555_5555)
_U64_M2 = np.uint64(0x3333_3333_3333_3333)
_U64_M4 = np.uint64(0x0F0F_0F0F_0F0F_0F0F)
_U64_H01 = np.uint64(0x0101_0101_0101_0101)


def _nb_full_add(x: Any, y: Any, z: Any) -> tuple[Any, Any]:
    """Return the bit-sliced sum and carry of three planes (a full adder, five operations)."""
    partial = x ^ y
    return partial ^ z, (x & y) | (partial & z)


def _nb_add_at(
    c0: Any,
    c1: Any,
    c2: Any,
    c3: Any,
    c4: Any,
    c5: Any,
    c6: Any,
    c7: Any,
    c8: Any,
    carry: Any,
    level: int,
    width: int,
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any]:
    """Add the plane ``carry`` with weight ``2**level`` to the ``width``-bit counter ``c0..c8``.

    Both ``level`` and ``width`` are compile-time constants at every call site, so once
    inlined the branches fold away and the ripple is straight-line code; the counter is wide
    enough that no carry leaves its top bit.
    """
    if level <= 0 < width:
        spill = c0 & carry
        c0 ^= carry
        carry = spill
    if level <= 1 < width:
        spill = c1 & carry
        c1 ^= carry
        carry = spill
    if level <= 2 < width:
        spill = c2 & carry
        c2 ^= carry
        carry = spill
    if level <= 3 < width:
        spill = c3 & carry
        c3 ^= carry
        carry = spill
    if level <= 4 < width:
        spill = c4 & carry
        c4 ^= carry
        carry = spill
    if level <= 5 < width:
        spill = c5 & carry
        c5 ^= carry
        carry = spill
    if level <= 6 < width:
        spill = c6 & carry
        c6 ^= carry
        carry = spill
    if level <= 7 < width:
        spill = c7 & carry
        c7 ^= carry
        carry = spill
    if level <= 8 < width:
        c8 ^= carry
    return c0, c1, c2, c3, c4, c5, c6, c7, c8


def _nb_bias(bias: int) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any]:
    """Return the counter ``c0..c8`` holding the constant ``bias`` in every coordinate."""
    zero = np.uint64(0)
    return (
        _U64_ALL if bias & 1 else zero,
        _U64_ALL if bias & 2 else zero,
        _U64_ALL if bias & 4 else zero,
        _U64_ALL if bias & 8 else zero,
        _U64_ALL if bias & 16 else zero,
        _U64_ALL if bias & 32 else zero,
        _U64_ALL if bias & 64 else zero,
        _U64_ALL if bias & 128 else zero,
        _U64_ALL if bias & 256 else zero,
    )


def _nb_decide(
    c0: Any,
    c1: Any,
    c2: Any,
    c3: Any,
    c4: Any,
    c5: Any,
    c6: Any,
    c7: Any,
    c8: Any,
    width: int,
    complement: bool,
) -> tuple[Any, Any]:
    """Return the "+1 wins" and "-1 wins" planes of a biased count of ``width`` bits.

    The counter started at ``bias = 2**(width - 1) - positive_at_least``, so "+1 wins" is
    its top bit, and the count is one below the threshold (a tie when the "-1 wins"
    threshold is one lower) exactly when the top bit is 0 and all others are 1.
    """
    if width == 5:
        top = c4
        below = c0 & c1 & c2 & c3
    else:
        top = c8
        below = c0 & c1 & c2 & c3 & c4 & c5 & c6 & c7
    if complement:
        return top, ~top
    return top, ~(top | below)


def _nb_decode_block(
    positive_bytes: Any,
    negative_bytes: Any,
    num_words: int,
    out_word: int,
    decoded_out: Any,
    complement: bool,
    table: Any,
) -> None:
    """Decode one block's result words into ``decoded_out`` (8 coordinates per plane byte).

    ``table[0]`` / ``table[1]`` map a "+1 wins" / "-1 wins" byte to eight int8 lanes of 1 /
    -1 (0xFF) in coordinate order; ``table[2]`` maps a byte of a tie-free result straight to
    the eight +-1 lanes. The block's first word is word ``out_word`` of the output.
    """
    # Unsigned indices spare numba's negative-index wraparound on every access.
    base = np.uint64(8 * out_word)
    if complement:
        for index in range(8 * num_words):
            byte = np.uint64(index)
            decoded_out[base + byte] = table[2, positive_bytes[byte]]
    else:
        for index in range(8 * num_words):
            byte = np.uint64(index)
            decoded_out[base + byte] = (
                table[0, positive_bytes[byte]] | table[1, negative_bytes[byte]]
            )


def _nb_vote_plain(
    votes: Any,
    first: int,
    last: int,
    bias: int,
    complement: bool,
    decoded_out: Any,
    table: Any,
) -> None:
    """Elect words ``[first, last)`` of ``votes`` (n x words, uint64) without abstentions.

    ``T`` is the number of +1 votes, counted from ``bias`` in a counter of ``_NB_WIDTH`` bits
    (a compile-time constant, see :func:`_nb_decide`); ``complement`` says that "-1 wins" is
    "+1 does not win" (odd n). The elected coordinates go to ``decoded_out`` (uint64, 8 words
    of int8 lanes per plane word), indexed from ``first``.
    """
    # Unsigned indices spare numba's negative-index wraparound on every load.
    num_votes = np.uint64(votes.shape[0])
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    start = _nb_bias(bias)
    positive_bytes = np.empty(8 * _NUMBA_BLOCK_WORDS, dtype=np.uint8)
    negative_bytes = np.empty(8 * _NUMBA_BLOCK_WORDS, dtype=np.uint8)
    positive_words = positive_bytes.view(np.uint64)
    negative_words = negative_bytes.view(np.uint64)
    for block in range(first, last, _NUMBA_BLOCK_WORDS):
        block_end = min(last, block + _NUMBA_BLOCK_WORDS)
        for word_index in range(block, block_end):
            word = np.uint64(word_index)
            c0, c1, c2, c3, c4, c5, c6, c7, c8 = start
            voter = np.uint64(0)
            # Four votes: two full adders into bit 0, one into bit 1, a carry into bit 2.
            while voter + four <= num_votes:
                c0, low = _nb_full_add(c0, votes[voter, word], votes[voter + one, word])
                c0, high = _nb_full_add(c0, votes[voter + two, word], votes[voter + three, word])
                c1, carry = _nb_full_add(c1, low, high)
                c0, c1, c2, c3, c4, c5, c6, c7, c8 = _nb_add_at(
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, carry, 2, _NB_WIDTH
                )
                voter += four
            if voter + two <= num_votes:
                c0, carry = _nb_full_add(c0, votes[voter, word], votes[voter + one, word])
                c0, c1, c2, c3, c4, c5, c6, c7, c8 = _nb_add_at(
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, carry, 1, _NB_WIDTH
                )
                voter += two
            if voter < num_votes:
                c0, c1, c2, c3, c4, c5, c6, c7, c8 = _nb_add_at(
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, votes[voter, word], 0, _NB_WIDTH
                )
            positive, negative = _nb_decide(
                c0, c1, c2, c3, c4, c5, c6, c7, c8, _NB_WIDTH, complement
            )
            positive_words[word_index - block] = positive
            negative_words[word_index - block] = negative
        _nb_decode_block(
            positive_bytes,
            negative_bytes,
            block_end - block,
            block - first,
            decoded_out,
            complement,
            table,
        )


def _nb_vote_abstain(
    votes: Any,
    abstain: Any,
    abstain_offset: int,
    first: int,
    last: int,
    bias: int,
    decoded_out: Any,
    table: Any,
) -> None:
    """Elect words ``[first, last)`` with abstain planes: ``T = sum_i (c_i + 1)``.

    Voter ``i`` adds its abstain bit ``a`` with weight 1 and its masked sign bit
    ``s AND NOT a`` with weight 2; word ``w`` of its abstain plane is
    ``abstain[i, w - abstain_offset]`` (a staging copy may hold only a chunk). "+1 wins" is
    ``T >= n + 1`` and "-1 wins" is ``T < n``, one lower. Otherwise as :func:`_nb_vote_plain`.
    """
    # Unsigned indices spare numba's negative-index wraparound on every load.
    num_votes = np.uint64(votes.shape[0])
    one, two = np.uint64(1), np.uint64(2)
    start = _nb_bias(bias)
    positive_bytes = np.empty(8 * _NUMBA_BLOCK_WORDS, dtype=np.uint8)
    negative_bytes = np.empty(8 * _NUMBA_BLOCK_WORDS, dtype=np.uint8)
    positive_words = positive_bytes.view(np.uint64)
    negative_words = negative_bytes.view(np.uint64)
    for block in range(first, last, _NUMBA_BLOCK_WORDS):
        block_end = min(last, block + _NUMBA_BLOCK_WORDS)
        for word_index in range(block, block_end):
            word = np.uint64(word_index)
            c0, c1, c2, c3, c4, c5, c6, c7, c8 = start
            staged = np.uint64(word_index - abstain_offset)
            voter = np.uint64(0)
            # Two voters: abstain bits into bit 0, masked signs and the carry into bit 1,
            # the two carries of bit 1 into bit 2, its carry into bit 3.
            while voter + two <= num_votes:
                first_abstain = abstain[voter, staged]
                second_abstain = abstain[voter + one, staged]
                first_sign = votes[voter, word] & ~first_abstain
                second_sign = votes[voter + one, word] & ~second_abstain
                c0, carry_low = _nb_full_add(c0, first_abstain, second_abstain)
                c1, carry_high = _nb_full_add(c1, first_sign, second_sign)
                carry_mid = c1 & carry_low
                c1 ^= carry_low
                c2, carry = _nb_full_add(c2, carry_high, carry_mid)
                c0, c1, c2, c3, c4, c5, c6, c7, c8 = _nb_add_at(
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, carry, 3, _NB_WIDTH
                )
                voter += two
            if voter < num_votes:
                last_abstain = abstain[voter, staged]
                last_sign = votes[voter, word] & ~last_abstain
                carry_low = c0 & last_abstain
                c0 ^= last_abstain
                c1, carry = _nb_full_add(c1, last_sign, carry_low)
                c0, c1, c2, c3, c4, c5, c6, c7, c8 = _nb_add_at(
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, carry, 2, _NB_WIDTH
                )
            positive, negative = _nb_decide(c0, c1, c2, c3, c4, c5, c6, c7, c8, _NB_WIDTH, False)
            positive_words[word_index - block] = positive
            negative_words[word_index - block] = negative
        _nb_decode_block(
            positive_bytes,
            negative_bytes,
            block_end - block,
            block - first,
            decoded_out,
            False,
            table,
        )


def _nb_popcount(word: Any) -> Any:
    """Return the number of set bits of a uint64 (LLVM turns this into ``popcnt``)."""
    word = word - ((word >> _U64_SHIFT_1) & _U64_M1)
    word = (word & _U64_M2) + ((word >> _U64_SHIFT_2) & _U64_M2)
    word = (word + (word >> _U64_SHIFT_4)) & _U64_M4
    return (word * _U64_H01) >> _U64_SHIFT_56


def _nb_agreement(signs: Any, abstains: Any, wins: Any, losses: Any, ties: Any) -> Any:
    """Count the words' coordinates where one packed vote equals the result (uint64 planes).

    ``abstains`` is empty for a vote without abstain plane. ``wins`` / ``losses`` / ``ties``
    are the disjoint result planes, with zero padding.
    """
    total = np.uint64(0)
    if abstains.shape[0] == 0:
        for word in range(signs.shape[0]):
            sign = signs[word]
            total += _nb_popcount((sign & wins[word]) | (~sign & losses[word]))
    else:
        for word in range(signs.shape[0]):
            sign = signs[word]
            abstain = abstains[word]
            total += _nb_popcount(
                (sign & ~abstain & wins[word])
                | (~(sign | abstain) & losses[word])
                | (abstain & ties[word])
            )
    return total


_NUMBA_HELPERS = (
    "_nb_full_add",
    "_nb_add_at",
    "_nb_bias",
    "_nb_decide",
    "_nb_decode_block",
    "_nb_popcount",
)
_NUMBA_ENTRIES = ("_nb_vote_plain", "_nb_vote_abstain", "_nb_agreement")
_NUMBA_STATE: dict[str, Any] = {}
_NUMBA_LOCK = threading.Lock()


def _decode_table() -> npt.NDArray[np.uint64]:
    """Return the ``(3, 256)`` byte-to-eight-lanes table of :func:`_nb_decode_block`."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # MSB first
    positive = bits.astype(np.uint8)
    negative = (bits * 0xFF).astype(np.uint8)
    binary = np.where(bits == 1, 1, 0xFF).astype(np.uint8)
    # Row-major (256, 8) bytes read as little-endian words: lane q is coordinate q.
    lanes = np.stack([positive, negative, binary]).astype("<u1")
    return np.ascontiguousarray(lanes).view("<u8").reshape(3, 256).astype(np.uint64)


def _numba_kernels() -> dict[str, Any]:
    """Return the compiled kernels, compiling-on-demand wrappers built on first call.

    The functions are rebuilt over a private globals dictionary in which the helpers are
    numba dispatchers, so the module's own ``_nb_*`` functions stay plain Python.
    """
    with _NUMBA_LOCK:
        if _NUMBA_STATE:
            return _NUMBA_STATE
        import numba

        helpers: dict[str, Any] = {}
        kernels: dict[str, Any] = {}
        for width in _NB_WIDTHS:
            namespace = {**globals(), **helpers, "_NB_WIDTH": width}
            for name in _NUMBA_HELPERS + _NUMBA_ENTRIES:
                if name in helpers:
                    continue
                source = globals()[name]
                function = types.FunctionType(source.__code__, namespace, name)
                # The qualified name names the cache file: one per width of a kernel.
                function.__qualname__ = source.__qualname__
                if name in _NUMBA_HELPERS:
                    # Inlined at numba's IR level, so that the counter bits stay in
                    # registers and the branches on constant levels fold away.
                    helpers[name] = numba.njit(cache=True, nogil=True, inline="always")(function)
                    namespace[name] = helpers[name]
                else:
                    function.__qualname__ += f"_width{width}"
                    kernels[f"{name}_width{width}"] = numba.njit(cache=True, nogil=True)(function)
        kernels["table"] = _decode_table()
        _NUMBA_STATE.update(kernels)
        return _NUMBA_STATE


def _as_words(plane_bytes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """View bytes whose last axis is contiguous and a multiple of 8 long as uint64 words."""
    return plane_bytes.view(np.uint64)


def _padded_tail(
    rows: Sequence[npt.NDArray[np.uint8] | None], first_byte: int
) -> npt.NDArray[np.uint64]:
    """Copy the last ``< 8`` bytes of every row into one zero-padded word per row."""
    tail = np.zeros((len(rows), 8), dtype=np.uint8)
    for index, row in enumerate(rows):
        if row is not None:
            tail[index, : row.shape[0] - first_byte] = row[first_byte:]
    return _as_words(tail)


def _elect_compiled(
    votes: UInt8Array, matrix: UInt8Array | None, abstain: list[UInt8Array | None] | None
) -> Int8Array:
    """Run the compiled kernel over validated planes of ``n <= NUMBA_MAX_VOTES`` voters.

    ``abstain`` holds the abstain plane (or None) of every voter; ``matrix`` is the same
    planes as one array when they were given as one. Returns the elected coordinates padded
    to whole words (``64 * ceil(bytes / 8)``); the last ``< 8`` bytes of the planes go
    through the kernel as one zero-padded word.
    """
    kernels = _numba_kernels()
    num_votes, num_bytes = votes.shape
    full_words, tail_bytes = divmod(num_bytes, 8)
    decoded = np.empty(64 * (full_words + (tail_bytes > 0)), dtype=np.uint8)
    decoded_words = _as_words(decoded)
    if abstain is None:
        max_count, positive_at_least = num_votes, num_votes // 2 + 1
        complement = num_votes % 2 == 1
    else:
        max_count, positive_at_least = 2 * num_votes, num_votes + 1
        complement = False
    # The narrowest counter whose top bit, counting from the bias, is "T >= threshold".
    width = next(
        w
        for w in _NB_WIDTHS
        if positive_at_least <= 1 << (w - 1) and max_count - positive_at_least < 1 << (w - 1)
    )
    bias = (1 << (width - 1)) - positive_at_least
    table = kernels["table"]
    vote_plain = kernels[f"_nb_vote_plain_width{width}"]
    vote_abstain = kernels[f"_nb_vote_abstain_width{width}"]

    def run(
        vote_words: npt.NDArray[np.uint64],
        abstain_words: npt.NDArray[np.uint64] | None,
        abstain_offset: int,
        first: int,
        last: int,
        out_first: int,
    ) -> None:
        out = decoded_words[8 * out_first : 8 * (out_first + last - first)]
        if abstain_words is None:
            vote_plain(vote_words, first, last, bias, complement, out, table)
        else:
            vote_abstain(vote_words, abstain_words, abstain_offset, first, last, bias, out, table)

    if full_words:
        main_votes = _as_words(votes[:, : 8 * full_words])
        if abstain is None:
            run(main_votes, None, 0, 0, full_words, 0)
        elif matrix is not None:
            run(main_votes, _as_words(matrix[:, : 8 * full_words]), 0, 0, full_words, 0)
        else:
            # Planes given one by one: copy a chunk of them at a time into a staging matrix
            # (rows of voters without a plane stay 0) that the kernel reads from cache.
            staging = np.zeros((num_votes, _STAGING_WORDS), dtype=np.uint64)
            staging_bytes = staging.view(np.uint8)
            for start in range(0, full_words, _STAGING_WORDS):
                stop = min(full_words, start + _STAGING_WORDS)
                for row, plane in enumerate(abstain):
                    if plane is not None:
                        staging_bytes[row, : 8 * (stop - start)] = plane[8 * start : 8 * stop]
                run(main_votes, staging, start, start, stop, start)
    if tail_bytes:
        first_byte = 8 * full_words
        tail_abstain = None if abstain is None else _padded_tail(abstain, first_byte)
        run(_padded_tail(list(votes), first_byte), tail_abstain, 0, 0, 1, full_words)
    return decoded.view(np.int8)


@overload
def global_majority(
    packed_votes: torch.Tensor,
    count: int,
    abstain: UInt8Array | torch.Tensor | Sequence[UInt8Array | None] | None = None,
    *,
    kernel: str | None = None,
) -> torch.Tensor: ...


@overload
def global_majority(
    packed_votes: UInt8Array,
    count: int,
    abstain: UInt8Array | torch.Tensor | Sequence[UInt8Array | None] | None = None,
    *,
    kernel: str | None = None,
) -> Int8Array: ...


def global_majority(
    packed_votes: UInt8Array | torch.Tensor,
    count: int,
    abstain: UInt8Array | torch.Tensor | Sequence[UInt8Array | None] | None = None,
    *,
    kernel: str | None = None,
) -> Int8Array | torch.Tensor:
    """Elect ``v = sign(sum_i c_i)`` from packed votes; a tie gives 0.

    Parameters
    ----------
    packed_votes : numpy.ndarray or torch.Tensor
        ``(n, ceil(count / 8))`` ``uint8`` sign planes of the ``n >= 1`` voters.
    count : int
        Number of coordinates, ``>= 0``.
    abstain : numpy.ndarray or torch.Tensor or sequence or None (default: None)
        Abstain planes: an array shaped like ``packed_votes``, or one entry per voter that is
        a 1-D plane or ``None`` (no abstention), or ``None`` for nobody abstaining.
    kernel : {"numba", "reference"} or None (default: None)
        ``"numba"`` (also ``None``): the compiled single-pass kernel, which hands elections
        of more than :data:`NUMBA_MAX_VOTES` votes to the reference; ``"reference"``: the
        plain unpack-sum-sign reference, to cross-check the kernel. The result does not
        depend on it.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``int8`` vector of length ``count`` in {-1, 0, +1}; a CPU torch tensor when
        ``packed_votes`` is a torch tensor.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or count, when there is no vote, or on an unknown ``kernel``.
    """
    count = _check_count(count)
    votes = _as_vote_matrix(packed_votes, count)
    matrix, planes = _as_abstain(abstain, votes.shape[0], count)
    if _check_kernel(kernel) == "reference" or votes.shape[0] > NUMBA_MAX_VOTES:
        elected = _reference_majority(votes, planes, count)
    elif count == 0:
        elected = np.empty(0, dtype=np.int8)
    else:
        elected = _elect_compiled(votes, matrix, planes)[:count]
    if _is_torch_tensor(packed_votes):
        return _torch_module().from_numpy(elected)  # type: ignore[no-any-return]
    return elected


def packed_agreement(
    packed_votes: UInt8Array | torch.Tensor,
    abstain: UInt8Array | torch.Tensor | Sequence[UInt8Array | None] | None,
    result: Int8Array | torch.Tensor,
    *,
    kernel: str | None = None,
) -> npt.NDArray[np.float64]:
    """Return, per voter, the fraction of coordinates where its packed vote equals ``result``.

    The packed twin of :func:`fl_election.aggregation.vote_agreement`: an abstention agrees
    only where the result is 0 too.

    Parameters
    ----------
    packed_votes : numpy.ndarray or torch.Tensor
        ``(n, ceil(d / 8))`` ``uint8`` sign planes.
    abstain : numpy.ndarray or torch.Tensor or sequence or None
        Abstain planes, as for :func:`global_majority`.
    result : numpy.ndarray or torch.Tensor
        The elected ``(d,)`` integer vector in {-1, 0, +1}, ``d >= 1``.
    kernel : {"numba", "reference"} or None (default: None)
        ``"numba"`` (also ``None``) counts each vote's agreement in one compiled pass over its
        packed words, without unpacking; ``"reference"`` unpacks the votes block by block and
        compares. The result does not depend on it.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 fractions in ``[0, 1]``.

    Raises
    ------
    ValueError
        On a wrong dtype or shape, an empty ``result``, a value outside {-1, 0, +1} or an
        unknown ``kernel``.
    """
    if _is_torch_tensor(result):
        result = result.detach().cpu().numpy()  # type: ignore[union-attr]
    if not isinstance(result, np.ndarray) or result.ndim != 1:
        raise ValueError("result must be a 1-D numpy array or torch tensor")
    if result.dtype.kind not in "iu":
        raise ValueError(f"result must have an integer dtype, got {result.dtype}")
    count = result.shape[0]
    if count == 0:
        raise ValueError("result must have at least one coordinate")
    _check_sign_values(result, "result")
    votes = _as_vote_matrix(packed_votes, count)
    _, planes = _as_abstain(abstain, votes.shape[0], count)
    if _check_kernel(kernel) == "reference":
        return _reference_agreement(votes, planes, result)
    agreement: npt.NDArray[np.float64] = _agreement_compiled(votes, planes, result) / count
    return agreement


def _agreement_compiled(
    votes: UInt8Array, abstain: list[UInt8Array | None] | None, result: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Return per voter the number of coordinates where its vote equals ``result``.

    One compiled pass per vote over its whole words, plus one zero-padded word for the last
    ``< 8`` bytes (the padding of the result planes is 0, so it never counts).
    """
    agreement = _numba_kernels()["_nb_agreement_width5"]
    wins = np.packbits(result > 0)
    losses = np.packbits(result < 0)
    ties = np.invert(wins | losses)
    ties[-1] &= _padding_mask(result.shape[0])
    full_words, tail_bytes = divmod(votes.shape[1], 8)
    first_byte = 8 * full_words
    result_planes = [wins, losses, ties]
    main = [_as_words(plane[:first_byte]) for plane in result_planes]
    tail = [_padded_tail([plane], first_byte)[0] for plane in result_planes]
    empty = np.empty(0, dtype=np.uint64)
    counts = np.empty(votes.shape[0], dtype=np.float64)
    for voter in range(votes.shape[0]):
        signs = votes[voter]
        plane = None if abstain is None else abstain[voter]
        main_abstain = empty if plane is None else _as_words(plane[:first_byte])
        total = int(agreement(_as_words(signs[:first_byte]), main_abstain, *main))
        if tail_bytes:
            tail_abstain = empty if plane is None else _padded_tail([plane], first_byte)[0]
            total += int(agreement(_padded_tail([signs], first_byte)[0], tail_abstain, *tail))
        counts[voter] = total
    return counts
