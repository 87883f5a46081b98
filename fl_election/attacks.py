"""Byzantine attacks on SignSGD with majority vote, expressed on sign votes.

Each attack is a small frozen dataclass (in the style of ByzFL's ``attacks.py``) whose
:meth:`SignAttack.forge` turns a worker's honest vote into the vote a Byzantine worker sends.
Attacks that act elsewhere in the pipeline (on the data, on the gradient, on the reply itself)
say so through class-level flags, and the module provides the pure functions the client applies
for them (:func:`malform`; label flipping and gradient noise are applied by the client API,
:mod:`fl_election.clients`, where the targets and the gradients live).  A registry
(:data:`ATTACKS`, :func:`create_attack`) builds attacks by name from run-config values.

The attack set follows Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning:
Protecting SignSGD against Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093 (reverse,
directional, random, noisy computation), plus the attacks needed to judge a defence honestly
(omniscient colluding, ALIE and inner-product manipulation mapped to signs, label flipping,
silent and malformed workers).

Votes are int8 vectors in {-1, 0, +1} (0 = abstain).  ``sign_sum`` is the integer vector
``sum_j s_j`` over *all* k partitions (``s_j`` the sign of partition j's gradient), so
``mu = sign(sign_sum)`` is the true majority the server wants to recover.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "ATTACKS",
    "ATTACK_CONFIG_KEYS",
    "MALFORM_KINDS",
    "BYZANTINE_SELECTIONS",
    "AlieAttack",
    "DirectionalAttack",
    "GaussianNoiseAttack",
    "IpmAttack",
    "LabelFlipAttack",
    "MalformedAttack",
    "NoAttack",
    "OmniscientAttack",
    "RandomAttack",
    "ReverseAttack",
    "SignAttack",
    "SilentAttack",
    "alie_z",
    "create_attack",
    "create_attack_from_config",
    "forge_float_gradient",
    "forge_gradient",
    "malform",
    "select_byzantine",
]

Int8Array = npt.NDArray[np.int8]
IntArray = npt.NDArray[np.integer[Any]]

#: Kinds of malformed payload :func:`malform` produces.
MALFORM_KINDS: tuple[str, ...] = ("dtype", "length", "nan", "missing", "garbage")

#: How :func:`select_byzantine` may choose the Byzantine workers.
BYZANTINE_SELECTIONS: tuple[str, ...] = ("random", "explicit", "worst")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_vote(honest_vote: object) -> Int8Array:
    """Return ``honest_vote`` as an int8 vector after checking it is a valid vote."""
    if not isinstance(honest_vote, np.ndarray):
        raise ValueError(f"honest_vote must be a numpy array, got {type(honest_vote).__name__}")
    if honest_vote.ndim != 1:
        raise ValueError(f"honest_vote must be a 1-D vector, got shape {honest_vote.shape}")
    if not np.issubdtype(honest_vote.dtype, np.integer):
        raise ValueError(f"honest_vote must have an integer dtype, got {honest_vote.dtype}")
    if honest_vote.size and (honest_vote.min() < -1 or honest_vote.max() > 1):
        raise ValueError("honest_vote entries must be in {-1, 0, +1}")
    return honest_vote.astype(np.int8, copy=False)


def _check_sign_sum(sign_sum: object, shape: tuple[int, ...]) -> IntArray:
    """Return ``sign_sum`` after checking it is an integer vector of the vote's shape."""
    if sign_sum is None:
        raise ValueError("this attack needs sign_sum (the sum of partition signs); got None")
    if not isinstance(sign_sum, np.ndarray):
        raise ValueError(f"sign_sum must be a numpy array, got {type(sign_sum).__name__}")
    if sign_sum.shape != shape:
        raise ValueError(f"sign_sum has shape {sign_sum.shape}, but honest_vote has shape {shape}")
    if not np.issubdtype(sign_sum.dtype, np.integer):
        raise ValueError(f"sign_sum must have an integer dtype, got {sign_sum.dtype}")
    # int64 so that abs() cannot overflow a narrow dtype (abs(int8(-128)) == -128).
    return sign_sum.astype(np.int64, copy=False)


