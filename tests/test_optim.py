from __future__ import annotations

import numpy as np
import pytest

from fl_election.optim import SignMomentumSGD, flatten_arrays, step_lr, unflatten_arrays


def test_two_steps_match_hand_computation() -> None:
    # d = v + wd * w; buf = m * buf + d; w = w - lr * buf, with m = 0.9, wd = 0.1, lr = 0.5.
    opt = SignMomentumSGD(momentum=0.9, weight_decay=0.1)
    w0 = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    w1 = opt.step(w0, np.array([1, -1, 0], dtype=np.int8), lr=0.5)
    # d1 = [1.1, -1.2, 0.05] = buf1; w1 = w0 - 0.5 * buf1
    np.testing.assert_allclose(w1, [0.45, -1.4, 0.475], rtol=1e-6)
    assert opt.buf is not None
    np.testing.assert_allclose(opt.buf, [1.1, -1.2, 0.05], rtol=1e-6)
    w2 = opt.step(w1, np.array([-1, -1, 1], dtype=np.int8), lr=0.5)
    # d2 = [-0.955, -1.14, 1.0475]; buf2 = 0.9 * buf1 + d2 = [0.035, -2.22, 1.0925]
    np.testing.assert_allclose(opt.buf, [0.035, -2.22, 1.0925], rtol=1e-5)
    np.testing.assert_allclose(w2, [0.4325, -0.29, -0.07125], rtol=1e-5)
    assert w2.dtype == np.float32
    # The input is not modified.
    np.testing.assert_array_equal(w0, [1.0, -2.0, 0.5])


def test_median_direction_and_no_momentum_is_plain_sgd() -> None:
    opt = SignMomentumSGD(momentum=0.0, weight_decay=0.0)
    w = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    g = np.array([[0.5, -0.25], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(opt.step(w, g, lr=0.1), w - 0.1 * g, rtol=1e-6)


@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(-0.1, 0.0), (1.0, 0.0), (0.9, -1e-4), (0.9, float("nan"))]
)
def test_constructor_validates(momentum: float, weight_decay: float) -> None:
    with pytest.raises(ValueError):
        SignMomentumSGD(momentum, weight_decay)


def test_step_validates() -> None:
    opt = SignMomentumSGD()
    w = np.zeros(3, np.float32)
    for lr in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr"):
            opt.step(w, np.ones(3), lr)
    with pytest.raises(ValueError, match="shape"):
        opt.step(w, np.ones(4), 0.1)
    opt.step(w, np.ones(3), 0.1)
    with pytest.raises(ValueError, match="momentum buffer"):
        opt.step(np.zeros(4, np.float32), np.ones(4), 0.1)


def test_state_dict_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(5).astype(np.float32)
    votes = np.sign(rng.standard_normal((4, 5))).astype(np.float32)
    reference = SignMomentumSGD(0.8, 1e-3)
    w_ref = reference.step(w, votes[0], 0.01)
    state = reference.state_dict()
    restored = SignMomentumSGD()
    restored.load_state_dict(state)
    assert restored.momentum == 0.8 and restored.weight_decay == 1e-3
    w_res = w_ref.copy()
    for vote in votes[1:]:
        w_ref = reference.step(w_ref, vote, 0.01)
        w_res = restored.step(w_res, vote, 0.01)
    np.testing.assert_array_equal(w_ref, w_res)
    # The saved state is a copy, not the live buffer.
    assert not np.array_equal(state["buf"], reference.buf)
    assert SignMomentumSGD().state_dict()["buf"] is None
    with pytest.raises(ValueError, match="missing"):
        restored.load_state_dict({"momentum": 0.9})
    with pytest.raises(ValueError):
        restored.load_state_dict({"momentum": 2.0, "weight_decay": 0.0, "buf": None})


def test_step_lr() -> None:
    assert step_lr(0, 0.1) == pytest.approx(0.1)
    assert step_lr(99, 0.1, (100, 200)) == pytest.approx(0.1)
    assert step_lr(100, 0.1, (100, 200)) == pytest.approx(0.01)
    assert step_lr(250, 0.1, (100, 200)) == pytest.approx(0.001)
    assert step_lr(250, 0.1, (200, 100), gamma=0.5) == pytest.approx(0.025)
    for bad in ({"step": -1}, {"base_lr": 0.0}, {"gamma": 0.0}, {"milestones": (-5,)}):
        args: dict[str, object] = {"step": 1, "base_lr": 0.1, "milestones": (), "gamma": 0.1}
        args.update(bad)
        with pytest.raises(ValueError):
            step_lr(**args)  # type: ignore[arg-type]


def test_flatten_unflatten_round_trip() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in [(3, 4), (4,), (2, 1, 3), ()]]
    flat = flatten_arrays(arrays)
    assert flat.dtype == np.float32 and flat.shape == (12 + 4 + 6 + 1,)
    back = unflatten_arrays(flat, [a.shape for a in arrays])
    for original, restored in zip(arrays, back, strict=True):
        assert restored.shape == original.shape and restored.dtype == np.float32
        np.testing.assert_allclose(restored, original, rtol=1e-6)
    back[0][...] = 0  # copies, not views
    assert flat[0] != 0 or arrays[0].flat[0] == 0
    assert flatten_arrays([]).shape == (0,)
    with pytest.raises(ValueError, match="values"):
        unflatten_arrays(flat, [(3, 4)])
    with pytest.raises(ValueError, match="1-D"):
        unflatten_arrays(flat.reshape(1, -1), [(23,)])
