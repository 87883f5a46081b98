"""Tests of the packed-sign voting kernels against references written from the definitions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_election import voting
from fl_election.voting import (
    global_majority,
    local_majority,
    pack_signs,
    packed_agreement,
    unpack_signs,
)

# Every election test runs on the compiled kernel and on the module's plain reference; both
# are checked against the references below, written from the definitions.
KERNELS = ["numba", "reference"]

# --------------------------------------------------------------------------- references


def reference_pack(bits: np.ndarray) -> np.ndarray:
    """Pack 0/1 values MSB first, 8 per byte, zero padding: the wire format, by hand."""
    count = bits.shape[0]
    padded = np.zeros(8 * ((count + 7) // 8), dtype=np.int64)
    padded[:count] = bits
    weights = 1 << np.arange(7, -1, -1)
    return (padded.reshape(-1, 8) * weights).sum(axis=1).astype(np.uint8)


def reference_unpack(plane: np.ndarray, count: int) -> np.ndarray:
    """Bit ``j`` of a plane (MSB first), for ``j < count``."""
    index = np.arange(count)
    return (plane[index // 8].astype(np.int64) >> (7 - index % 8)) & 1


def reference_vote(sign_plane: np.ndarray, abstain: np.ndarray | None, count: int) -> np.ndarray:
    """One decoded vote: +1 / -1 from the sign bit, 0 where the abstain bit is set."""
    vote = 2 * reference_unpack(sign_plane, count) - 1
    if abstain is not None:
        vote[reference_unpack(abstain, count) == 1] = 0
    return vote


def reference_majority(votes: np.ndarray) -> np.ndarray:
    """sign of the column sums, 0 on a tie (the paper's local and global vote)."""
    return np.sign(votes.sum(axis=0, dtype=np.int64))


@contextmanager
def small_blocks(staging_words: int, reference_bytes: int) -> Iterator[None]:
    """Shrink the block sizes so that small inputs cross many block boundaries."""
    with (
        mock.patch.object(voting, "_STAGING_WORDS", staging_words),
        mock.patch.object(voting, "_REFERENCE_BLOCK_BYTES", reference_bytes),
    ):
        yield


def random_votes(
    rng: np.random.Generator, n: int, count: int, abstain_mode: str
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Random int8 votes in {-1, 0, +1}; returns (votes, sign planes, abstain list)."""
    binary = np.array([-1, 1], dtype=np.int8)
    if abstain_mode == "none":
        votes = rng.choice(binary, size=(n, count))
    else:
        votes = rng.integers(-1, 2, size=(n, count), dtype=np.int8)
        if abstain_mode == "mixed":
            keep_binary = rng.random(n) < 0.5
            votes[keep_binary] = rng.choice(binary, size=(int(keep_binary.sum()), count))
    packed = [pack_signs(row) for row in votes]
    planes = np.stack([p[0] for p in packed])
    return votes, planes, [p[1] for p in packed]


# --------------------------------------------------------------------------- pack / unpack


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(0, 300),
    dtype=st.sampled_from(["int8", "int16", "int64", "float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
    zeros=st.booleans(),
)
def test_pack_matches_reference_and_round_trips(count: int, dtype: str, seed: int, zeros: bool):
    rng = np.random.default_rng(seed)
    values = rng.integers(-1 if zeros else 0, 2, size=count)
    if not zeros:
        values = 2 * values - 1
    signs = values.astype(dtype)
    sign_plane, abstain = pack_signs(signs)
    assert sign_plane.dtype == np.uint8 and sign_plane.shape == ((count + 7) // 8,)
    np.testing.assert_array_equal(sign_plane, reference_pack(values > 0))
    if np.any(values == 0):
        assert abstain is not None
        np.testing.assert_array_equal(abstain, reference_pack(values == 0))
    else:
        assert abstain is None
    decoded = unpack_signs(sign_plane, count, abstain)
    assert decoded.dtype == np.int8
    np.testing.assert_array_equal(decoded, values)


def test_pack_long_vector_crosses_blocks():
    rng = np.random.default_rng(3)
    count = 2 * voting._PACK_BLOCK + 13
    values = rng.integers(-1, 2, size=count).astype(np.int8)
    sign_plane, abstain = pack_signs(values)
    np.testing.assert_array_equal(sign_plane, reference_pack(values > 0))
    assert abstain is not None
    np.testing.assert_array_equal(abstain, reference_pack(values == 0))
    np.testing.assert_array_equal(unpack_signs(sign_plane, count, abstain), values)


def test_odd_load_sends_one_plane_only():
    # A worker with 3 partitions never ties, so no abstain plane travels.
    signs = np.array([[1, -1, 1, 1, -1], [1, 1, -1, 1, -1], [-1, -1, -1, 1, 1]])
    vote = local_majority(signs)
    _, abstain = pack_signs(vote)
    assert abstain is None


def test_unpack_abstain_takes_precedence_and_padding_is_ignored():
    sign_plane = np.array([0b1100_0111], dtype=np.uint8)  # last 3 bits are padding
    abstain = np.array([0b0100_0011], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_signs(sign_plane, 5, abstain), [1, 0, -1, -1, -1])
    np.testing.assert_array_equal(unpack_signs(sign_plane, 5), [1, 1, -1, -1, -1])


def test_pack_signs_torch_matches_numpy():
    values = torch.tensor([1.0, -1.0, 0.0, 1.0, 1.0, -1.0, 0.0, 0.0, 1.0])
    sign_plane, abstain = pack_signs(values)
    ref_sign, ref_abstain = pack_signs(values.numpy())
    np.testing.assert_array_equal(sign_plane, ref_sign)
    assert abstain is not None and ref_abstain is not None
    np.testing.assert_array_equal(abstain, ref_abstain)
    np.testing.assert_array_equal(
        unpack_signs(torch.from_numpy(sign_plane), 9), unpack_signs(sign_plane, 9)
    )


@pytest.mark.parametrize(
    ("signs", "message"),
    [
        (np.array([1, 2, -1]), "only contain -1, 0 and \\+1"),
        (np.array([1.0, 0.5]), "only contain -1, 0 and \\+1"),
        (np.array([1.0, np.nan]), "nan"),
        (np.array([-3, 1]), "found -3"),
        (np.ones((2, 3)), "must be 1-D"),
        (np.array([True, False]), "integer or floating dtype"),
        ([1, -1], "numpy array or torch tensor"),
        (torch.tensor([1.0, 0.25]), "only contain"),
        (torch.ones(2, 2), "must be 1-D"),
    ],
)
def test_pack_signs_rejects_bad_input(signs: object, message: str):
    with pytest.raises(ValueError, match=message):
        pack_signs(signs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("plane", "count", "abstain", "message"),
    [
        (np.zeros(2, np.int8), 16, None, "dtype uint8"),
        (np.zeros(3, np.uint8), 16, None, "shape \\(2,\\)"),
        (np.zeros((2, 1), np.uint8), 16, None, "shape \\(2,\\)"),
        (np.zeros(2, np.uint8), -1, None, "count must be >= 0"),
        (np.zeros(2, np.uint8), 1.5, None, "count must be an integer"),
        (np.zeros(2, np.uint8), 16, np.zeros(1, np.uint8), "abstain must have shape"),
        (torch.zeros(2, dtype=torch.int32), 16, None, "dtype uint8"),
    ],
)
def test_unpack_signs_rejects_bad_input(
    plane: object, count: object, abstain: object, message: str
):
    with pytest.raises(ValueError, match=message):
        unpack_signs(plane, count, abstain)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- local majority


@settings(max_examples=100, deadline=None)
@given(
    partitions=st.integers(1, 6),
    count=st.integers(0, 200),
    dtype=st.sampled_from(["int8", "int32", "float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_local_majority_matches_reference(partitions: int, count: int, dtype: str, seed: int):
    rng = np.random.default_rng(seed)
    signs = rng.integers(-1, 2, size=(partitions, count)).astype(dtype)
    vote = local_majority(signs)
    assert vote.dtype == np.int8 and vote.shape == (count,)
    np.testing.assert_array_equal(vote, reference_majority(signs))
    tensor_vote = local_majority(torch.from_numpy(signs))
    assert isinstance(tensor_vote, torch.Tensor) and tensor_vote.dtype == torch.int8
    np.testing.assert_array_equal(tensor_vote.numpy(), vote)


def test_local_majority_many_partitions_does_not_overflow():
    signs = np.ones((300, 4), dtype=np.int8)
    signs[:, 1] = -1
    signs[:150, 2] = -1
    np.testing.assert_array_equal(local_majority(signs), [1, -1, 0, 1])


def test_local_majority_ties_give_zero():
    signs = np.array([[1, 1, -1, 0], [-1, 1, 1, 0]])
    np.testing.assert_array_equal(local_majority(signs), [0, 1, 0, 0])


@pytest.mark.parametrize(
    ("signs", "message"),
    [
        (np.ones(4), "must be 2-D"),
        (np.ones((0, 4)), "at least one partition"),
        (np.array([[1, 3]]), "only contain"),
        (np.array([[1.0, np.nan]]), "only contain"),
        (np.array([["a", "b"]]), "integer or floating dtype"),
        (torch.ones(3), "must be 2-D"),
        (torch.tensor([[0.5, 1.0]]), "only contain"),
        (torch.ones(1, 2, dtype=torch.bool), "integer or floating dtype"),
    ],
)
def test_local_majority_rejects_bad_input(signs: object, message: str):
    with pytest.raises(ValueError, match=message):
        local_majority(signs)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- global majority


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 20),
    count=st.integers(0, 400),
    abstain_mode=st.sampled_from(["none", "all", "mixed", "matrix"]),
    staging_words=st.sampled_from([1, 2, 3, 8 * 1024]),
    reference_bytes=st.sampled_from([1, 3, 8, 1 << 15]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_matches_reference(
    kernel: str,
    n: int,
    count: int,
    abstain_mode: str,
    staging_words: int,
    reference_bytes: int,
    seed: int,
):
    rng = np.random.default_rng(seed)
    votes, planes, abstain_list = random_votes(
        rng, n, count, "all" if abstain_mode == "matrix" else abstain_mode
    )
    abstain: object = abstain_list
    if abstain_mode == "none":
        abstain = None
    elif abstain_mode == "matrix":
        abstain = np.stack([a if a is not None else np.zeros_like(planes[0]) for a in abstain_list])
    with small_blocks(staging_words, reference_bytes):
        elected = global_majority(planes, count, abstain, kernel=kernel)  # type: ignore[arg-type]
    assert elected.dtype == np.int8 and elected.shape == (count,)
    np.testing.assert_array_equal(elected, reference_majority(votes))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    count=st.integers(1, 1000),
    abstain_mode=st.sampled_from(["none", "all", "mixed", "matrix"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_numba_kernel_equals_reference_kernel(n: int, count: int, abstain_mode: str, seed: int):
    # Also on raw random bytes: padding bits set, and sign and abstain bits both set.
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, size=(n, (count + 7) // 8), dtype=np.uint8)
    matrix = rng.integers(0, 256, size=planes.shape, dtype=np.uint8)
    abstain: object = None
    if abstain_mode == "matrix":
        abstain = matrix
    elif abstain_mode == "all":
        abstain = list(matrix)
    elif abstain_mode == "mixed":
        abstain = [row if rng.random() < 0.5 else None for row in matrix]
    elected = global_majority(planes, count, abstain, kernel="numba")  # type: ignore[arg-type]
    expected = global_majority(planes, count, abstain, kernel="reference")  # type: ignore[arg-type]
    np.testing.assert_array_equal(elected, expected)
    np.testing.assert_array_equal(global_majority(planes, count, abstain), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 31, 32, 33])
@pytest.mark.parametrize("abstain_mode", ["none", "all", "mixed"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_explicit_sizes(n: int, abstain_mode: str, kernel: str):
    # Both counter widths of the compiled kernel, odd and even n, d around bytes and words.
    rng = np.random.default_rng(n)
    for count in (0, 1, 7, 8, 9, 63, 64, 65, 200):
        votes, planes, abstain = random_votes(rng, n, count, abstain_mode)
        supplied = None if abstain_mode == "none" else abstain
        result = global_majority(planes, count, supplied, kernel=kernel)
        np.testing.assert_array_equal(result, reference_majority(votes))


@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_is_not_one_voter(kernel: str):
    # Each voter is in the minority somewhere, so no single vote passes for the majority.
    votes = np.array(
        [
            [1, -1, -1, 1, 1, -1, 1, -1, 1],
            [-1, 1, -1, 1, -1, 1, 1, 1, -1],
            [-1, -1, 1, -1, 1, 1, -1, -1, 1],
        ]
    )
    expected = [-1, -1, -1, 1, 1, 1, 1, -1, 1]
    planes = np.stack([pack_signs(row)[0] for row in votes])
    np.testing.assert_array_equal(global_majority(planes, 9, kernel=kernel), expected)
    for row in votes:
        assert not np.array_equal(row, expected)


@pytest.mark.parametrize("offset", [-9, -8, -1, 0, 1, 7, 8, 9])
@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_around_block_boundaries(offset: int, kernel: str):
    # Abstain planes given one by one are staged 2 words at a time; the reference works on
    # 16 bytes at a time; the compiled kernel decodes 256 words at a time.
    rng = np.random.default_rng(offset + 50)
    for count in (3 * 8 * 16 + offset, 8 * 8 * 256 + offset):
        for mode in ("none", "mixed"):
            votes, planes, abstain = random_votes(rng, 6, count, mode)
            with small_blocks(2, 16):
                result = global_majority(planes, count, abstain, kernel=kernel)
            np.testing.assert_array_equal(result, reference_majority(votes))


def test_global_majority_full_size_blocks():
    # Several real staging chunks (64 KiB per row), decode blocks and reference blocks.
    rng = np.random.default_rng(11)
    count = 8 * (2 * 8 * voting._STAGING_WORDS + 100) + 5
    for n, mode in ((15, "none"), (6, "mixed")):
        votes, planes, abstain = random_votes(rng, n, count, mode)
        expected = reference_majority(votes)
        for kernel in KERNELS:
            np.testing.assert_array_equal(
                global_majority(planes, count, abstain, kernel=kernel), expected
            )


@pytest.mark.parametrize("abstain_mode", ["none", "all", "mixed"])
def test_compiled_kernel_up_to_its_vote_limit(abstain_mode: str):
    # n = NUMBA_MAX_VOTES still fits the 9-bit counter with abstentions (T <= 2n = 510).
    rng = np.random.default_rng(4)
    for n in (voting.NUMBA_MAX_VOTES - 1, voting.NUMBA_MAX_VOTES):
        votes, planes, abstain = random_votes(rng, n, 77, abstain_mode)
        # Ties and near-ties: half of the voters copy the other half, negated.
        votes[n // 2 : 2 * (n // 2), :40] = -votes[: n // 2, :40]
        packed = [pack_signs(row) for row in votes]
        planes = np.stack([p[0] for p in packed])
        abstain = [p[1] for p in packed]
        supplied = None if abstain_mode == "none" else abstain
        with mock.patch.object(voting, "_reference_majority", side_effect=AssertionError):
            result = global_majority(planes, 77, supplied)
        np.testing.assert_array_equal(result, reference_majority(votes))


@pytest.mark.parametrize("kernel", [None, "numba"])
def test_more_votes_than_the_compiled_kernel_counts_take_the_reference(kernel: str | None):
    rng = np.random.default_rng(4)
    n = voting.NUMBA_MAX_VOTES + 2
    for mode in ("none", "mixed"):
        votes, planes, abstain = random_votes(rng, n, 70, mode)
        with mock.patch.object(voting, "_elect_compiled", side_effect=AssertionError):
            result = global_majority(planes, 70, abstain, kernel=kernel)
        np.testing.assert_array_equal(result, reference_majority(votes))


@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_ties_and_abstentions_by_hand(kernel: str):
    votes = np.array(
        [
            [1, 1, -1, 0, 1, 0],
            [-1, 1, -1, 0, 0, 0],
            [1, -1, 1, 0, -1, 0],
            [-1, 1, 0, 1, 0, 0],
        ]
    )
    packed = [pack_signs(row) for row in votes]
    planes = np.stack([p[0] for p in packed])
    result = global_majority(planes, 6, [p[1] for p in packed], kernel=kernel)
    np.testing.assert_array_equal(result, [0, 1, -1, 1, 0, 0])
    # Even n without abstentions ties too.
    plain = np.stack([pack_signs(np.array(row))[0] for row in [[1, 1, -1], [-1, 1, -1]]])
    np.testing.assert_array_equal(global_majority(plain, 3, kernel=kernel), [0, 1, -1])


@pytest.mark.parametrize("kernel", KERNELS)
def test_malformed_vote_with_sign_and_abstain_bits_counts_as_abstention(kernel: str):
    count = 8
    planes = np.array([[0xFF], [0x00], [0xFF]], dtype=np.uint8)
    abstain = [np.array([0xF0], np.uint8), None, None]  # voter 0 sets both bits on 0..3
    expected = reference_majority(
        np.stack([reference_vote(planes[i], abstain[i], count) for i in range(3)])
    )
    np.testing.assert_array_equal(expected, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(global_majority(planes, count, abstain, kernel=kernel), expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_padding_bits_of_inputs_are_ignored(kernel: str):
    count = 13
    planes = np.array(
        [[0b1010_0111, 0b0000_0111], [0b1000_0111, 0b1111_1111], [0b0010_0111, 0b1000_0000]],
        dtype=np.uint8,
    )
    abstain = np.array([[0b0000_0111, 0b0000_0111]] * 3, dtype=np.uint8)
    for supplied in (None, abstain, list(abstain)):
        votes = np.stack(
            [
                reference_vote(planes[i], None if supplied is None else abstain[i], count)
                for i in range(3)
            ]
        )
        np.testing.assert_array_equal(
            global_majority(planes, count, supplied, kernel=kernel),  # type: ignore[arg-type]
            reference_majority(votes),
        )


@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_torch_in_torch_out(kernel: str):
    rng = np.random.default_rng(5)
    votes, planes, abstain = random_votes(rng, 5, 37, "all")
    matrix = np.stack(abstain)  # type: ignore[arg-type]
    result = global_majority(torch.from_numpy(planes), 37, torch.from_numpy(matrix), kernel=kernel)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.int8
    np.testing.assert_array_equal(result.numpy(), reference_majority(votes))


@pytest.mark.parametrize("kernel", KERNELS)
def test_misaligned_and_strided_inputs(kernel: str):
    # Planes that start at an odd address and rows whose length is no multiple of 8 bytes:
    # the compiled kernel reads them as unaligned words.
    rng = np.random.default_rng(21)
    for n, count, mode in ((15, 8 * 1001 + 3, "none"), (6, 8 * 999 + 5, "all"), (9, 640, "all")):
        votes, planes, abstain_list = random_votes(rng, n, count, mode)
        buffer = np.zeros(planes.size + 1, dtype=np.uint8)
        shifted = buffer[1:].reshape(planes.shape)
        shifted[...] = planes
        matrix = None
        if mode == "all":
            abstain_buffer = np.zeros(planes.size + 3, dtype=np.uint8)
            matrix = abstain_buffer[3:].reshape(planes.shape)
            matrix[...] = np.stack(abstain_list)  # type: ignore[arg-type]
        expected = reference_majority(votes)
        np.testing.assert_array_equal(
            global_majority(shifted, count, matrix, kernel=kernel), expected
        )
        np.testing.assert_allclose(
            packed_agreement(shifted, matrix, expected.astype(np.int8), kernel=kernel),
            (votes == expected).mean(axis=1),
        )
        # A column-strided view of the planes is copied to contiguous rows.
        wide = np.zeros((n, 2 * planes.shape[1]), dtype=np.uint8)
        wide[:, ::2] = planes
        np.testing.assert_array_equal(
            global_majority(wide[:, ::2], count, matrix, kernel=kernel), expected
        )


@pytest.mark.parametrize(
    ("planes", "count", "abstain", "message"),
    [
        (np.zeros((3, 2), np.int8), 16, None, "dtype uint8"),
        (np.zeros(2, np.uint8), 16, None, "must be 2-D"),
        (np.zeros((0, 2), np.uint8), 16, None, "at least one vote"),
        (np.zeros((3, 2), np.uint8), 17, None, "needs ceil\\(count / 8\\) = 3"),
        (np.zeros((3, 2), np.uint8), -8, None, "count must be >= 0"),
        (np.zeros((3, 2), np.uint8), 16.0, None, "count must be an integer"),
        (np.zeros((3, 2), np.uint8), 16, np.zeros((2, 2), np.uint8), "shape of packed_votes"),
        (np.zeros((3, 2), np.uint8), 16, np.zeros((3, 2), np.int8), "dtype uint8"),
        (np.zeros((3, 2), np.uint8), 16, [None, None], "2 entries, but there are 3"),
        (np.zeros((3, 2), np.uint8), 16, [None, np.zeros(3, np.uint8), None], "abstain\\[1\\]"),
        (np.zeros((3, 2), np.uint8), 16, [None, np.zeros(2, np.int64), None], "dtype uint8"),
        (np.zeros((3, 2), np.uint8), 16, "abc", "sequence of per-vote planes"),
        (torch.zeros(3, 2, dtype=torch.int8), 16, None, "dtype uint8"),
    ],
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_global_majority_rejects_bad_input(
    planes: object, count: object, abstain: object, message: str, kernel: str
):
    with pytest.raises(ValueError, match=message):
        global_majority(planes, count, abstain, kernel=kernel)  # type: ignore[call-overload]


@pytest.mark.parametrize("kernel", ["numpy", "cuda", "", 1])
def test_unknown_kernel_is_rejected(kernel: object):
    planes = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="kernel must be None, 'numba' or 'reference'"):
        global_majority(planes, 16, kernel=kernel)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="kernel must be None, 'numba' or 'reference'"):
        packed_agreement(planes, None, np.ones(16, np.int8), kernel=kernel)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- agreement


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    count=st.integers(1, 120),
    abstain_mode=st.sampled_from(["none", "all", "mixed", "matrix"]),
    reference_bytes=st.sampled_from([1, 3, 1 << 15]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_agreement_matches_unpacked_definition(
    kernel: str, n: int, count: int, abstain_mode: str, reference_bytes: int, seed: int
):
    rng = np.random.default_rng(seed)
    votes, planes, abstain_list = random_votes(
        rng, n, count, "all" if abstain_mode == "matrix" else abstain_mode
    )
    abstain: object = abstain_list
    if abstain_mode == "matrix":
        abstain = np.stack([a if a is not None else np.zeros_like(planes[0]) for a in abstain_list])
    result = rng.integers(-1, 2, size=count).astype(np.int8)
    with small_blocks(8 * 1024, reference_bytes):
        agreement = packed_agreement(planes, abstain, result, kernel=kernel)  # type: ignore[arg-type]
        elected = global_majority(planes, count, abstain, kernel=kernel)  # type: ignore[arg-type]
        elected_agreement = packed_agreement(planes, abstain, elected, kernel=kernel)  # type: ignore[arg-type]
    assert agreement.dtype == np.float64 and agreement.shape == (n,)
    np.testing.assert_allclose(agreement, (votes == result).mean(axis=1))
    np.testing.assert_allclose(elected_agreement, (votes == reference_majority(votes)).mean(axis=1))


def test_packed_agreement_torch_result_and_many_voters():
    rng = np.random.default_rng(12)
    votes, planes, abstain = random_votes(rng, voting.NUMBA_MAX_VOTES + 2, 75, "mixed")
    result = torch.from_numpy(rng.integers(-1, 2, size=75).astype(np.int8))
    expected = (votes == result.numpy()).mean(axis=1)
    for kernel in KERNELS:
        np.testing.assert_allclose(
            packed_agreement(planes, abstain, result, kernel=kernel), expected
        )


def test_packed_agreement_rejects_bad_result():
    planes = np.zeros((2, 1), np.uint8)
    with pytest.raises(ValueError, match="at least one coordinate"):
        packed_agreement(planes, None, np.zeros(0, np.int8))
    with pytest.raises(ValueError, match="integer dtype"):
        packed_agreement(planes, None, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="only contain"):
        packed_agreement(planes, None, np.full(8, 2, np.int8))
    with pytest.raises(ValueError, match="1-D"):
        packed_agreement(planes, None, np.zeros((1, 8), np.int8))
    with pytest.raises(ValueError, match="needs ceil"):
        packed_agreement(planes, None, np.zeros(9, np.int8))