def _against_majority(sign_sum: IntArray, honest_vote: Int8Array) -> Int8Array:
    """Return ``-mu = -sign(sign_sum)``, or ``-honest_vote`` where ``mu`` is a tie (0).

    A tie in ``mu`` (possible only when k is even or some partition sign is 0) gives the
    adversary no majority to oppose; it then pushes against what this worker would honestly
    send, which is the vote it can most directly cancel.
    """
    mu = np.sign(sign_sum).astype(np.int8)
    return np.where(mu != 0, -mu, -honest_vote).astype(np.int8)


@dataclass(frozen=True)
class SignAttack(ABC):
    """What a Byzantine worker does to its vote.

    Subclasses are frozen dataclasses whose fields are the attack's parameters; the class-level
    flags tell the client where else in its pipeline the attack acts.

    Attributes
    ----------
    name : str
        Registry name of the attack.
    needs_sign_sum : bool
        The attack needs ``sign_sum`` over all k partitions (an omniscient adversary).
    poisons_data : bool
        The attack changes the worker's training targets before the gradient (see
        :meth:`LabelFlipAttack.flip`).
    perturbs_gradient : bool
        The attack adds Gaussian noise of std ``std`` to each partition's gradient before
        the sign.
    drops_reply : bool
        The worker sends no reply at all.
    malforms_reply : bool
        The worker sends a malformed payload (see :func:`malform`).
    """

    name: ClassVar[str] = ""
    needs_sign_sum: ClassVar[bool] = False
    poisons_data: ClassVar[bool] = False
    perturbs_gradient: ClassVar[bool] = False
    drops_reply: ClassVar[bool] = False
    malforms_reply: ClassVar[bool] = False

    def forge(
        self,
        honest_vote: np.ndarray,
        sign_sum: np.ndarray | None,
        rng: np.random.Generator,
    ) -> Int8Array:
        """Return the int8 vote this Byzantine worker sends.

        Parameters
        ----------
        honest_vote : numpy.ndarray
            The worker's honest local majority vote over its own partitions, integer entries in
            {-1, 0, +1}, shape ``(d,)``.
        sign_sum : numpy.ndarray or None
            Integer vector ``sum_j s_j`` over all k partitions, shape ``(d,)``; required when
            :attr:`needs_sign_sum` is true, ignored otherwise.
        rng : numpy.random.Generator
            Randomness for randomised attacks.

        Returns
        -------
        numpy.ndarray
            int8 vote in {-1, 0, +1}, shape ``(d,)``.
        """
        vote = _check_vote(honest_vote)
        if self.needs_sign_sum:
            return self._forge(vote, _check_sign_sum(sign_sum, vote.shape), rng)
        return self._forge(vote, None, rng)

    @abstractmethod
    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        """Forge the vote from the checked honest vote and (if needed) checked ``sign_sum``."""

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Return the float gradient this Byzantine worker sends to a float aggregator.

        The default keeps the magnitudes of the honest gradient and sends the forged signs
        (:func:`forge_gradient`); attacks with a float form of their own (``ipm``,
        ``alie``) override it. Call it through :func:`forge_float_gradient`, which checks
        the inputs.

        Parameters
        ----------
        gradient : numpy.ndarray
            The worker's honest float32 gradient, shape ``(d,)``.
        partition_gradients : numpy.ndarray or None
            Every partition's float gradient, shape ``(k, d)``, when :attr:`needs_sign_sum`
            (an omniscient adversary, whose magnitudes are then the mean over partitions),
            else ``None``.
        rng : numpy.random.Generator
            Randomness for randomised attacks.

        Returns
        -------
        numpy.ndarray
            The float32 gradient to send, shape ``(d,)``.
        """
        sign_sum = None
        if partition_gradients is not None:
            # The omniscient adversary's best estimate of the true gradient's magnitude.
            gradient = partition_gradients.mean(axis=0)
            sign_sum = np.sign(partition_gradients).astype(np.int16).sum(axis=0)
        return forge_gradient(self, gradient, sign_sum, rng)


@dataclass(frozen=True)
class NoAttack(SignAttack):
    """No attack: send the honest vote."""

    name: ClassVar[str] = "none"

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return honest_vote.copy()


@dataclass(frozen=True)
class ReverseAttack(SignAttack):
    """Send the negation of the honest vote (abstentions stay 0); the paper's default attack."""

    name: ClassVar[str] = "reverse"

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return (-honest_vote).astype(np.int8)


