"""Typed, validated run configuration of an fl-election experiment.

Flower hands every app a flat ``run_config`` mapping (``[tool.flwr.app.config]`` in
``pyproject.toml``, overridden by ``flwr run --run-config``). :class:`RunConfig` turns that
mapping into one typed object and checks it *before* any training starts, so that an
impossible setting (``b >= n/2``, an unknown attack, a learning rate of zero) stops the run
with a message that says what is wrong instead of failing mid-run.

Keys use Flower's kebab-case (``byzantine-count``); attributes use snake_case
(``byzantine_count``). Every field has a default here and the same default in
``[tool.flwr.app.config]`` (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from fl_election.contract import CERTIFICATE_TIE_RULE

if TYPE_CHECKING:
    from fl_election.attacks import SignAttack
    from fl_election.codes import AllocationCode

ConfigValue = bool | int | float | str

#: ``election`` (packed sign votes), ``fgm`` (the paper's float baseline) and Flower's own
#: robust strategies over float gradients (:mod:`fl_election.strategies.flower_robust`).
FLOWER_AGGREGATIONS = ("fedavg", "krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg")
#: ByzFL's defences (optional extra ``byzfl``), each a Flower strategy wrapping FedAvg
#: (:mod:`fl_election.strategies.byzfl_robust`).
BYZFL_AGGREGATIONS = ("nnm-trmean", "nnm-median", "arc-trmean", "centeredclipping", "geomedian")
#: Every aggregation over float gradients (Flower's and ByzFL's).
FLOAT_AGGREGATIONS = (*FLOWER_AGGREGATIONS, *BYZFL_AGGREGATIONS)
AGGREGATIONS = ("election", "fgm", *FLOAT_AGGREGATIONS)
#: How a float aggregator weighs a reply: by the share the server assigned, or by the
#: ``num-examples`` the node reports (Flower's default, which a Byzantine can inflate).
NUM_EXAMPLES_WEIGHTS = ("assigned", "reported")
BYZANTINE_SELECTIONS = ("random", "worst", "explicit", "node-config")
ATTACK_DIRECTIONS = (1, -1)

# Bounds checked by :meth:`RunConfig.validate` (see the class docstring for the reasons).
MAX_ROUNDS = 1_000_000
"""Upper bound of ``num-server-rounds``, ``eval-every``, ``client-eval-every`` and milestones."""
MAX_WORKERS = 1024
"""Upper bound of ``num-workers``, ``num-partitions``, ``code-tolerance``, ``repetition-group``."""
MAX_THREADS = 1024
"""Upper bound of ``num-threads`` (a fixed number: clients validate the same config elsewhere)."""
MAX_SEED = 2**32 - 1
"""Largest ``seed`` / ``code-seed`` (every numpy and torch seeding call accepts ``[0, 2**32)``)."""
MAX_LR = 1e3
"""Largest ``lr``."""
MAX_WEIGHT_DECAY = 1e3
"""Largest ``weight-decay``."""
MAX_LR_TIMES_WEIGHT_DECAY = 2.0
"""``lr * weight-decay`` must stay below this, or the decay term alone diverges."""
MAX_NOISE_STD = 1e3
"""Largest ``grad-noise-std`` and ``attack-std``."""
MAX_ATTACK_Z = 1e3
"""Largest ``attack-z``."""
MAX_INFLATION = 1e6
"""Largest ``attack-inflation``."""
MIN_ROUND_TIMEOUT = 1.0
"""Smallest ``round-timeout`` in seconds: below it no node's reply (one local gradient step and
a round trip) can arrive, so every round would end with every node counted as missing."""
MAX_ROUND_TIMEOUT = 7 * 24 * 3600.0
"""Largest ``round-timeout`` in seconds (one week)."""
BERNOULLI_MAX_EMPTY_ROW_PROBABILITY = 0.999
"""A Bernoulli code's ``(1 - r/k)**k`` (the chance that a row is drawn empty) must not exceed
this: :func:`fl_election.codes.bernoulli` refuses such a hopeless ``p`` (so ``r >~ 0.001``)."""
MAX_RUN_NAME_BYTES = 200
"""Longest ``run-name`` (UTF-8 bytes), so ``<run-name>.model.npz`` fits in a 255-byte name."""
MAX_PATH_BYTES = 4095
"""Longest ``output-dir`` / ``data-root`` (bytes; Linux ``PATH_MAX`` less the NUL)."""
MAX_PATH_COMPONENT_BYTES = 255
"""Longest single folder name in ``output-dir`` (Linux ``NAME_MAX``)."""

REMOVED_KEYS: dict[str, str] = {
    "min-valid-votes": (
        "a round is applied when at most f = byzantine-count + crash-budget rows are missing "
        "or rejected (the fault-budget rule, fl_election.quorum; see docs/threat_model.md); "
        "set crash-budget for honest nodes that may fail, or fault-rule = 'conservative'"
    ),
}
"""Keys of earlier versions, refused with what replaced them."""

TRAIN_SIZES: dict[str, int] = {
    # scikit-learn's 1797 digits less the stratified test split of fl_election.data
    # (DIGITS_TEST_FRACTION = 0.2: ceil(0.2 * 1797) = 360 test samples), so 1437 train.
    "digits": 1437,
    # torchvision's standard training splits.
    "mnist": 60_000,
    "fashion-mnist": 60_000,
    "cifar10": 50_000,
}
"""Training-set size of every dataset of :data:`fl_election.data.DATASETS`, known without
loading it; ``batch-size`` and ``num-partitions`` may not exceed it (a test checks the digits
number against :func:`fl_election.data.load_dataset`)."""


def _parse_int_list(text: str, key: str) -> tuple[int, ...]:
    """Parse ``"1, 4,7"`` into ``(1, 4, 7)``; the empty string gives ``()``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"{key} must be a comma-separated list of integers, got {text!r}") from err


