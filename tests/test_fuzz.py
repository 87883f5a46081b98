"""Fuzz: no reply a client can send crashes or steers the server (fixed seed, fast suite).

Each round a strategy receives valid votes mixed with malformed replies of many kinds; a
twin strategy receives the valid votes only. No exception may escape, no malformed reply
may be counted, the two must produce the bit-identical model, and peak memory stays
bounded even for decompression bombs and oversized arrays.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable
from uuid import uuid4

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_election import contract
from fl_election.codes import uncoded
from fl_election.strategies import ElectionCoding, FullGradientMedian
from fl_election.voting import pack_signs

N = 30
ROUNDS = 40
VALID_PER_ROUND = 16
D = 1000
BUFFERS = {"bn.running_mean": (16,), "bn.running_var": (16,)}


class Grid:
    def get_node_ids(self):  # noqa: D102
        return list(range(101, N + 101))  # node id 1 is Flower's SuperLink


def model(with_buffers: bool) -> ArrayRecord:
    arrays = ArrayRecord({"w": Array(np.linspace(-1, 1, D).astype(np.float32))})
    if with_buffers:
        for key, shape in BUFFERS.items():
            arrays[key] = Array(np.ones(shape, dtype=np.float32))
    arrays["bn.num_batches_tracked"] = Array(np.zeros((), dtype=np.int64))
    return arrays


def reply(to: Message, vote: dict[str, Array], metrics=None, buffers=None, extra=None) -> Message:
    content = RecordDict(
        {
            contract.VOTE: ArrayRecord(vote),
            contract.METRICS: MetricRecord(
                metrics
                if metrics is not None
                else {contract.METRIC_NUM_COORDINATES: D, contract.METRIC_TRAIN_LOSS: 0.5}
            ),
        }
    )
    if buffers is not None:
        content[contract.BUFFERS] = ArrayRecord(buffers)
    for key, record in (extra or {}).items():
        content[key] = record
    message = Message(content=content, reply_to=to)
    message.metadata.__dict__["_message_id"] = str(uuid4())
    return message


def good_buffers(rng) -> dict[str, Array]:
    return {k: Array(rng.random(s).astype(np.float32)) for k, s in BUFFERS.items()}


def valid_vote(rng) -> dict[str, Array]:
    vote = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=D, p=[0.45, 0.1, 0.45])
    signs, abstain = pack_signs(vote)
    arrays = {"signs": Array(signs)}
    if abstain is not None:
        arrays["abstain"] = Array(abstain)
    return arrays


def raw(dtype: str, shape: tuple[int, ...], data: bytes, stype: str = "numpy.ndarray") -> Array:
    return Array(dtype=dtype, shape=shape, stype=stype, data=data)


PLANE = (D + 7) // 8


def malformed_kinds(
    with_buffers: bool,
) -> dict[str, Callable[[Message, np.random.Generator], Message]]:
    def ok_buffers(rng):
        return good_buffers(rng) if with_buffers else None

    def vote_of(arrays):
        return lambda to, rng: reply(to, arrays(rng), buffers=ok_buffers(rng))

    def signs():
        return Array(np.zeros(PLANE, dtype=np.uint8))

    def bomb(rng):
        # 64 MiB of zeros in ~64 KiB: decompression must stop at the plane's size
        return np.frombuffer(zlib.compress(bytes(64 << 20), 9), dtype=np.uint8).copy()

    kinds: dict[str, Callable[[Message, np.random.Generator], Message]] = {
        "error": lambda to, rng: Message(Error(code=1, reason="boom"), reply_to=to),
        "error-control-chars": lambda to, rng: Message(
            Error(code=2, reason="a\nb\x1b[31mred\x00" * 50), reply_to=to
        ),
        "contract-error": lambda to, rng: Message(
            Error(code=contract.CONTRACT_ERROR_CODE, reason="mismatch"), reply_to=to
        ),
        "no-vote-record": lambda to, rng: Message(
            RecordDict({contract.METRICS: MetricRecord({"x": 1})}), reply_to=to
        ),
        "empty-vote": vote_of(lambda rng: {}),
        "signs-float32": vote_of(lambda rng: {"signs": Array(np.zeros(PLANE, np.float32))}),
        "signs-short": vote_of(lambda rng: {"signs": Array(np.zeros(PLANE - 1, np.uint8))}),
        "signs-long": vote_of(lambda rng: {"signs": Array(np.zeros(PLANE + 1, np.uint8))}),
        "signs-huge": vote_of(lambda rng: {"signs": Array(np.zeros(8 << 20, np.uint8))}),
        "signs-2d": vote_of(lambda rng: {"signs": Array(np.zeros((1, PLANE), np.uint8))}),
        "signs-empty": vote_of(lambda rng: {"signs": Array(np.zeros(0, np.uint8))}),
        "signs-garbage-npy": vote_of(lambda rng: {"signs": raw("uint8", (PLANE,), b"\x93NUMPY")}),
        "signs-string-dtype": vote_of(lambda rng: {"signs": raw("<U4", (PLANE,), b"abcd")}),
        "signs-torch-stype": vote_of(
            lambda rng: {"signs": raw("uint8", (PLANE,), b"x", "torch.Tensor")}
        ),
        "unknown-array": vote_of(
            lambda rng: {"signs": signs(), "gradient": Array(np.zeros(D, np.float32))}
        ),
        "both-abstain-forms": vote_of(
            lambda rng: {
                "signs": signs(),
                "abstain": Array(np.zeros(PLANE, np.uint8)),
                "abstain-zlib": Array(np.frombuffer(zlib.compress(bytes(PLANE)), np.uint8).copy()),
            }
        ),
        "abstain-short": vote_of(
            lambda rng: {"signs": signs(), "abstain": Array(np.zeros(3, np.uint8))}
        ),
        "zlib-garbage": vote_of(
            lambda rng: {
                "signs": signs(),
                "abstain-zlib": Array(rng.integers(0, 256, 40, dtype=np.uint8)),
            }
        ),
        "zlib-trailing-data": vote_of(
            lambda rng: {
                "signs": signs(),
                "abstain-zlib": Array(
                    np.frombuffer(zlib.compress(bytes(PLANE)) + b"junk", np.uint8).copy()
                ),
            }
        ),
        "zlib-wrong-size": vote_of(
            lambda rng: {
                "signs": signs(),
                "abstain-zlib": Array(
                    np.frombuffer(zlib.compress(bytes(PLANE - 5)), np.uint8).copy()
                ),
            }
        ),
        "zlib-bomb": vote_of(lambda rng: {"signs": signs(), "abstain-zlib": Array(bomb(rng))}),
        "zlib-float": vote_of(
            lambda rng: {"signs": signs(), "abstain-zlib": Array(np.zeros(4, np.float32))}
        ),
        "metrics-missing-length": lambda to, rng: reply(
            to, valid_vote(rng), metrics={"train-loss": 1.0}, buffers=ok_buffers(rng)
        ),
        "metrics-wrong-length": lambda to, rng: reply(
            to,
            valid_vote(rng),
            metrics={contract.METRIC_NUM_COORDINATES: D + 1},
            buffers=ok_buffers(rng),
        ),
        "metrics-length-2**64": lambda to, rng: reply(
            to,
            valid_vote(rng),
            metrics={contract.METRIC_NUM_COORDINATES: 2**64 + D},
            buffers=ok_buffers(rng),
        ),
        "metrics-length-fraction": lambda to, rng: reply(
            to,
            valid_vote(rng),
            metrics={contract.METRIC_NUM_COORDINATES: D + 0.5},
            buffers=ok_buffers(rng),
        ),
        "metrics-length-list": lambda to, rng: reply(
            to,
            valid_vote(rng),
            metrics={contract.METRIC_NUM_COORDINATES: [D]},
            buffers=ok_buffers(rng),
        ),
        "metrics-huge-int-loss-and-no-length": lambda to, rng: reply(
            to, valid_vote(rng), metrics={"train-loss": 10**30}, buffers=ok_buffers(rng)
        ),
    }
    if with_buffers:

        def buf(update):
            def build(to, rng):
                buffers = good_buffers(rng)
                update(buffers, rng)
                return reply(to, valid_vote(rng), buffers=buffers)

            return build

        kinds.update(
            {
                "buffers-missing": lambda to, rng: reply(to, valid_vote(rng)),
                "buffer-key-missing": buf(lambda b, rng: b.pop("bn.running_var")),
                "buffer-wrong-shape": buf(
                    lambda b, rng: b.update({"bn.running_mean": Array(np.ones(15, np.float32))})
                ),
                "buffer-nan": buf(
                    lambda b, rng: b.update(
                        {"bn.running_mean": Array(np.full(16, np.nan, np.float32))}
                    )
                ),
                "buffer-1e300": buf(
                    lambda b, rng: b.update({"bn.running_mean": Array(np.full(16, 1e300))})
                ),
                "buffer-complex": buf(
                    lambda b, rng: b.update({"bn.running_mean": Array(np.ones(16, np.complex64))})
                ),
                "buffer-int": buf(
                    lambda b, rng: b.update({"bn.running_mean": Array(np.ones(16, np.int32))})
                ),
                "buffer-garbage-npy": buf(
                    lambda b, rng: b.update(
                        {"bn.running_mean": raw("float32", (16,), b"\x00" * 64)}
                    )
                ),
                "buffer-string": buf(
                    lambda b, rng: b.update({"bn.running_var": raw("<U3", (16,), b"abc")})
                ),
                "buffer-huge": buf(
                    lambda b, rng: b.update(
                        {"bn.running_var": raw("float32", (16,), bytes(1 << 22))}
                    )
                ),
            }
        )
    return kinds


def run_fuzz(with_buffers: bool, seed: int) -> tuple[Counter[str], int, int]:
    rng = np.random.default_rng(seed)
    kinds = malformed_kinds(with_buffers)
    keys = sorted(kinds)
    # The N - VALID_PER_ROUND malformed replies per round are within the fault budget
    # (b + c < N/2), so every round is applied; the resync limit is not what is fuzzed.
    settings = dict(
        lr=0.01, trainable_keys=["w"], crash_budget=N - VALID_PER_ROUND, max_resyncs=10**6
    )
    fuzzed = ElectionCoding(uncoded(N), **settings)
    twin = ElectionCoding(uncoded(N), **settings)
    arrays_a = arrays_b = model(with_buffers)
    used: Counter[str] = Counter()
    malformed_total = 0
    peak = 0
    for server_round in range(1, ROUNDS + 1):
        sent = {
            m.metadata.dst_node_id: m
            for m in fuzzed.configure_train(server_round, arrays_a, ConfigRecord(), Grid())
        }
        twin_sent = {
            m.metadata.dst_node_id: m
            for m in twin.configure_train(server_round, arrays_b, ConfigRecord(), Grid())
        }
        for m in list(sent.values()) + list(twin_sent.values()):
            m.metadata.__dict__["_message_id"] = str(uuid4())
        nodes = rng.permutation(list(sent))
        valid_nodes = nodes[:VALID_PER_ROUND]
        bad_nodes = nodes[VALID_PER_ROUND:]
        replies, twin_replies = [], []
        for node in valid_nodes:
            vote = valid_vote(rng)
            buffers = good_buffers(rng) if with_buffers else None
            loss = float(rng.choice([0.5, 1.7e308]))  # a minority may poison a metric
            metrics = {contract.METRIC_NUM_COORDINATES: D, contract.METRIC_TRAIN_LOSS: loss}
            replies.append(reply(sent[node], vote, metrics=metrics, buffers=buffers))
            twin_replies.append(reply(twin_sent[node], vote, metrics=metrics, buffers=buffers))
        for node in bad_nodes:
            kind = keys[int(rng.integers(len(keys)))]
            used[kind] += 1
            replies.append(kinds[kind](sent[node], rng))
        # a second reply from a valid node, and one from a node that was never asked
        replies.append(reply(sent[valid_nodes[0]], valid_vote(rng)))
        stranger = reply(sent[valid_nodes[1]], valid_vote(rng))
        stranger.metadata.__dict__["_src_node_id"] = 10_000
        replies.append(stranger)
        used["duplicate"] += 1
        used["unexpected"] += 1
        malformed_total += len(bad_nodes) + 2
        order = rng.permutation(len(replies) - 2)
        replies = [replies[i] for i in order] + replies[-2:]

        if server_round == 1:  # the first election compiles the voting kernel (numba)
            new_a, metrics_a = fuzzed.aggregate_train(server_round, replies)
        else:
            tracemalloc.start()
            new_a, metrics_a = fuzzed.aggregate_train(server_round, replies)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        new_b, metrics_b = twin.aggregate_train(server_round, twin_replies)
        assert metrics_a["valid-votes"] == VALID_PER_ROUND == metrics_b["valid-votes"]
        assert metrics_a["rejected-replies"] == len(bad_nodes) + 2
        assert np.isfinite(metrics_a["train-loss"]) and metrics_a["train-loss"] < 1e300
        for key in new_b.keys():
            np.testing.assert_array_equal(new_a[key].numpy(), new_b[key].numpy())
        for audit in fuzzed.audit[-1].rejected:
            assert "\n" not in audit["reason"] and "\x1b" not in audit["reason"]
        arrays_a, arrays_b = new_a, new_b
    return used, malformed_total, peak


def test_fuzzed_replies_never_escape_never_count_and_never_steer_the_vote():
    used_plain, total_plain, peak_plain = run_fuzz(with_buffers=False, seed=1)
    used_bn, total_bn, peak_bn = run_fuzz(with_buffers=True, seed=2)
    kinds = set(used_plain) | set(used_bn)
    assert len(kinds) >= 30, sorted(kinds)
    assert total_plain + total_bn >= 1000
    # bombs of 64 MiB and arrays of 4-8 MiB never get decoded: the peak stays small
    assert max(peak_plain, peak_bn) < 4 << 20, (peak_plain, peak_bn)


def test_fgm_rejects_what_is_not_a_finite_float32_gradient():
    strategy = FullGradientMedian(3, trainable_keys=["w"])
    arrays = model(False)
    sent = {
        m.metadata.dst_node_id: m
        for m in strategy.configure_train(1, arrays, ConfigRecord(), Grid3())
    }
    for m in sent.values():
        m.metadata.__dict__["_message_id"] = str(uuid4())
    good = reply(sent[101], {"gradient": Array(np.ones(D, np.float32))})
    bad = [
        reply(sent[102], {"gradient": Array(np.full(D, 1e300))}),
        reply(sent[103], {"gradient": raw("float32", (D,), bytes(1 << 22))}),
    ]
    _, metrics = strategy.aggregate_train(1, [good, *bad])
    assert metrics["valid-votes"] == 1 and metrics["rejected-replies"] == 2


class Grid3:
    def get_node_ids(self):  # noqa: D102
        return [101, 102, 103]