@dataclass(frozen=True)
class DirectionalAttack(SignAttack):
    """Send the same sign on every coordinate (the paper's all-ones attack for ``+1``).

    Parameters
    ----------
    direction : int (default: 1)
        The sign sent everywhere, ``+1`` or ``-1``.
    """

    name: ClassVar[str] = "directional"
    direction: int = 1

    def __post_init__(self) -> None:
        if not _is_int(self.direction) or self.direction not in (1, -1):
            raise ValueError(f"directional: direction must be +1 or -1, got {self.direction!r}")

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return np.full(honest_vote.shape, self.direction, dtype=np.int8)


@dataclass(frozen=True)
class RandomAttack(SignAttack):
    """Send uniformly random signs in {-1, +1} (never abstains)."""

    name: ClassVar[str] = "random"

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        bits = rng.integers(0, 2, size=honest_vote.shape, dtype=np.int8)
        return (2 * bits - 1).astype(np.int8)


@dataclass(frozen=True)
class OmniscientAttack(SignAttack):
    """Colluding, all-knowing Byzantines: every one sends ``-mu = -sign(sign_sum)``.

    This is the worst case of the tolerance condition (SPEC section 2).  Where ``mu`` is a tie
    (0) there is no majority to oppose, and the worker sends the opposite of its honest vote.
    """

    name: ClassVar[str] = "omniscient"
    needs_sign_sum: ClassVar[bool] = True

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        assert sign_sum is not None  # forge supplies it when needs_sign_sum
        return _against_majority(sign_sum, honest_vote)


