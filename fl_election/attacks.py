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

The head-to-head with float aggregators (Flower's FedAvg, Krum, Bulyan, ...) adds attacks that
only exist in the float world (:attr:`SignAttack.float_only`):

- ``min-max`` and ``min-sum``, the AGR-agnostic attacks of Shejwalkar & Houmansadr,
  "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated
  Learning", NDSS 2021 (:class:`MinMaxAttack`, :class:`MinSumAttack`);
- ByzFL's (Gonzalez, Guerraoui, Pinot, Rizk, Stephan, Taiani, "ByzFL: Research Framework for
  Robust Federated Learning", 2025) optimal ALIE and optimal IPM, line-searched against the
  aggregator in use (Allouah et al., "Fixing by Mixing", AISTATS 2023), Mimic (Karimireddy,
  He, Jaggi, ICLR 2022), Inf and SignFlipping (Allen-Zhu et al., ICLR 2021), run from the
  optional ``byzfl`` package as they are;
- ``num-examples-inflation``: IPM's gradient with an inflated ``num-examples``, against
  servers that trust the weights clients report (Flower's default).

On sign votes, ``min-margin`` (:class:`MinMarginAttack`) is the adaptive attack that flips
exactly the coordinates the Byzantine votes can swing and looks honest everywhere else.

Votes are int8 vectors in {-1, 0, +1} (0 = abstain).  ``sign_sum`` is the integer vector
``sum_j s_j`` over *all* k partitions (``s_j`` the sign of partition j's gradient), so
``mu = sign(sign_sum)`` is the true majority the server wants to recover.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
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
    "PERTURBATION_DIRECTIONS",
    "AlieAttack",
    "DirectionalAttack",
    "GaussianNoiseAttack",
    "InfAttack",
    "IpmAttack",
    "LabelFlipAttack",
    "MalformedAttack",
    "MimicAttack",
    "MinMarginAttack",
    "MinMaxAttack",
    "MinSumAttack",
    "NoAttack",
    "NumExamplesInflationAttack",
    "OmniscientAttack",
    "OptimalAlieAttack",
    "OptimalIpmAttack",
    "RandomAttack",
    "ReverseAttack",
    "SignAttack",
    "SignFlippingAttack",
    "SilentAttack",
    "alie_z",
    "create_attack",
    "create_attack_from_config",
    "forge_float_gradient",
    "forge_gradient",
    "malform",
    "min_margin_vote",
    "select_byzantine",
]

Int8Array = npt.NDArray[np.int8]
IntArray = npt.NDArray[np.integer[Any]]

#: Kinds of malformed payload :func:`malform` produces.
MALFORM_KINDS: tuple[str, ...] = ("dtype", "length", "nan", "missing", "garbage")

#: How :func:`select_byzantine` may choose the Byzantine workers.
BYZANTINE_SELECTIONS: tuple[str, ...] = ("random", "explicit", "worst")

#: Perturbation directions of the AGR-agnostic attacks (:class:`MinMaxAttack`,
#: :class:`MinSumAttack`).
PERTURBATION_DIRECTIONS: tuple[str, ...] = ("std", "unit", "sign")


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


def _float_only_error(name: str) -> ValueError:
    return ValueError(
        f"{name} is a float-only attack: it has no sign-vote form; use it against a float "
        'aggregator, not with aggregation = "election"'
    )


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
    float_only : bool
        The attack exists only in the float world (against float aggregators, through
        :func:`forge_float_gradient`); its sign-vote form (:meth:`forge`) raises
        ``ValueError``, and a run with ``aggregation = "election"`` must refuse it.
    inflates_num_examples : bool
        The worker reports an inflated ``num-examples`` (see
        :meth:`NumExamplesInflationAttack.claimed_examples`), so that a server which trusts
        reported weights weighs its update more.
    needs_partition_signs : bool
        The attack needs every partition's sign, the ``(k, d)`` matrix, and the code's rows
        (see :meth:`MinMarginAttack.forge_from_partitions`); :meth:`forge` raises
        ``ValueError`` for it.
    """

    name: ClassVar[str] = ""
    needs_sign_sum: ClassVar[bool] = False
    poisons_data: ClassVar[bool] = False
    perturbs_gradient: ClassVar[bool] = False
    drops_reply: ClassVar[bool] = False
    malforms_reply: ClassVar[bool] = False
    float_only: ClassVar[bool] = False
    inflates_num_examples: ClassVar[bool] = False
    needs_partition_signs: ClassVar[bool] = False

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

        Raises
        ------
        ValueError
            On a bad vote or ``sign_sum``, for a :attr:`float_only` attack, and for an attack
            that :attr:`needs_partition_signs` (which forges from the partition signs instead).
        """
        vote = _check_vote(honest_vote)
        if self.float_only:
            raise _float_only_error(self.name)
        if self.needs_partition_signs:
            return self._forge(vote, None, rng)  # raises: it forges from the partition signs
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
    and the float-only attacks their own vectors (``min-max``, ``min-sum``, ByzFL's
    ``optimal-alie``, ``optimal-ipm``, ``mimic``, ``inf``, ``sign-flipping``, and
    ``num-examples-inflation``), every Byzantine the same vector where the attack is
    omniscient. Label flipping and Gaussian noise act before this (the client API applies
    them to the gradient). The inputs are checked, the output is not (``inf`` sends
    ``+inf`` on purpose, for the server's reply checks to reject).

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


# ----------------------------------------------------------------------- float-only attacks


@dataclass(frozen=True)
class _FloatOnlyAttack(SignAttack):
    """Base of the attacks that exist only in the float world (omniscient: they get the stack)."""

    needs_sign_sum: ClassVar[bool] = True
    float_only: ClassVar[bool] = True

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        raise _float_only_error(self.name)


@dataclass(frozen=True)
class _AgrAgnosticAttack(_FloatOnlyAttack):
    """Shejwalkar & Houmansadr's AGR-agnostic attacks: ``mean + gamma * p``, ``gamma`` searched.

    Subclasses define the constraint through :meth:`_score` and :meth:`_bound`.
    """

    direction: str = "std"

    def __post_init__(self) -> None:
        if not isinstance(self.direction, str) or self.direction not in PERTURBATION_DIRECTIONS:
            raise ValueError(
                f"{self.name}: direction must be one of {', '.join(PERTURBATION_DIRECTIONS)}, "
                f"got {self.direction!r}"
            )

    def perturbation(self, partition_gradients: np.ndarray) -> npt.NDArray[np.float64]:
        """Return the perturbation direction ``p`` for the benign gradients.

        Parameters
        ----------
        partition_gradients : numpy.ndarray
            The benign gradients, shape ``(k, d)``.

        Returns
        -------
        numpy.ndarray
            float64 ``p``, shape ``(d,)``: ``-std`` (per coordinate, ``ddof=1`` as the authors'
            ``torch.std``; zero when ``k = 1``), ``-mean / ||mean||`` (zero when the mean is),
            or ``-sign(mean)``.
        """
        stack = np.asarray(partition_gradients, dtype=np.float64)
        mean = stack.mean(axis=0)
        if self.direction == "std":
            if stack.shape[0] < 2:
                return np.zeros(stack.shape[1], dtype=np.float64)
            std: npt.NDArray[np.float64] = stack.std(axis=0, ddof=1)
            return -std
        if self.direction == "unit":
            norm = float(np.linalg.norm(mean))
            return -mean / norm if norm > 0 else np.zeros_like(mean)
        sign: npt.NDArray[np.float64] = -np.sign(mean)
        return sign

    def gamma(self, partition_gradients: np.ndarray) -> float:
        """Return the largest ``gamma`` that keeps ``mean + gamma * p`` within the constraint.

        The authors' halving search: ``gamma`` starts at 10, moves up by half the last step
        where the constraint holds and down where it fails, until the last success and the
        next probe are within ``1e-5``; so ``gamma`` is at most 20, and within about
        ``2e-5`` below the constraint's boundary when that is below 20. The constraint
        always holds at ``gamma = 0`` (the mean), the fallback for ``k = 1`` or ``p = 0``.

        Parameters
        ----------
        partition_gradients : numpy.ndarray
            The benign gradients, shape ``(k, d)``.

        Returns
        -------
        float
            ``gamma >= 0``.
        """
        stack = np.asarray(partition_gradients, dtype=np.float64)
        deviation = self.perturbation(stack)
        if stack.shape[0] < 2 or not np.any(deviation):
            return 0.0
        mean = stack.mean(axis=0)
        bound = self._bound(stack)
        lamda = 10.0
        threshold_diff = 1e-5
        lamda_fail = lamda
        lamda_succ = 0.0
        while abs(lamda_succ - lamda) > threshold_diff:
            if self._score(mean + lamda * deviation, stack) <= bound:
                lamda_succ = lamda
                lamda = lamda + lamda_fail / 2
            else:
                lamda = lamda - lamda_fail / 2
            lamda_fail = lamda_fail / 2
        return lamda_succ

    def _score(self, malicious: npt.NDArray[np.float64], stack: npt.NDArray[np.float64]) -> float:
        raise NotImplementedError

    def _bound(self, stack: npt.NDArray[np.float64]) -> float:
        raise NotImplementedError

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``mean + gamma * p`` over all partitions (every Byzantine the same vector)."""
        stack = np.asarray(_checked(partition_gradients), dtype=np.float64)
        malicious = stack.mean(axis=0) + self.gamma(stack) * self.perturbation(stack)
        forged: npt.NDArray[np.float32] = malicious.astype(np.float32)
        return forged


def _pairwise_sq_distances(stack: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    diff = stack[:, None, :] - stack[None, :, :]
    return np.asarray(np.einsum("ijd,ijd->ij", diff, diff), dtype=np.float64)


def _sq_distances_to(
    malicious: npt.NDArray[np.float64], stack: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    diff = stack - malicious
    return np.asarray(np.einsum("id,id->i", diff, diff), dtype=np.float64)


@dataclass(frozen=True)
class MinMaxAttack(_AgrAgnosticAttack):
    """Min-Max, AGR-agnostic (Shejwalkar & Houmansadr, NDSS 2021); float-only, omniscient.

    Every Byzantine sends ``m = mean + gamma * p`` with ``gamma`` the largest value (found by
    the authors' search, :meth:`gamma`) such that ``m`` is no farther from any benign
    gradient than the benign gradients are from each other:
    ``max_i ||m - g_i|| <= max_{i,j} ||g_i - g_j||``. The benign gradients ``g_i`` are the
    ``(k, d)`` stack of every partition's gradient. Deterministic.

    Parameters
    ----------
    direction : str (default: "std")
        Perturbation ``p``, one of :data:`PERTURBATION_DIRECTIONS`: ``"std"`` (``-std`` of
        the benign gradients per coordinate, the paper's best), ``"unit"``
        (``-mean / ||mean||``) or ``"sign"`` (``-sign(mean)``).
    """

    name: ClassVar[str] = "min-max"

    def _score(self, malicious: npt.NDArray[np.float64], stack: npt.NDArray[np.float64]) -> float:
        return float(_sq_distances_to(malicious, stack).max())

    def _bound(self, stack: npt.NDArray[np.float64]) -> float:
        return float(_pairwise_sq_distances(stack).max())


@dataclass(frozen=True)
class MinSumAttack(_AgrAgnosticAttack):
    """Min-Sum, AGR-agnostic (Shejwalkar & Houmansadr, NDSS 2021); float-only, omniscient.

    Every Byzantine sends ``m = mean + gamma * p`` with ``gamma`` the largest value (found by
    the authors' search, :meth:`gamma`) such that the sum of squared distances from ``m`` to
    the benign gradients is no larger than that of any benign gradient:
    ``sum_i ||m - g_i||^2 <= max_i sum_j ||g_i - g_j||^2``. The benign gradients ``g_i``
    are the ``(k, d)`` stack of every partition's gradient. Deterministic.

    Parameters
    ----------
    direction : str (default: "std")
        Perturbation ``p``, one of :data:`PERTURBATION_DIRECTIONS` (see :class:`MinMaxAttack`).
    """

    name: ClassVar[str] = "min-sum"

    def _score(self, malicious: npt.NDArray[np.float64], stack: npt.NDArray[np.float64]) -> float:
        return float(_sq_distances_to(malicious, stack).sum())

    def _bound(self, stack: npt.NDArray[np.float64]) -> float:
        return float(_pairwise_sq_distances(stack).sum(axis=1).max())


def _import_byzfl(name: str) -> Any:
    """Return the ``byzfl`` module, or say how to install it."""
    try:
        import byzfl  # noqa: PLC0415 (optional dependency)
    except ImportError as error:
        raise ModuleNotFoundError(
            f"the {name} attack runs ByzFL's implementation, and byzfl is not installed: "
            "pip install fl-election[byzfl]",
            name="byzfl",
        ) from error
    return byzfl


class _BoundAggregator:
    """The injected aggregate function as the callable object ByzFL calls, ``agg(vectors)``."""

    def __init__(self, aggregate: Callable[[np.ndarray], np.ndarray], name: str) -> None:
        self._aggregate = aggregate
        self._name = name

    def __call__(self, vectors: Any) -> np.ndarray:
        stacked = np.asarray(vectors)
        out = np.asarray(self._aggregate(stacked))
        if out.shape != stacked.shape[1:]:
            raise ValueError(
                f"{self._name}: the bound aggregate returned shape {out.shape} for vectors of "
                f"shape {stacked.shape}; it must return one vector of shape {stacked.shape[1:]}"
            )
        return out


@dataclass(frozen=True)
class _OptimalByzflAttack(_FloatOnlyAttack):
    """ByzFL's line-searched attacks, run against the aggregator the wiring binds.

    Attacks never import aggregation code: the aggregator is injected as ``aggregate``.
    """

    f: int = 1
    evals: int = 20
    aggregate: Callable[[np.ndarray], np.ndarray] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not _is_int(self.f) or self.f < 1:
            raise ValueError(
                f"{self.name}: f (the Byzantine count) must be an integer >= 1, got {self.f!r}"
            )
        if not _is_int(self.evals) or self.evals < 1:
            raise ValueError(f"{self.name}: evals must be an integer >= 1, got {self.evals!r}")
        if self.aggregate is not None and not callable(self.aggregate):
            raise ValueError(
                f"{self.name}: aggregate must be a callable (m, d) -> (d,), got "
                f"{type(self.aggregate).__name__}"
            )

    def _byzfl_attack(self, byzfl: Any, agg: _BoundAggregator) -> Any:
        raise NotImplementedError

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Run ByzFL's attack with the stack as ``honest_vectors`` and the bound aggregator.

        Raises
        ------
        ValueError
            If no aggregator is bound (``aggregate`` is ``None``).
        ModuleNotFoundError
            If ``byzfl`` is not installed.
        """
        stack = _checked(partition_gradients)
        if self.aggregate is None:
            raise ValueError(
                f"{self.name}: no aggregator to line-search against (aggregate is None); bind "
                "the aggregator in use with dataclasses.replace(attack, aggregate=...)"
            )
        byzfl = _import_byzfl(self.name)
        attack = self._byzfl_attack(byzfl, _BoundAggregator(self.aggregate, self.name))
        forged: npt.NDArray[np.float32] = np.asarray(attack(stack), dtype=np.float32)
        return forged


@dataclass(frozen=True)
class OptimalAlieAttack(_OptimalByzflAttack):
    """ByzFL's optimal ALIE (``byzfl.Optimal_ALittleIsEnough``); float-only, omniscient.

    Sends ``mean + tau * std`` (``ddof=1``) of the ``(k, d)`` stack, with ``tau``
    line-searched (expansion then contraction, ``evals`` evaluations) to maximise the
    distance between the aggregate of the honest vectors plus ``f`` copies of the attack and
    the honest mean, under the bound aggregator and no pre-aggregation. With ``k = 1``
    (no spread) it sends the mean.

    Parameters
    ----------
    f : int (default: 1)
        Number of Byzantine vectors in the line search, ``>= 1``; the wiring binds the
        run's Byzantine count (:func:`create_attack_from_config`).
    evals : int (default: 20)
        Evaluations of the line search, ``>= 1``.
    aggregate : Callable[[numpy.ndarray], numpy.ndarray] or None (default: None)
        The aggregator in use, ``(m, d) -> (d,)``; must be bound before
        :meth:`forge_float` (``dataclasses.replace(attack, aggregate=...)``).
    """

    name: ClassVar[str] = "optimal-alie"

    def _byzfl_attack(self, byzfl: Any, agg: _BoundAggregator) -> Any:
        return byzfl.Optimal_ALittleIsEnough(
            agg=agg, pre_agg_list=[], f=int(self.f), evals=int(self.evals)
        )

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Run ``byzfl.Optimal_ALittleIsEnough``; the mean when ``k = 1``."""
        stack = _checked(partition_gradients)
        if stack.shape[0] < 2 and self.aggregate is not None:
            mean: npt.NDArray[np.float32] = stack.mean(axis=0).astype(np.float32)
            return mean  # one vector has no standard deviation: tau * std is 0
        return super().forge_float(gradient, stack, rng)


@dataclass(frozen=True)
class OptimalIpmAttack(_OptimalByzflAttack):
    """ByzFL's optimal IPM (``byzfl.Optimal_InnerProductManipulation``); float-only, omniscient.

    Sends ``-tau * mean`` of the ``(k, d)`` stack, with ``tau`` line-searched (expansion
    then contraction, ``evals`` evaluations) to maximise the distance between the aggregate
    of the honest vectors plus ``f`` copies of the attack and the honest mean, under the
    bound aggregator and no pre-aggregation.

    Parameters
    ----------
    f : int (default: 1)
        Number of Byzantine vectors in the line search, ``>= 1``; the wiring binds the
        run's Byzantine count (:func:`create_attack_from_config`).
    evals : int (default: 20)
        Evaluations of the line search, ``>= 1``.
    aggregate : Callable[[numpy.ndarray], numpy.ndarray] or None (default: None)
        The aggregator in use, ``(m, d) -> (d,)``; must be bound before
        :meth:`forge_float` (``dataclasses.replace(attack, aggregate=...)``).
    """

    name: ClassVar[str] = "optimal-ipm"

    def _byzfl_attack(self, byzfl: Any, agg: _BoundAggregator) -> Any:
        return byzfl.Optimal_InnerProductManipulation(
            agg=agg, pre_agg_list=[], f=int(self.f), evals=int(self.evals)
        )


@dataclass(frozen=True)
class MimicAttack(_FloatOnlyAttack):
    """ByzFL's Mimic (``byzfl.Mimic(epsilon=0)``; Karimireddy, He, Jaggi, ICLR 2022).

    Every Byzantine sends honest vector 0 of the ``(k, d)`` stack: it over-represents one
    partition's data, harmless to the mean under IID data, biasing under heterogeneity.
    Float-only, omniscient.
    """

    name: ClassVar[str] = "mimic"

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``byzfl.Mimic(epsilon=0)`` of the stack: its row 0."""
        stack = _checked(partition_gradients)
        byzfl = _import_byzfl(self.name)
        forged: npt.NDArray[np.float32] = np.array(byzfl.Mimic(epsilon=0)(stack), np.float32)
        return forged


@dataclass(frozen=True)
class InfAttack(_FloatOnlyAttack):
    """ByzFL's Inf (``byzfl.Inf()``): every coordinate ``+inf``; float-only.

    The reply is not finite on purpose: it tests that the server's reply checks reject it
    (the output of :func:`forge_float_gradient` is not checked).
    """

    name: ClassVar[str] = "inf"

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``byzfl.Inf()`` of the stack: ``+inf`` everywhere."""
        stack = _checked(partition_gradients)
        byzfl = _import_byzfl(self.name)
        forged: npt.NDArray[np.float32] = np.asarray(byzfl.Inf()(stack), dtype=np.float32)
        return forged


@dataclass(frozen=True)
class SignFlippingAttack(_FloatOnlyAttack):
    """ByzFL's SignFlipping (``byzfl.SignFlipping()``; Allen-Zhu et al., ICLR 2021).

    Every Byzantine sends ``-mean`` of the ``(k, d)`` stack: IPM with ``epsilon = 1``.
    Float-only, omniscient.
    """

    name: ClassVar[str] = "sign-flipping"

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``byzfl.SignFlipping()`` of the stack: ``-mean``."""
        stack = _checked(partition_gradients)
        byzfl = _import_byzfl(self.name)
        forged: npt.NDArray[np.float32] = np.asarray(byzfl.SignFlipping()(stack), np.float32)
        return forged


@dataclass(frozen=True)
class NumExamplesInflationAttack(_FloatOnlyAttack):
    """IPM's gradient sent with an inflated ``num-examples``; float-only, omniscient.

    The gradient is ``-epsilon * mean`` of the ``(k, d)`` stack (:class:`IpmAttack`); the
    client reports :meth:`claimed_examples` of its assigned count as its ``num-examples``, so
    a server that trusts reported weights (Flower's default FedAvg) weighs it ``factor``
    times. A server that assigns the weights itself is immune.

    Parameters
    ----------
    epsilon : float (default: 0.1)
        Scale of the IPM gradient, finite and ``> 0``.
    factor : float (default: 100.0)
        Inflation of the reported example count, finite and ``>= 1``.
    """

    name: ClassVar[str] = "num-examples-inflation"
    inflates_num_examples: ClassVar[bool] = True
    epsilon: float = 0.1
    factor: float = 100.0

    def __post_init__(self) -> None:
        if not _is_real(self.epsilon) or not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(
                f"{self.name}: epsilon must be a finite number > 0, got {self.epsilon!r}"
            )
        if not _is_real(self.factor) or not math.isfinite(self.factor) or self.factor < 1:
            raise ValueError(
                f"{self.name}: factor must be a finite number >= 1, got {self.factor!r}"
            )

    def claimed_examples(self, assigned: int) -> int:
        """Return the ``num-examples`` the worker reports, ``round(factor * assigned)``.

        Parameters
        ----------
        assigned : int
            The number of examples the worker really trains on, ``>= 0``.

        Returns
        -------
        int
            The inflated count.
        """
        if not _is_int(assigned) or assigned < 0:
            raise ValueError(f"{self.name}: assigned must be an integer >= 0, got {assigned!r}")
        return int(round(self.factor * int(assigned)))

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send ``-epsilon * mean(g_j)`` over all partitions (IPM's gradient)."""
        stack = _checked(partition_gradients)
        forged: npt.NDArray[np.float32] = (-self.epsilon * stack.mean(axis=0)).astype(np.float32)
        return forged


# --------------------------------------------------------------------- sign-vote min-margin


def min_margin_vote(
    partition_signs: np.ndarray,
    rows: Sequence[Sequence[int]],
    byzantine_rows: Sequence[int],
    num_byzantine: int | None = None,
) -> Int8Array:
    """Return the vote of the min-margin attack (see :class:`MinMarginAttack`).

    Each honest row (node) votes the sign of the sum of its partitions' signs (0 on a tie);
    ``M`` is the sum of the honest votes per coordinate and ``mu = sign(sum_j s_j)`` the true
    majority over all k partitions (where ``mu`` is 0, ``sign(M)``; where both are 0, ``+1``).
    The ``b`` Byzantine votes, each of weight 1, can change the elected sign exactly where
    ``mu * M <= b``: the attack sends ``-mu`` there and ``+mu`` elsewhere.

    Parameters
    ----------
    partition_signs : numpy.ndarray
        Every partition's sign, integer entries in {-1, 0, +1}, shape ``(k, d)``.
    rows : Sequence[Sequence[int]]
        For each row (node) of the code, the indices of the partitions it holds, in
        ``[0, k)``.
    byzantine_rows : Sequence[int]
        The Byzantine rows, distinct indices into ``rows``; they are left out of ``M``.
    num_byzantine : int or None (default: None)
        ``b``, the number of Byzantine votes; ``len(byzantine_rows)`` when ``None``.

    Returns
    -------
    numpy.ndarray
        int8 vote in {-1, +1}, shape ``(d,)``, the same for every Byzantine row.
    """
    signs = partition_signs
    if not isinstance(signs, np.ndarray) or signs.ndim != 2:
        raise ValueError("partition_signs must be a (k, d) numpy array")
    if not np.issubdtype(signs.dtype, np.integer):
        raise ValueError(f"partition_signs must have an integer dtype, got {signs.dtype}")
    if signs.size and (signs.min() < -1 or signs.max() > 1):
        raise ValueError("partition_signs entries must be in {-1, 0, +1}")
    k = signs.shape[0]
    row_list = [tuple(row) for row in rows]
    for index, row in enumerate(row_list):
        bad = [p for p in row if not _is_int(p) or not 0 <= p < k]
        if bad:
            raise ValueError(f"row {index} holds partitions outside [0, {k}): {bad!r}")
    byzantine = set(byzantine_rows)
    if len(byzantine) != len(tuple(byzantine_rows)) or not all(
        _is_int(i) and 0 <= i < len(row_list) for i in byzantine
    ):
        raise ValueError(
            f"byzantine_rows must be distinct integers in [0, {len(row_list)}), "
            f"got {tuple(byzantine_rows)!r}"
        )
    b = len(byzantine) if num_byzantine is None else num_byzantine
    if not _is_int(b) or b < 0:
        raise ValueError(f"num_byzantine must be an integer >= 0, got {num_byzantine!r}")
    s = signs.astype(np.int64)
    margin = np.zeros(signs.shape[1], dtype=np.int64)
    for index, row in enumerate(row_list):
        if index not in byzantine:
            margin += np.sign(s[list(row)].sum(axis=0))
    mu = np.sign(s.sum(axis=0))
    mu = np.where(mu != 0, mu, np.sign(margin))
    mu = np.where(mu != 0, mu, 1)
    swing = mu * margin <= int(b)
    return np.where(swing, -mu, mu).astype(np.int8)


@dataclass(frozen=True)
class MinMarginAttack(SignAttack):
    """Min-margin: flip exactly the coordinates the Byzantine votes can swing.

    The adaptive attack on sign votes: with ``M`` the honest rows' vote sum and ``mu`` the
    true majority (:func:`min_margin_vote`), the b Byzantines send ``-mu`` where
    ``mu * M <= b`` and ``+mu`` elsewhere, so they look honest wherever they cannot change
    the result. Tie rule: where ``mu = sign(sum_j s_j)`` is 0, ``mu = sign(M)``; where both
    are 0, ``mu = +1``.

    Under plain majority of the node votes it elects the same signs as the omniscient
    attack (every Byzantine sends ``-mu``) wherever ``mu != 0``: where ``mu * M <= b``
    both send ``-mu``; elsewhere the omniscient total ``M - b mu`` has sign
    ``sign(mu * M - b) mu = mu``, as does the min-margin total ``M + b mu``. So the damage
    is equal and it agrees with the honest majority everywhere else (stealth). (Where
    ``mu = 0`` the omniscient attack falls back to each worker's own honest vote, and the
    two may differ.)

    It needs every partition's sign and the code: :meth:`forge` raises, and the client calls
    :meth:`forge_from_partitions` once ``rows`` and ``byzantine_rows`` are bound
    (``dataclasses.replace(attack, rows=..., byzantine_rows=...)``).

    Parameters
    ----------
    rows : tuple[tuple[int, ...], ...] (default: ())
        For each row (node) of the code, the partitions it holds.
    byzantine_rows : tuple[int, ...] (default: ())
        The Byzantine rows; ``b = len(byzantine_rows)``.
    """

    name: ClassVar[str] = "min-margin"
    needs_sign_sum: ClassVar[bool] = True
    needs_partition_signs: ClassVar[bool] = True
    rows: tuple[tuple[int, ...], ...] = dataclasses.field(default=(), compare=False, repr=False)
    byzantine_rows: tuple[int, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            rows = tuple(tuple(row) for row in self.rows)
            byzantine_rows = tuple(self.byzantine_rows)
        except TypeError as error:
            raise ValueError(
                f"{self.name}: rows must be a sequence of partition-index sequences and "
                "byzantine_rows a sequence of row indices"
            ) from error
        if not all(_is_int(p) and p >= 0 for row in rows for p in row):
            raise ValueError(f"{self.name}: rows must hold partition indices >= 0, got {rows!r}")
        if not all(_is_int(i) and 0 <= i < len(rows) for i in byzantine_rows) or len(
            set(byzantine_rows)
        ) != len(byzantine_rows):
            raise ValueError(
                f"{self.name}: byzantine_rows must be distinct row indices in [0, {len(rows)}), "
                f"got {byzantine_rows!r}"
            )
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "byzantine_rows", byzantine_rows)

    def forge_from_partitions(self, partition_signs: np.ndarray) -> Int8Array:
        """Return the vote every Byzantine row sends (:func:`min_margin_vote`).

        Parameters
        ----------
        partition_signs : numpy.ndarray
            Every partition's sign, integer entries in {-1, 0, +1}, shape ``(k, d)``.

        Returns
        -------
        numpy.ndarray
            int8 vote in {-1, +1}, shape ``(d,)``.
        """
        if not self.rows or not self.byzantine_rows:
            raise ValueError(
                f"{self.name}: bind the code's rows and the Byzantine rows first, "
                "dataclasses.replace(attack, rows=..., byzantine_rows=...)"
            )
        return min_margin_vote(partition_signs, self.rows, self.byzantine_rows)

    def _forge(
        self, honest_vote: Int8Array, sign_sum: IntArray | None, rng: np.random.Generator
    ) -> Int8Array:
        raise ValueError(
            f"{self.name} needs every partition's sign and the code's rows, not one vote and "
            "sign_sum: call forge_from_partitions(partition_signs) on the attack bound with "
            "dataclasses.replace(attack, rows=..., byzantine_rows=...)"
        )

    def forge_float(
        self, gradient: np.ndarray, partition_gradients: np.ndarray | None, rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """Send the min-margin vote with the mean gradient's magnitudes, ``vote * |mean|``."""
        stack = _checked(partition_gradients)
        vote = self.forge_from_partitions(np.sign(stack).astype(np.int8))
        forged: npt.NDArray[np.float32] = (
            vote.astype(np.float32) * np.abs(stack.mean(axis=0))
        ).astype(np.float32)
        return forged


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
        MinMaxAttack,
        MinSumAttack,
        OptimalAlieAttack,
        OptimalIpmAttack,
        MimicAttack,
        InfAttack,
        SignFlippingAttack,
        NumExamplesInflationAttack,
        MinMarginAttack,
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
    "num-examples-inflation": {"epsilon": "attack-epsilon", "factor": "attack-inflation"},
    # f, the Byzantine count of the line search, is bound from "byzantine-count".
    "optimal-alie": {},
    "optimal-ipm": {},
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

    Notes
    -----
    ``optimal-alie`` and ``optimal-ipm`` take ``f`` from ``config["byzantine-count"]`` when
    it is present and nonzero (else their default 1: with no Byzantine, nobody sends it).
    Their ``aggregate``, and ``min-margin``'s ``rows`` and ``byzantine_rows``, are bound
    by the wiring (``dataclasses.replace``).

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
    if key in ("optimal-alie", "optimal-ipm"):
        count = config.get("byzantine-count")
        if count is not None and not (_is_int(count) and count == 0):
            params["f"] = count
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