@dataclass(frozen=True)
class RunConfig:
    r"""All knobs of one experiment, validated.

    Construction validates every field (:meth:`validate`): a value of the wrong type, a
    non-finite float, an out-of-range number, an unknown choice, an unsafe file name or an
    output folder that cannot be created raises ``ValueError`` naming the kebab-case key, so
    that no bad setting reaches round 1. Validation loads no dataset and touches no network.

    Parameters
    ----------
    num_server_rounds : int (default: 150)
        Training steps; one Flower round is one SignSGD step. In ``[1, 10**6]``.
    dataset : str (default: "digits")
        ``digits`` (scikit-learn's bundled set, offline), ``mnist``, ``fashion-mnist`` or
        ``cifar10`` (torchvision).
    data_root : str (default: "")
        Folder holding torchvision datasets; empty means ``~/.cache/fl-election``. No NUL or
        control characters, at most 4095 bytes.
    download : bool (default: False)
        Let torchvision download a missing dataset (needs a network).
    model : str (default: "mlp")
        ``mlp``, ``cnn`` or ``resnet18``.
    num_workers : int (default: 15)
        ``n``: workers (SuperNodes) that vote. In ``[1, 1024]``.
    num_partitions : int (default: 5)
        ``k``: data partitions of a Bernoulli code; 0 means ``k = n``. The other codes
        have ``k = n`` by construction and ignore it. Fewer, larger partitions make each
        partition's gradient sign less noisy (the reviewers' ``k != n`` point): on digits
        with ``B = 240``, ``k = 5`` votes far more reliably than ``k = 15``. In
        ``[0, min(1024, training-set size)]`` (:data:`TRAIN_SIZES`).
    code : str (default: "bernoulli")
        Allocation code: ``uncoded``, ``bernoulli``, ``deterministic`` or ``repetition``.
    redundancy : float (default: 3.0)
        Target mean load ``r`` of a Bernoulli code. Finite, in ``(0, 1024]``, and, for an
        election with a Bernoulli code, ``<= k`` (``p = r / k`` is a probability) and large
        enough that a row is non-empty with probability ``1 - (1 - p)**k >= 0.001``
        (:func:`fl_election.codes.bernoulli` redraws empty rows and refuses hopeless ``p``):
        about ``r >= 0.001`` whatever ``k`` (exactly ``r >= k (1 - 0.999**(1/k))``).
    code_seed : int (default: 0)
        Seed of a random code. In ``[0, 2**32 - 1]``.
    code_tolerance : int (default: 0)
        ``b`` a deterministic code is built for; 0 means ``max(1, byzantine_count)``. In
        ``[0, 1024]``, and ``< n/2`` for a deterministic code.
    repetition_group : int (default: 3)
        Group size of a fractional repetition code. In ``[1, 1024]``, and a divisor of ``n``
        for an election with a repetition code.
    aggregation : str (default: "election")
        ``election`` (packed sign votes), ``fgm`` (float gradients, coordinate-wise median)
        or one of Flower's strategies over float gradients: ``fedavg``, ``krum``,
        ``multikrum``, ``bulyan``, ``fedmedian``, ``fedtrimmedavg``
        (:mod:`fl_election.strategies.flower_robust`; ``byzantine-count`` is their ``f``)
        or ByzFL's defences ``nnm-trmean``, ``nnm-median``, ``arc-trmean``,
        ``centeredclipping``, ``geomedian`` (:mod:`fl_election.strategies.byzfl_robust`,
        extra ``byzfl``). Krum and MultiKrum need ``n >= 2b + 3``, Bulyan ``n >= 4b + 3``.
    batch_size : int (default: 240)
        Global minibatch ``B`` per step, cut into ``k`` slices of ``B // k``. In
        ``[k, training-set size]`` (:data:`TRAIN_SIZES`: digits 1437, mnist and
        fashion-mnist 60000, cifar10 50000), so that every slice holds a sample and no
        batch is larger than the data.
    lr : float (default: 0.001)
        Server learning rate. Finite, in ``(0, 1000]``, and ``lr * weight_decay < 2``: the
        decay term multiplies the weights by ``1 - lr * weight_decay`` every step, which
        diverges (and overflows float32 to a NaN model) beyond 2, with or without momentum.
    lr_milestones : str (default: "50,100")
        Comma-separated steps at which the learning rate is multiplied by ``lr_gamma``.
        Integers in ``[1, 10**6]``, strictly increasing; empty means no decay.
    lr_gamma : float (default: 0.1)
        Learning-rate decay factor. In ``(0, 1]``.
    momentum : float (default: 0.9)
        Server-side momentum (SPEC section 1). In ``[0, 1)``.
    weight_decay : float (default: 0.0001)
        Weight decay added to the voted direction. Finite, in ``[0, 1000]`` (and see ``lr``).
    seed : int (default: 0)
        Seed of the data split, the per-step minibatches, the model init and the attacks.
        In ``[0, 2**32 - 1]``.
    attack : str (default: "omniscient")
        What Byzantine workers send (see :mod:`fl_election.attacks`).
    byzantine_count : int (default: 6)
        ``b``: number of Byzantine workers; must be ``< n/2``.
    byzantine_selection : str (default: "random")
        ``random`` (a fixed seeded set per run, as in the paper), ``worst`` (the set that
        hurts the code most, for an adversary that knows ``G``), ``explicit``
        (``byzantine_ids``) or ``node-config`` (a deployment: exactly the SuperNodes started
        with ``--node-config "byzantine=true"``; ``byzantine_count`` is then only the
        budget ``b`` the code is certified for).
    byzantine_ids : str (default: "")
        Comma-separated worker indices for ``explicit`` selection; must parse as integers
        whatever the selection, be ``byzantine_count`` distinct indices in ``[0, n)`` for
        ``explicit``, and be empty for any other selection (which would ignore them).
    attack_direction : int (default: 1)
        +1 or -1, for the ``directional`` attack (checked whatever the attack).
    attack_z : float (default: 1.0)
        Margin threshold of the ``alie`` attack. Finite, in ``[0, 1000]``.
    attack_std : float (default: 0.0001)
        Noise standard deviation of the ``gaussian-noise`` attack. Finite, in ``[0, 1000]``.
    attack_epsilon : float (default: 0.1)
        Scale of the float ``ipm`` attack, ``-epsilon * mean gradient``. Finite, in
        ``(0, 1000]``; sign votes ignore it (IPM is the omniscient vote there). Also the
        scale of ``num-examples-inflation``'s gradient.
    attack_inflation : float (default: 100.0)
        How many times its assigned share a ``num-examples-inflation`` Byzantine claims as
        its ``num-examples``. Finite, in ``[1, 10**6]``.
    malformed_kind : str (default: "garbage")
        Payload of the ``malformed`` attack: dtype, length, nan, missing or garbage (checked
        whatever the attack).
    grad_noise_std : float (default: 0.0)
        Gaussian noise added to every honest worker's gradients before the sign (the
        paper's noisy-computation experiment, Fig. A.4b). Finite, in ``[0, 1000]`` (far
        beyond any gradient's scale: the signs are pure noise well before that).
    eval_every : int (default: 10)
        Central test-set evaluation every this many rounds (and at the last round). In
        ``[1, 10**6]``.
    client_eval_every : int (default: 0)
        Federated evaluation on the clients every this many rounds; 0 disables it. In
        ``[0, 10**6]``.
    round_timeout : float (default: 600.0)
        Seconds to wait for the replies of one round; a node that misses it is counted as
        missing and the vote goes on without it. Finite, in ``[1, 604800]`` (one second,
        :data:`MIN_ROUND_TIMEOUT`, to one week).
    output_dir : str (default: "outputs")
        Where the JSON result and the plot go (relative paths resolve against the
        ``FL_ELECTION_OUTPUT_ROOT`` environment variable, else the working directory). No
        NUL or control characters, at most 4095 bytes and 255 bytes per folder name. An
        absolute path (after ``~`` expansion) must be creatable now: its nearest existing
        ancestor (or itself) must be a writable directory; nothing is created. A relative
        path is resolved only when the run saves, so only its text is checked, and it may
        not hold a ``..`` folder (it must stay under the output root; an absolute path is
        the way to write elsewhere).
    run_name : str (default: "")
        File stem of the outputs; empty derives one from the config. A plain file name: no
        ``/`` or ``\``, no NUL or control characters, not ``.`` or ``..``, at most 200
        UTF-8 bytes.
    num_threads : int (default: 1)
        Torch CPU threads per ClientApp. In ``[1, 1024]``.
    crash_budget : int (default: 0)
        ``c``: honest workers that may crash or time out on top of the ``b`` Byzantine
        ones. A round is applied when at most ``f = b + c`` of the rows asked gave no
        accepted vote; the code is certified once against ``f`` (:mod:`fl_election.quorum`).
        ``b + c < n/2``.
    fault_rule : str (default: "budget")
        ``budget`` (apply a round with at most ``f`` rows missing or rejected) or
        ``conservative`` (at most ``f - b``: every missing row assumed an honest node on
        top of ``b`` voting Byzantines).
    certify_time_budget : float (default: 10.0)
        Seconds the certification of the code for ``f`` may take before round 1; at the
        budget the run reports a proven bound or ``unknown`` and goes on. In ``(0, 3600]``.
    max_resyncs : int (default: 2)
        Full models one node may be sent again within ``resync-window`` rounds
        (``downlink = "vote"``); beyond it the node's row is a faulty reply and the model
        is not resent. In ``[0, 10**6]``.
    resync_window : int (default: 50)
        Rounds over which ``max-resyncs`` counts. In ``[1, 10**6]``.
    max_rounds_below_quorum : int (default: 3)
        Rounds in a row over the fault budget (not applied) after which the run stops with
        an error naming the missing and rejected nodes. In ``[1, 10**6]``.
    reassign_after : int (default: 2)
        A code row whose node gave no accepted vote for this many rounds in a row (or left)
        moves to a connected node without a row; 0 never moves rows. In
        ``[0, max-rounds-below-quorum)``, so that a row moves before the run stops.
    checkpoint_every : int (default: 10)
        Write ``<output-dir>/<run-name>.ckpt.npz`` (atomically) every this many rounds; 0
        never. In ``[0, 10**6]``.
    tie_rule : str (default: "gradient")
        How a worker votes where its partitions tie: ``gradient`` (one bit per coordinate,
        by the sign of its regularised mean gradient) or ``abstain`` (a zero, sent in an
        abstain plane). See :mod:`fl_election.contract`.
    downlink : str (default: "vote")
        ``vote`` (nodes keep the model and receive the elected direction, 1 bit per
        coordinate, and the batch-norm buffers) or ``full`` (the model every round).
    worker_momentum : float (default: 0.0)
        Worker-side momentum, in ``[0, 1)``; 0 disables it. Usually with ``momentum = 0``.
        On sign votes Signum, per partition; on float gradients (Karimireddy et al., ICML
        2021) each node sends ``m = beta m + (1 - beta) g`` instead of ``g``.
    local_steps : int (default: 1)
        Float aggregations only: local SGD steps per round (FedAvg's ``E``), each node
        sending ``(w_0 - w_E) / lr``. In ``[1, 1000]``; attacks that forge from every
        partition's gradient (omniscient ones) need ``local-steps = 1``.
    num_examples_weights : str (default: "assigned")
        Float aggregators' reply weights: ``assigned`` (the share the server assigned) or
        ``reported`` (the node's own ``num-examples``, as Flower's FedAvg and MultiKrum
        take it; a Byzantine may inflate it).
    resume : bool (default: False)
        Start from the run's checkpoint when there is one (same config, other than
        ``num-server-rounds``, ``checkpoint-every`` and ``resume``).
    track_vote_error : bool (default: False)
        Simulation referee: every round the server recomputes each partition's gradient
        sign at the round's model and records ``vote-error-rate``, the fraction of
        coordinates where the applied direction's sign differs from the majority over
        partitions (costs one global minibatch of gradients per round on the server).
    dirichlet_alpha : float (default: 0.0)
        Label skew of the data partitions: each class is split over the ``k`` partitions
        in Dirichlet(``alpha``) proportions (:func:`fl_election.data.partition_indices`);
        0 means i.i.d. partitions. Finite, in ``[0, 1000]``.
    """

    num_server_rounds: int = 150
    dataset: str = "digits"
    data_root: str = ""
    download: bool = False
    model: str = "mlp"
    num_workers: int = 15
    num_partitions: int = 5
    code: str = "bernoulli"
    redundancy: float = 3.0
    code_seed: int = 0
    code_tolerance: int = 0
    repetition_group: int = 3
    aggregation: str = "election"
    batch_size: int = 240
    lr: float = 0.001
    lr_milestones: str = "50,100"
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0001
    seed: int = 0
    attack: str = "omniscient"
    byzantine_count: int = 6
    byzantine_selection: str = "random"
    byzantine_ids: str = ""
    attack_direction: int = 1
    attack_z: float = 1.0
    attack_std: float = 0.0001
    attack_epsilon: float = 0.1
    attack_inflation: float = 100.0
    malformed_kind: str = "garbage"
    grad_noise_std: float = 0.0
    eval_every: int = 10
    client_eval_every: int = 0
    round_timeout: float = 600.0
    output_dir: str = "outputs"
    run_name: str = ""
    num_threads: int = 1
    crash_budget: int = 0
    fault_rule: str = "budget"
    certify_time_budget: float = 10.0
    max_resyncs: int = 2
    resync_window: int = 50
    max_rounds_below_quorum: int = 3
    reassign_after: int = 2
    checkpoint_every: int = 10
    tie_rule: str = "gradient"
    downlink: str = "vote"
    worker_momentum: float = 0.0
    local_steps: int = 1
    num_examples_weights: str = "assigned"
    resume: bool = False
    track_vote_error: bool = False
    dirichlet_alpha: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Return the kebab-case run-config keys, in declaration order."""
        return tuple(f.name.replace("_", "-") for f in fields(cls))

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, ConfigValue]) -> RunConfig:
        """Build and validate a config from Flower's flat ``run_config`` mapping.

        Parameters
        ----------
        run_config : Mapping[str, bool | int | float | str]
            Kebab-case keys, one spelling per key: the snake_case spelling
            (``byzantine_count``) is an error that names the kebab-case key to use, so that
            two spellings of one knob cannot both be given and silently overwrite each other.
            Missing keys take their defaults, unknown keys are an error (a typo must not
            silently fall back to a default).

        Returns
        -------
        RunConfig
            The validated configuration.

        Raises
        ------
        ValueError
            On an unknown or snake_case key, a value of the wrong type, or an impossible
            setting.
        """
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        values: dict[str, Any] = {}
        unknown = []
        misspelt: dict[str, str] = {}
        for key, value in run_config.items():
            if key not in known:
                kebab = str(key).replace("_", "-")
                if kebab in known:
                    misspelt[key] = kebab
                else:
                    unknown.append(key)
                continue
            values[known[key].name] = _coerce(key, value, known[key].type)
        if misspelt:
            advice = ", ".join(f"{key!r} -> {kebab!r}" for key, kebab in misspelt.items())
            raise ValueError(
                f"run-config key(s) {list(misspelt)} are snake_case; run-config keys are "
                f"kebab-case, one spelling per key: write {advice}"
            )
        removed = [key for key in unknown if key in REMOVED_KEYS]
        if removed:
            raise ValueError(
                "; ".join(
                    f"run-config key {key!r} was removed: {REMOVED_KEYS[key]}" for key in removed
                )
            )
        if unknown:
            raise ValueError(
                f"unknown run-config key(s) {sorted(unknown)}; valid keys are {list(cls.keys())}"
            )
        return cls(**values)

    def to_run_config(self) -> dict[str, ConfigValue]:
        """Return the config as Flower's flat kebab-case mapping."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        """Return a validated copy with some fields changed (snake_case names)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived values
    @property
    def k(self) -> int:
        """Number of data partitions ``k`` of the run's code."""
        if self.aggregation == "election" and self.code == "bernoulli":
            return self.num_partitions or self.num_workers
        return self.num_workers

    @property
    def partition_batch_size(self) -> int:
        """Samples per partition slice of a step's global minibatch, ``B // k``."""
        return self.batch_size // self.k

    @property
    def milestones(self) -> tuple[int, ...]:
        """Learning-rate milestones as integers."""
        return _parse_int_list(self.lr_milestones, "lr-milestones")

    @property
    def explicit_byzantine_ids(self) -> tuple[int, ...]:
        """Worker indices of an ``explicit`` Byzantine selection."""
        return _parse_int_list(self.byzantine_ids, "byzantine-ids")

    @property
    def code_params(self) -> dict[str, Any]:
        """Keyword arguments for :func:`fl_election.codes.create_code`."""
        n = self.num_workers
        if self.code == "uncoded":
            return {"n": n}
        if self.code == "bernoulli":
            return {"n": n, "k": self.k, "redundancy": self.redundancy, "seed": self.code_seed}
        if self.code == "deterministic":
            # certified for the run's tie rule: 1-bit ties count as wrong votes
            return {
                "n": n,
                "b": self.code_tolerance or max(1, self.byzantine_count),
                "tie_rule": CERTIFICATE_TIE_RULE[self.tie_rule],
            }
        if self.code == "repetition":
            return {"n": n, "group": self.repetition_group}
        return {"n": n}

    def create_attack(self) -> SignAttack:
        """Return the run's attack (:func:`fl_election.attacks.create_attack_from_config`)."""
        from fl_election.attacks import create_attack_from_config

        return create_attack_from_config(self.attack, self.to_run_config(), num_partitions=self.k)

    @property
    def default_run_name(self) -> str:
        """A file stem that identifies the experiment."""
        if self.run_name:
            return self.run_name
        scheme = self.code if self.aggregation == "election" else self.aggregation
        if self.aggregation == "election" and self.code == "bernoulli":
            scheme = f"bernoulli-r{self.redundancy:g}"
        attack = self.attack if self.byzantine_count else "none"
        return (
            f"{self.dataset}-{self.model}-n{self.num_workers}-b{self.byzantine_count}"
            f"-{attack}-{scheme}-seed{self.seed}"
        )

    # ------------------------------------------------------------------ built objects
    def allocation_code(self) -> AllocationCode:
        """Return the code the run uses (identity for the FGM baseline)."""
        from fl_election.codes import create_code, uncoded

        if self.aggregation != "election":
            return uncoded(self.num_workers)
        return create_code(self.code, **self.code_params)

    def byzantine_workers(self) -> tuple[int, ...]:
        """Return the code rows (worker indices) that are Byzantine in this run."""
        from fl_election.attacks import select_byzantine
        from fl_election.codes import worst_byzantine_set

        if self.byzantine_selection == "node-config":
            return ()  # the SuperNodes' node configs decide, not the run
        worst = None
        if self.byzantine_selection == "worst" and self.byzantine_count:
            worst = worst_byzantine_set(
                self.allocation_code(),
                self.byzantine_count,
                seed=self.seed,
                tie_rule=CERTIFICATE_TIE_RULE[self.tie_rule],
            )
        return select_byzantine(
            self.num_workers,
            self.byzantine_count,
            selection=self.byzantine_selection,
            seed=self.seed,
            ids=self.explicit_byzantine_ids,
            worst=worst,
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the first bad setting's key.

        The bounds are those of the class docstring. Nothing is loaded or created: the
        dataset sizes come from :data:`TRAIN_SIZES`, and an absolute ``output-dir`` is only
        checked to be creatable (its nearest existing ancestor a writable directory).
        """
        from fl_election import attacks, codes, data, models

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"invalid run config: {message}")

        def int_in(key: str, value: int, low: int, high: int) -> None:
            need(low <= value <= high, f"{key} must be an integer in [{low}, {high}], got {value}")

        def real_in(
            key: str, value: float, low: float, high: float, *, open_low: bool = False
        ) -> None:
            above = low < value if open_low else low <= value
            need(
                _is_finite(value) and above and value <= high,
                f"{key} must be a finite number in {'(' if open_low else '['}{low:g}, {high:g}], "
                f"got {value!r}",
            )

        def one_of(key: str, value: str, choices: Any) -> None:
            need(value in choices, f"{key} {value!r} is not one of {list(choices)}")

        for field in fields(self):
            problem = _type_problem(getattr(self, field.name), field.type)
            need(problem is None, f"{field.name.replace('_', '-')} {problem}")

        n = self.num_workers
        int_in("num-server-rounds", self.num_server_rounds, 1, MAX_ROUNDS)
        need(
            self.dataset in data.DATASETS,
            f"dataset {self.dataset!r} is not one of {list(data.DATASETS)}",
        )
        train_size = TRAIN_SIZES[self.dataset]
        problem = _path_text_problem(self.data_root)
        need(problem is None, f"data-root {problem}, got {self.data_root!r}")
        need(
            self.model in models.MODELS, f"model {self.model!r} is not one of {list(models.MODELS)}"
        )
        int_in("num-workers", n, 1, MAX_WORKERS)
        need(
            0 <= self.num_partitions <= min(MAX_WORKERS, train_size),
            f"num-partitions must be an integer in [0, {min(MAX_WORKERS, train_size)}] "
            f"(0 means n; at most {MAX_WORKERS} and the {self.dataset} training-set size "
            f"{train_size}), got {self.num_partitions}",
        )
        need(
            self.code in codes.CODE_FACTORIES,
            f"code {self.code!r} is not one of {sorted(codes.CODE_FACTORIES)}",
        )
        one_of("aggregation", self.aggregation, AGGREGATIONS)
        election = self.aggregation == "election"
        real_in("redundancy", self.redundancy, 0, MAX_WORKERS, open_low=True)
        if election and self.code == "bernoulli":
            need(
                self.redundancy <= self.k,
                f"redundancy r = {self.redundancy:g} must be <= k = {self.k} for a Bernoulli "
                "code (each entry is drawn with probability p = r / k)",
            )
            need(
                not _bernoulli_rows_hopeless(self.redundancy, self.k),
                f"redundancy r = {self.redundancy:g} is too small for a Bernoulli code with "
                f"k = {self.k}: a row would be non-empty with probability below "
                f"{1 - BERNOULLI_MAX_EMPTY_ROW_PROBABILITY:g}; use r >= "
                f"{_min_bernoulli_redundancy(self.k):g}",
            )
        int_in("code-seed", self.code_seed, 0, MAX_SEED)
        int_in("code-tolerance", self.code_tolerance, 0, MAX_WORKERS)
        int_in("repetition-group", self.repetition_group, 1, MAX_WORKERS)
        if election and self.code == "repetition":
            need(
                n % self.repetition_group == 0,
                f"repetition-group {self.repetition_group} must divide num-workers n = {n}",
            )
        need(
            self.batch_size >= self.k,
            f"batch-size ({self.batch_size}) must be >= the number of partitions k = {self.k}, "
            "so that every partition slice holds at least one sample",
        )
        need(
            self.batch_size <= train_size,
            f"batch-size ({self.batch_size}) must be <= the {self.dataset} training-set size "
            f"{train_size}",
        )
        real_in("lr", self.lr, 0, MAX_LR, open_low=True)
        try:
            milestones = self.milestones
        except ValueError as err:
            raise ValueError(f"invalid run config: {err}") from None
        need(
            all(1 <= m <= MAX_ROUNDS for m in milestones)
            and all(a < b for a, b in zip(milestones, milestones[1:], strict=False)),
            f"lr-milestones must be strictly increasing integers in [1, {MAX_ROUNDS}], "
            f"got {self.lr_milestones!r}",
        )
        real_in("lr-gamma", self.lr_gamma, 0, 1, open_low=True)
        need(
            _is_finite(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        real_in("weight-decay", self.weight_decay, 0, MAX_WEIGHT_DECAY)
        need(
            self.lr * self.weight_decay < MAX_LR_TIMES_WEIGHT_DECAY,
            f"lr * weight-decay = {self.lr:g} * {self.weight_decay:g} must be < "
            f"{MAX_LR_TIMES_WEIGHT_DECAY:g} (beyond it the decay term makes the weights "
            "diverge)",
        )
        int_in("seed", self.seed, 0, MAX_SEED)
        need(
            0 <= self.byzantine_count < n / 2,
            f"byzantine-count b = {self.byzantine_count} must satisfy 0 <= b < n/2 = {n / 2:g} "
            "(no majority vote survives b >= n/2 colluding workers)",
        )
        need(
            self.byzantine_selection in BYZANTINE_SELECTIONS,
            f"byzantine-selection {self.byzantine_selection!r} is not one of "
            f"{list(BYZANTINE_SELECTIONS)}",
        )
        try:
            ids = self.explicit_byzantine_ids
        except ValueError as err:
            raise ValueError(f"invalid run config: {err}") from None
        need(
            not ids or self.byzantine_selection == "explicit",
            f"byzantine-ids {self.byzantine_ids!r} is given but byzantine-selection is "
            f"{self.byzantine_selection!r}: byzantine-ids requires byzantine-selection = "
            "'explicit' (any other selection would ignore them)",
        )
        if self.byzantine_selection == "explicit":
            need(
                len(ids) == self.byzantine_count,
                f"byzantine-ids lists {len(ids)} worker(s) but byzantine-count is "
                f"{self.byzantine_count}",
            )
            need(
                all(0 <= i < n for i in ids) and len(set(ids)) == len(ids),
                f"byzantine-ids must be distinct worker indices in [0, {n - 1}], got {ids}",
            )
        need(
            self.attack in attacks.ATTACKS,
            f"attack {self.attack!r} is not one of {sorted(attacks.ATTACKS)}",
        )
        need(
            self.attack_direction in ATTACK_DIRECTIONS,
            f"attack-direction must be +1 or -1, got {self.attack_direction}",
        )
        real_in("attack-z", self.attack_z, 0, MAX_ATTACK_Z)
        real_in("attack-std", self.attack_std, 0, MAX_NOISE_STD)
        real_in("attack-epsilon", self.attack_epsilon, 0, MAX_ATTACK_Z, open_low=True)
        real_in("attack-inflation", self.attack_inflation, 1, MAX_INFLATION)
        attack_cls = attacks.ATTACKS[self.attack]
        need(
            not (election and attack_cls.float_only),
            f"attack {self.attack!r} forges float gradients: it needs a float aggregation "
            f"({', '.join(('fgm', *FLOAT_AGGREGATIONS))}), not 'election'",
        )
        need(
            election or not attack_cls.needs_partition_signs,
            f"attack {self.attack!r} forges sign votes from the code's rows: it needs "
            f"aggregation = 'election', not {self.aggregation!r}",
        )
        b = self.byzantine_count
        if self.aggregation in ("krum", "multikrum"):
            need(
                n >= 2 * b + 3,
                f"aggregation {self.aggregation!r} needs num-workers n >= 2b + 3 = {2 * b + 3} "
                f"(Krum's condition), got n = {n}",
            )
        if self.aggregation == "bulyan":
            need(
                n >= 4 * b + 3,
                f"aggregation 'bulyan' needs num-workers n >= 4b + 3 = {4 * b + 3} "
                f"(Bulyan's condition), got n = {n}",
            )
        real_in("dirichlet-alpha", self.dirichlet_alpha, 0, MAX_ATTACK_Z)
        one_of("malformed-kind", self.malformed_kind, attacks.MALFORM_KINDS)
        # Let the attack check its own parameters too (clear ValueErrors).
        self.create_attack()
        real_in("grad-noise-std", self.grad_noise_std, 0, MAX_NOISE_STD)
        int_in("eval-every", self.eval_every, 1, MAX_ROUNDS)
        int_in("client-eval-every", self.client_eval_every, 0, MAX_ROUNDS)
        real_in("round-timeout", self.round_timeout, MIN_ROUND_TIMEOUT, MAX_ROUND_TIMEOUT)
        int_in("num-threads", self.num_threads, 1, MAX_THREADS)
        int_in("crash-budget", self.crash_budget, 0, MAX_WORKERS)
        need(
            self.byzantine_count + self.crash_budget < n / 2,
            f"byzantine-count + crash-budget = {self.byzantine_count} + {self.crash_budget} "
            f"must be < n/2 = {n / 2:g} (the fault budget f = b + c; no majority survives "
            "half of the rows failing)",
        )
        one_of("fault-rule", self.fault_rule, ("budget", "conservative"))
        real_in("certify-time-budget", self.certify_time_budget, 0, 3600.0, open_low=True)
        int_in("max-resyncs", self.max_resyncs, 0, MAX_ROUNDS)
        int_in("resync-window", self.resync_window, 1, MAX_ROUNDS)
        int_in("max-rounds-below-quorum", self.max_rounds_below_quorum, 1, MAX_ROUNDS)
        int_in("reassign-after", self.reassign_after, 0, self.max_rounds_below_quorum - 1)
        int_in("checkpoint-every", self.checkpoint_every, 0, MAX_ROUNDS)
        one_of("tie-rule", self.tie_rule, ("gradient", "abstain"))
        one_of("downlink", self.downlink, ("vote", "full"))
        one_of("num-examples-weights", self.num_examples_weights, NUM_EXAMPLES_WEIGHTS)
        int_in("local-steps", self.local_steps, 1, 1000)
        if self.local_steps > 1:
            need(
                not election,
                "local-steps > 1 needs a float aggregation (a sign vote is one step)",
            )
            need(
                not (self.byzantine_count and attack_cls.needs_sign_sum),
                f"attack {self.attack!r} forges from every partition's gradient of one step; "
                "it needs local-steps = 1",
            )
        need(
            isinstance(self.worker_momentum, float) and 0.0 <= self.worker_momentum < 1.0,
            f"worker-momentum must be in [0, 1), got {self.worker_momentum}",
        )
        problem = _output_dir_problem(self.output_dir)
        need(problem is None, f"output-dir {problem}, got {self.output_dir!r}")
        problem = _run_name_problem(self.run_name)
        need(problem is None, f"run-name {problem}, got {self.run_name!r}")
        if self.code == "deterministic":
            b = self.code_params["b"]
            need(b < n / 2, f"code-tolerance b = {b} must be < n/2 = {n / 2:g}")


def _bernoulli_rows_hopeless(redundancy: float, k: int) -> bool:
    """Whether :func:`fl_election.codes.bernoulli` refuses ``p = redundancy / k``.

    The same expression as the factory's, so that the two agree to the last bit.
    """
    prob = float(redundancy) / k
    return bool((1.0 - prob) ** k > BERNOULLI_MAX_EMPTY_ROW_PROBABILITY)


def _min_bernoulli_redundancy(k: int) -> float:
    """Return a small ``r`` that :func:`fl_election.codes.bernoulli` accepts for ``k``.

    ``k (1 - 0.999**(1/k))`` rounded up to 7 decimals (and nudged up until accepted), so
    that the number a message advises is itself a valid setting.
    """
    exact = k * (1.0 - float(BERNOULLI_MAX_EMPTY_ROW_PROBABILITY ** (1.0 / k)))
    low = math.ceil(exact * 1e7) / 1e7
    while _bernoulli_rows_hopeless(low, k):
        low += 1e-7
    return low


def _is_finite(value: float) -> bool:
    """``math.isfinite`` that answers False (instead of raising) for a huge int."""
    try:
        return math.isfinite(value)
    except (OverflowError, TypeError):
        return False


def _type_problem(value: object, annotation: Any) -> str | None:
    """Describe why ``value`` does not fit a field annotated ``annotation``, or None."""
    type_name = annotation if isinstance(annotation, str) else annotation.__name__
    not_bool = not isinstance(value, bool)
    if type_name == "bool":
        ok, wanted = isinstance(value, bool), "a boolean"
    elif type_name == "int":
        ok, wanted = isinstance(value, numbers.Integral) and not_bool, "an integer"
    elif type_name == "float":
        ok, wanted = isinstance(value, numbers.Real) and not_bool, "a number"
    else:
        ok, wanted = isinstance(value, str), "a string"
    return None if ok else f"must be {wanted}, got {value!r}"


def _path_text_problem(text: str, max_bytes: int = MAX_PATH_BYTES) -> str | None:
    """Describe why ``text`` cannot name a file or folder, or None."""
    if "\x00" in text:
        return "must not contain a NUL byte"
    if any(unicodedata.category(char) == "Cc" for char in text):
        return "must not contain control characters"
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        return "must be encodable as a file name"
    if len(raw) > max_bytes:
        return f"must be at most {max_bytes} bytes long (is {len(raw)})"
    return None


def _output_dir_problem(text: str) -> str | None:
    """Describe why the run could not create ``output-dir`` and write into it, or None.

    Relative paths resolve only when the run saves (``FL_ELECTION_OUTPUT_ROOT`` or the
    working directory of that moment), so only their text is checked, and they may not hold
    a ``..`` folder, which would escape that root. For an absolute path
    the nearest existing ancestor (or the path itself) must be a writable, searchable
    directory; nothing is created.
    """
    problem = _path_text_problem(text)
    if problem is not None:
        return problem
    if any(len(part) > MAX_PATH_COMPONENT_BYTES for part in os.fsencode(text).split(b"/")):
        return f"must not hold a folder name longer than {MAX_PATH_COMPONENT_BYTES} bytes"
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        if ".." in path.replace(os.sep, "/").split("/"):
            return (
                "must not hold a '..' folder when relative (it would leave the output root, "
                "FL_ELECTION_OUTPUT_ROOT or the working directory); give an absolute path to "
                "write elsewhere"
            )
        return None
    probe = path.rstrip(os.sep) or os.sep
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"cannot be created: {probe!r} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot be created or written: {probe!r} is not a writable directory"
    return None


def _run_name_problem(name: str) -> str | None:
    """Describe why ``name`` is not a safe file stem, or None (empty is fine: derived)."""
    if not name:
        return None
    problem = _path_text_problem(name, MAX_RUN_NAME_BYTES)
    if problem is not None:
        return problem
    if "/" in name or "\\" in name:
        return "must be a plain file name, without '/' or '\\'"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    return None


def parse_run_config_overrides(arguments: Iterable[str]) -> dict[str, Any]:
    """Parse command-line run-config overrides into a flat mapping.

    Each argument is ``key=value`` in TOML syntax (``code='uncoded'``,
    ``num-server-rounds=20``, ``resume=true``). A key given twice is refused, naming it: a
    mapping keeps only one of the two values, and which one wins must not be a surprise.
    The keys themselves are checked by :meth:`RunConfig.from_run_config`.

    Parameters
    ----------
    arguments : iterable of str
        The overrides, one ``key=value`` per argument.

    Returns
    -------
    dict[str, Any]
        The overrides, in the order given.

    Raises
    ------
    ValueError
        On an argument that is not TOML ``key=value``, or on a key given twice.
    """
    import tomllib

    values: dict[str, Any] = {}
    for argument in arguments:
        try:
            parsed = tomllib.loads(argument)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(
                f"run-config override {argument!r} is not a TOML key=value pair: {err}"
            ) from None
        for key, value in parsed.items():
            if key in values:
                raise ValueError(
                    f"run-config key {key!r} is given twice ({values[key]!r}, then {value!r}); "
                    "give each key once"
                )
            values[key] = value
    return values


def _coerce(key: str, value: ConfigValue, annotation: Any) -> ConfigValue:
    """Convert a TOML / CLI value to the field's type, or raise a clear ``ValueError``."""
    type_name = annotation if isinstance(annotation, str) else annotation.__name__
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ValueError(
                    f"run-config key {key!r} must be a finite float, got an integer too large "
                    "for a float"
                ) from None
    elif type_name == "str":
        if isinstance(value, str):
            return value
    raise ValueError(f"run-config key {key!r} must be a {type_name}, got {value!r}")
