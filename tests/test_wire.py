import zlib

import numpy as np
import pytest
import torch

from fl_election.voting import unpack_signs
from fl_election.wire import decode_vote, encode_vote


def roundtrip(vote):
    arrays = encode_vote(vote)
    signs, abstain = decode_vote(arrays, len(vote))
    return arrays, unpack_signs(signs, len(vote), abstain)


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1000, 26122])
def test_roundtrip_without_zeros_sends_one_plane(count):
    vote = np.random.default_rng(count).choice([-1, 1], size=count).astype(np.int8)
    arrays, back = roundtrip(vote)
    assert set(arrays) == {"signs"}
    np.testing.assert_array_equal(back, vote)


def test_structured_abstentions_travel_compressed_and_random_ties_plain():
    rng = np.random.default_rng(0)
    structured = rng.choice([-1, 1], size=26112).astype(np.int8)
    structured[::64] = 0  # the same weights abstain in every vote (blank pixels)
    arrays, back = roundtrip(structured)
    assert set(arrays) == {"signs", "abstain-zlib"}
    assert arrays["abstain-zlib"].nbytes < arrays["signs"].nbytes / 8
    np.testing.assert_array_equal(back, structured)
    ties = rng.choice([-1, 0, 1], size=26112).astype(np.int8)
    arrays, back = roundtrip(ties)
    assert set(arrays) == {"signs", "abstain"}
    np.testing.assert_array_equal(back, ties)


def test_torch_votes_encode_like_numpy():
    vote = np.array([1, 0, -1, 1, 0], dtype=np.int8)
    a, b = encode_vote(vote), encode_vote(torch.from_numpy(vote))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def good(count=20):
    return encode_vote(np.array([1, -1, 0, 0] * (count // 4), dtype=np.int8))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "no 'signs' plane"),
        ({"signs": np.zeros(3, np.uint8), "extra": np.zeros(1, np.uint8)}, "unexpected arrays"),
        ({"signs": np.zeros(3, np.float32)}, "must be uint8 of shape (3,)"),
        ({"signs": np.zeros(4, np.uint8)}, "must be uint8 of shape (3,)"),
        (
            {
                "signs": np.zeros(3, np.uint8),
                "abstain": np.zeros(3, np.uint8),
                "abstain-zlib": np.zeros(3, np.uint8),
            },
            "both",
        ),  # fmt: skip
        ({"signs": np.zeros(3, np.uint8), "abstain-zlib": np.zeros(5, np.uint8)}, "not valid zlib"),
        (
            {
                "signs": np.zeros(3, np.uint8),
                "abstain-zlib": np.frombuffer(zlib.compress(b"\x00" * 1_000_000), np.uint8),
            },
            "longer than the plane",
        ),
        (
            {
                "signs": np.zeros(3, np.uint8),
                "abstain-zlib": np.frombuffer(zlib.compress(b"\x00" * 3) + b"junk", np.uint8),
            },
            "after the end",
        ),  # fmt: skip
        (
            {
                "signs": np.zeros(3, np.uint8),
                "abstain-zlib": np.frombuffer(zlib.compress(b"\x00" * 2), np.uint8),
            },
            "exactly 3 bytes",
        ),  # fmt: skip
    ],
)
def test_malformed_votes_are_refused_with_a_reason(arrays, message):
    with pytest.raises(ValueError) as err:
        decode_vote(arrays, 20)
    assert message in str(err.value)


def test_good_vote_decodes():
    signs, abstain = decode_vote(good(), 20)
    np.testing.assert_array_equal(
        unpack_signs(signs, 20, abstain), np.array([1, -1, 0, 0] * 5, dtype=np.int8)
    )