@dataclass(frozen=True)
class IpmAttack(OmniscientAttack):
    """Inner-product manipulation (Xie et al., 2020) mapped to signs.

    In the float world the Byzantines send ``-epsilon * mean(honest gradients)`` with
    ``epsilon > 0`` so that its inner product with the true update is negative.  Its sign is
    ``-sign(mean) = -mu`` whatever ``epsilon`` is, so on sign votes IPM reduces exactly to the
    omniscient attack (ties handled the same way), and ``epsilon`` matters only in the float
    world (:meth:`forge_float`).

    Parameters
    ----------
    epsilon : float (default: 0.1)
        Scale of the float attack, finite and ``> 0``: small (0.1) against robust
        aggregators, which it passes as a plausible update; large (beyond
        ``(n - b) / b``) against the mean, which it reverses.
    """

    name: ClassVar[str] = "ipm"
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if not _is_real(self.epsilon) or not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(f"ipm: epsilon must be a finite number > 0, got {self.epsilon!r}")

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``-epsilon * mean(g_j)`` over all partitions (Xie et al., 2020)."""
        stack = _checked(partition_gradients)
        forged: npt.NDArray[np.float32] = (-self.epsilon * stack.mean(axis=0)).astype(np.float32)
        return forged


def alie_z(num_workers: int, num_byzantine: int) -> float:
    """Return the ``z`` of "A Little Is Enough" (Baruch et al., NeurIPS 2019).

    ALIE picks the largest ``z`` such that the shifted value stays closer to the mean than
    enough honest values to survive a robust aggregator: with
    ``s = floor(n / 2 + 1) - b`` the number of honest workers it needs to "recruit",
    ``z = Phi^{-1}((n - s) / n)``.

    Parameters
    ----------
    num_workers : int
        Number of workers ``n`` (at least 2).
    num_byzantine : int
        Number of Byzantine workers ``b``, ``0 <= b <= n``.

    Returns
    -------
    float
        The ALIE ``z``, clipped at 0 where the formula is negative (few Byzantines).

    Raises
    ------
    ValueError
        If ``b >= floor(n / 2) + 1``: the Byzantines are a majority and ``z`` is unbounded.
    """
    if not _is_int(num_workers) or num_workers < 2:
        raise ValueError(f"num_workers must be an integer >= 2, got {num_workers!r}")
    if not _is_int(num_byzantine) or not 0 <= num_byzantine <= num_workers:
        raise ValueError(
            f"num_byzantine must be an integer in [0, {num_workers}], got {num_byzantine!r}"
        )
    needed = num_workers // 2 + 1 - num_byzantine
    if needed <= 0:
        raise ValueError(
            f"alie_z: b = {num_byzantine} Byzantines are already a majority of n = {num_workers}; "
            "ALIE's z is unbounded"
        )
    quantile = (num_workers - needed) / num_workers
    if quantile <= 0.5:
        return 0.0
    return float(NormalDist().inv_cdf(quantile))


@dataclass(frozen=True)
class AlieAttack(SignAttack):
    """A Little Is Enough (Baruch et al., NeurIPS 2019) mapped to signs.

    ALIE shifts each coordinate by ``z`` standard deviations: enough to swing coordinates
    where honest workers disagree, small enough to look honest.  On signs the swingable
    coordinates are the low-margin ones: if the k partition signs were fair coin flips their sum
    would have standard deviation ``sqrt(k)``, so a coordinate is *low-margin* when
    ``|sign_sum| <= z * sqrt(k)``.  The attack sends ``-mu`` on low-margin coordinates (where a
    few votes can change the result) and ``mu`` elsewhere (agreeing with the honest majority, so
    the worker's vote looks honest on most coordinates).  A tie (``mu = 0``, always low-margin)
    gets the opposite of the honest vote, as in :class:`OmniscientAttack`.  ``z = 0`` flips only
    ties; a large ``z`` flips everything and becomes the omniscient attack.

    Parameters
    ----------
    num_partitions : int
        Number of partitions k that ``sign_sum`` sums over (at least 1).
    z : float (default: 1.0)
        Margin threshold in units of ``sqrt(k)``, finite and ``>= 0``; :func:`alie_z` gives
        ALIE's own choice for given ``(n, b)``.
    """

    name: ClassVar[str] = "alie"
    needs_sign_sum: ClassVar[bool] = True
    num_partitions: int
    z: float = 1.0

    def __post_init__(self) -> None:
        if not _is_int(self.num_partitions) or self.num_partitions < 1:
            raise ValueError(
                f"alie: num_partitions must be an integer >= 1, got {self.num_partitions!r}"
            )
        if not _is_real(self.z) or not math.isfinite(self.z) or self.z < 0:
            raise ValueError(f"alie: z must be a finite number >= 0, got {self.z!r}")

    def low_margin(self, sign_sum: np.ndarray) -> npt.NDArray[np.bool_]:
        """Return the mask of low-margin coordinates, ``|sign_sum| <= z * sqrt(k)``.

        Parameters
        ----------
        sign_sum : numpy.ndarray
            Integer vector of partition-sign sums.

        Returns
        -------
        numpy.ndarray
            Boolean mask of the coordinates this attack flips.
        """
        limit = self.z * math.sqrt(self.num_partitions)
        return np.asarray(np.abs(sign_sum) <= limit)

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        assert sign_sum is not None  # forge supplies it when needs_sign_sum
        if np.abs(sign_sum).max(initial=0) > self.num_partitions:
            raise ValueError(
                f"alie: |sign_sum| exceeds num_partitions = {self.num_partitions}; "
                "sign_sum must sum the signs of exactly num_partitions partitions"
            )
        mu = np.sign(sign_sum).astype(np.int8)
        flipped = _against_majority(sign_sum, honest_vote)
        return np.where(self.low_margin(sign_sum), flipped, mu).astype(np.int8)

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``mean - z * std`` of the partition gradients, per coordinate (ALIE's own form).

        In the float world ``z`` is ALIE's: standard deviations of the honest gradients
        (:func:`alie_z` gives its choice for ``(n, b)``).
        """
        stack = _checked(partition_gradients)
        std = stack.std(axis=0) if stack.shape[0] > 1 else np.zeros(stack.shape[1], np.float32)
        forged: npt.NDArray[np.float32] = (stack.mean(axis=0) - self.z * std).astype(np.float32)
        return forged


@dataclass(frozen=True)
class LabelFlipAttack(SignAttack):
    """Label flipping: the worker trains on flipped targets (:meth:`flip`).

    The poisoning happens before the gradient, so :meth:`forge` returns the (already poisoned)
    honest vote unchanged.
    """

    name: ClassVar[str] = "label-flip"
    poisons_data: ClassVar[bool] = True

    @staticmethod
    def flip(targets: Any, logits: Any) -> Any:
        """Return the flipped targets of one batch, or refuse targets that are not labels.

        Integer class labels with ``C >= 2`` logit columns become ``C - 1 - y``
        (:func:`fl_election.data.flip_labels`); 0/1 targets (float, integer or bool) with a
        single logit per sample become ``1 - y``. Anything else (regression targets, soft
        or one-hot labels, integers other than 0/1 with a single logit) has no flip that
        is not a silent guess: it is refused, and the user supplies the rule
        (``label_flip_fn`` of :func:`fl_election.clients.coded_client_app`).

        Parameters
        ----------
        targets : torch.Tensor
            The batch's targets.
        logits : torch.Tensor
            The model's logits on the batch (only their shape is read).

        Returns
        -------
        torch.Tensor
            The flipped targets (a new tensor, same dtype).

        Raises
        ------
        ContractError
            For targets that are not class labels (the message names the dtype and the fix).
        """
        import torch  # noqa: PLC0415 (the server side of attacks needs no torch)

        from fl_election.contract import ContractError  # noqa: PLC0415
        from fl_election.data import flip_labels  # noqa: PLC0415

        classes = int(logits.shape[-1]) if logits.ndim >= 2 else 1
        binary = classes < 2 and (logits.ndim <= 1 or logits.shape[-1] == 1)
        if targets.dtype == torch.bool and binary:
            return ~targets
        zero_one = bool(((targets == 0) | (targets == 1)).all())
        if binary and zero_one and not targets.dtype.is_complex:
            return 1 - targets
        if classes >= 2 and not (
            targets.dtype.is_floating_point
            or targets.dtype.is_complex
            or targets.dtype == torch.bool
        ):
            try:
                return flip_labels(targets, classes)
            except ValueError as error:  # labels outside [0, C)
                raise ContractError(
                    f"label-flip: {error} (the model has {classes} logit columns): pass your "
                    "flip rule, label_flip_fn=lambda targets, logits: ..., to coded_client_app "
                    "/ coded_train"
                ) from error
        cause = (
            f"{classes} logit columns need integer class labels"
            if classes >= 2
            else "a single logit needs 0/1 targets"
        )
        raise ContractError(
            f"label-flip cannot flip targets of dtype {targets.dtype} and shape "
            f"{tuple(targets.shape)} ({cause}; regression or soft targets have no flip): "
            "pass your flip rule, label_flip_fn=lambda targets, logits: ..., to "
            "coded_client_app / coded_train"
        )

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return honest_vote.copy()


@dataclass(frozen=True)
class GaussianNoiseAttack(SignAttack):
    """Noisy computation: Gaussian noise on every partition's gradient before the sign.

    The client API adds the noise to each partition gradient, so :meth:`forge` returns
    the honest vote unchanged.

    Parameters
    ----------
    std : float (default: 1e-4)
        Noise standard deviation, finite and ``>= 0``.
    """

    name: ClassVar[str] = "gaussian-noise"
    perturbs_gradient: ClassVar[bool] = True
    std: float = 1e-4

    def __post_init__(self) -> None:
        if not _is_real(self.std) or not math.isfinite(self.std) or self.std < 0:
            raise ValueError(f"gaussian-noise: std must be a finite number >= 0, got {self.std!r}")

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return honest_vote.copy()


@dataclass(frozen=True)
class SilentAttack(SignAttack):
    """Silent / dropped-out worker: sends no reply (the client drops it).

    :meth:`forge` returns the honest vote, the one the worker would have sent.
    """

    name: ClassVar[str] = "silent"
    drops_reply: ClassVar[bool] = True

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return honest_vote.copy()


def malform(packed: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """Return a malformed version of a packed vote payload.

    Parameters
    ----------
    packed : numpy.ndarray
        The well-formed payload: a 1-D uint8 array (bit-packed vote), at least 1 byte.
    kind : str
        One of :data:`MALFORM_KINDS`:

        - ``"dtype"``: the same values as float32 instead of uint8;
        - ``"length"``: the payload truncated by one byte;
        - ``"nan"``: a float32 array of the right length with one NaN entry;
        - ``"missing"``: ``None`` (the key is absent from the reply);
        - ``"garbage"``: random uint8 bytes of a wrong (longer) length.
    rng : numpy.random.Generator
        Randomness for the NaN position and the garbage bytes.

    Returns
    -------
    numpy.ndarray or None
        The bad payload, or ``None`` for ``"missing"``.
    """
    if kind not in MALFORM_KINDS:
        raise ValueError(f"unknown malform kind {kind!r}; valid kinds: {', '.join(MALFORM_KINDS)}")
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError("packed must be a 1-D uint8 numpy array")
    if packed.size == 0:
        raise ValueError("packed must hold at least one byte")
    if kind == "missing":
        return None
    if kind == "dtype":
        return packed.astype(np.float32)
    if kind == "length":
        return packed[:-1].copy()
    if kind == "nan":
        bad = packed.astype(np.float32)
        bad[rng.integers(packed.size)] = np.nan
        return bad
    # "garbage": at least one byte too many, so a length check always catches it.
    length = packed.size + 1 + int(rng.integers(packed.size + 1))
    return rng.integers(0, 256, size=length, dtype=np.uint8)


@dataclass(frozen=True)
class MalformedAttack(SignAttack):
    """Malformed payload: the Byzantine mod replaces the encoded vote by :func:`malform`.

    Parameters
    ----------
    kind : str (default: "garbage")
        Which malformation, one of :data:`MALFORM_KINDS` (see :func:`malform`).
    """

    name: ClassVar[str] = "malformed"
    malforms_reply: ClassVar[bool] = True
    kind: str = "garbage"

    def __post_init__(self) -> None:
        if self.kind not in MALFORM_KINDS:
            raise ValueError(
                f"malformed: kind must be one of {', '.join(MALFORM_KINDS)}, got {self.kind!r}"
            )

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        return honest_vote.copy()


def forge_gradient(
    attack: SignAttack,
    gradient: np.ndarray,
    sign_sum: np.ndarray | None,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Map a sign attack to the float world of the FGM baseline.

    The Byzantine worker keeps the magnitudes of its honest gradient and sends the forged
    signs: ``forge(sign(g)) * |g|``. For ``reverse`` this is exactly ``-g``, what the
    paper's Byzantine workers send to the coordinate-wise median (Fig. A.4c); for
    ``omniscient`` with ``g`` the mean gradient over all partitions it is ``-|g| mu``.

    Parameters
    ----------
    attack : SignAttack
        The attack.
    gradient : numpy.ndarray
        The worker's honest float gradient, shape ``(d,)``.
    sign_sum : numpy.ndarray or None
        ``sum_j sign(g_j)`` over all partitions, for attacks that need it.
    rng : numpy.random.Generator
        Randomness for randomised attacks.

    Returns
    -------
    numpy.ndarray
        The float32 gradient to send.
    """
    g = np.asarray(gradient, dtype=np.float32)
    if g.ndim != 1 or not np.all(np.isfinite(g)):
        raise ValueError("gradient must be a finite 1-D float array")
    forged = attack.forge(np.sign(g).astype(np.int8), sign_sum, rng)
    return (forged.astype(np.float32) * np.abs(g)).astype(np.float32)


def forge_float_gradient(
    attack: SignAttack,
    gradient: np.ndarray,
    partition_gradients: np.ndarray | None,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Return the float gradient a Byzantine worker sends to a float aggregator.

    The float-space attacks of the head-to-head with Flower's strategies (FedAvg, Krum,
    Bulyan, ...): ``reverse`` sends ``-g``, ``omniscient`` the colluding ``-|g_mean| mu``
    (:func:`forge_gradient`), ``ipm`` ``-epsilon * g_mean``, ``alie`` ``g_mean - z * std``,
    every Byzantine the same vector where the attack is omniscient. Label flipping and
    Gaussian noise act before this (the client API applies them to the gradient).

    Parameters
    ----------
    attack : SignAttack
        The attack.
    gradient : numpy.ndarray
        The worker's honest float gradient, shape ``(d,)``.
    partition_gradients : numpy.ndarray or None
        Every partition's float gradient, shape ``(k, d)``; required when
        ``attack.needs_sign_sum``.
    rng : numpy.random.Generator
        Randomness for randomised attacks.

    Returns
    -------
    numpy.ndarray
        The float32 gradient to send, shape ``(d,)``.
    """
    g = np.asarray(gradient, dtype=np.float32)
    if g.ndim != 1 or not np.all(np.isfinite(g)):
        raise ValueError("gradient must be a finite 1-D float array")
    stack = None
    if attack.needs_sign_sum:
        stack = _partition_stack(partition_gradients, attack.name)
        if stack.shape[1] != g.shape[0]:
            raise ValueError(
                f"{attack.name}: partition gradients have {stack.shape[1]} coordinates, the "
                f"gradient {g.shape[0]}"
            )
    return attack.forge_float(g, stack, rng)


def _partition_stack(partition_gradients: np.ndarray | None, name: str) -> npt.NDArray[np.float32]:
    if partition_gradients is None:
        raise ValueError(f"{name}: the float attack needs every partition's gradient")
    stack = np.asarray(partition_gradients, dtype=np.float32)
    if stack.ndim != 2 or stack.shape[0] < 1 or not np.all(np.isfinite(stack)):
        raise ValueError(f"{name}: partition gradients must be a finite (k, d) array, k >= 1")
    return stack


def _checked(partition_gradients: np.ndarray | None) -> npt.NDArray[np.float32]:
    """Return the stack :func:`forge_float_gradient` has already checked."""
    assert partition_gradients is not None  # forge_float_gradient supplies it
    return partition_gradients


#: Registry of attacks by name.
ATTACKS: dict[str, type[SignAttack]] = {
    cls.name: cls
    for cls in (
        NoAttack,
        ReverseAttack,
        DirectionalAttack,
        RandomAttack,
        OmniscientAttack,
        IpmAttack,
        AlieAttack,
        LabelFlipAttack,
        GaussianNoiseAttack,
        SilentAttack,
        MalformedAttack,
    )
}


def create_attack(name: str, **params: Any) -> SignAttack:
    """Build an attack from its registry name and parameters.

    Parameters
    ----------
    name : str
        Registry name, one of :data:`ATTACKS` (case-insensitive; ``_`` is read as ``-``).
    **params : Any
        The attack's parameters (its dataclass fields), e.g. ``direction=-1`` or ``z=1.5``.

    Returns
    -------
    SignAttack
        The attack.

    Raises
    ------
    ValueError
        On an unknown name (the message lists the valid ones), an unknown or missing
        parameter, or a bad parameter value.
    """
    if not isinstance(name, str):
        raise ValueError(f"attack name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[key]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        accepted = ", ".join(fields) if fields else "none"
        raise ValueError(
            f"attack {key!r} got unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    missing = sorted(
        f.name
        for f in fields.values()
        if f.name not in params
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"attack {key!r} requires parameter(s) {', '.join(missing)}")
    return cls(**params)


#: Flat config keys (run config or node config) of each attack's parameters.
ATTACK_CONFIG_KEYS: dict[str, dict[str, str]] = {
    "directional": {"direction": "attack-direction"},
    "alie": {"z": "attack-z"},
    "ipm": {"epsilon": "attack-epsilon"},
    "gaussian-noise": {"std": "attack-std"},
    "malformed": {"kind": "malformed-kind"},
}


def create_attack_from_config(
    name: str, config: Mapping[str, Any], *, num_partitions: int
) -> SignAttack:
    """Build an attack by name, its parameters read from a flat config.

    Parameters
    ----------
    name : str
        Registry name (see :func:`create_attack`).
    config : Mapping[str, Any]
        Flat kebab-case keys (:data:`ATTACK_CONFIG_KEYS`), e.g. a SuperNode's node config;
        absent keys keep the attack's defaults.
    num_partitions : int
        ``k`` of the code, which ``alie`` needs.

    Returns
    -------
    SignAttack
        The attack.
    """
    key = str(name).strip().lower().replace("_", "-")
    params: dict[str, Any] = {
        field: config[flat]
        for field, flat in ATTACK_CONFIG_KEYS.get(key, {}).items()
        if flat in config
    }
    if key == "alie":
        params["num_partitions"] = num_partitions
    return create_attack(key, **params)


def _check_ids(ids: Sequence[int], n: int, count: int, what: str) -> tuple[int, ...]:
    chosen = tuple(ids)
    if not all(_is_int(i) for i in chosen):
        raise ValueError(f"{what} must be integers, got {chosen!r}")
    out_of_range = [int(i) for i in chosen if not 0 <= i < n]
    if out_of_range:
        raise ValueError(f"{what} out of range [0, {n}): {out_of_range}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{what} contain duplicates: {chosen!r}")
    if len(chosen) != count:
        raise ValueError(f"{what} name {len(chosen)} workers, but count = {count}")
    return tuple(sorted(int(i) for i in chosen))


def select_byzantine(
    n: int,
    count: int,
    *,
    selection: str = "random",
    seed: int = 0,
    ids: Sequence[int] = (),
    worst: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Choose which workers (rows of the allocation matrix) are Byzantine.

    ``count`` may be ``n/2`` or more, for experiments that deliberately break the method; the
    strategy checks the code's tolerance condition.

    Parameters
    ----------
    n : int
        Number of workers (at least 1).
    count : int
        Number of Byzantine workers, ``0 <= count <= n``.
    selection : str (default: "random")
        ``"random"``: a seeded uniformly random set, fixed for the run (as in the paper);
        ``"explicit"``: exactly ``ids``; ``"worst"``: exactly ``worst``, the worst set for the
        code as computed by the caller (``fl_election.codes.worst_byzantine_set``).
    seed : int (default: 0)
        Seed of the random selection.
    ids : Sequence[int] (default: ())
        The Byzantine workers for ``"explicit"``; must be empty otherwise.
    worst : Sequence[int] or None (default: None)
        The worst set for ``"worst"``; must be ``None`` otherwise.

    Returns
    -------
    tuple[int, ...]
        Sorted, distinct worker indices in ``[0, n)``, ``count`` of them.
    """
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not _is_int(count) or not 0 <= count <= n:
        raise ValueError(f"count must be an integer in [0, {n}], got {count!r}")
    if selection not in BYZANTINE_SELECTIONS:
        raise ValueError(
            f"unknown selection {selection!r}; valid selections: {', '.join(BYZANTINE_SELECTIONS)}"
        )
    if selection != "explicit" and len(ids) > 0:
        raise ValueError(f"ids are only used with selection='explicit', not {selection!r}")
    if selection != "worst" and worst is not None:
        raise ValueError(f"worst is only used with selection='worst', not {selection!r}")
    if selection == "explicit":
        return _check_ids(ids, n, count, "ids")
    if selection == "worst":
        if worst is None:
            raise ValueError("selection='worst' needs the worst set (fl_election.codes)")
        return _check_ids(worst, n, count, "worst")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    chosen = np.random.default_rng(seed).choice(n, size=count, replace=False)
    return tuple(sorted(int(i) for i in chosen))
