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
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fl_election.attacks import SignAttack
    from fl_election.codes import AllocationCode

ConfigValue = bool | int | float | str

AGGREGATIONS = ("election", "fgm")
BYZANTINE_SELECTIONS = ("random", "worst", "explicit", "node-config")


def _parse_int_list(text: str, key: str) -> tuple[int, ...]:
    """Parse ``"1, 4,7"`` into ``(1, 4, 7)``; the empty string gives ``()``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"{key} must be a comma-separated list of integers, got {text!r}") from err


@dataclass(frozen=True)
class RunConfig:
    """All knobs of one experiment, validated.

    Parameters
    ----------
    num_server_rounds : int (default: 150)
        Training steps; one Flower round is one SignSGD step.
    dataset : str (default: "digits")
        ``digits`` (scikit-learn's bundled set, offline), ``mnist``, ``fashion-mnist`` or
        ``cifar10`` (torchvision).
    data_root : str (default: "")
        Folder holding torchvision datasets; empty means ``~/.cache/fl-election``.
    download : bool (default: False)
        Let torchvision download a missing dataset (needs a network).
    model : str (default: "mlp")
        ``mlp``, ``cnn`` or ``resnet18``.
    num_workers : int (default: 15)
        ``n``: workers (SuperNodes) that vote.
    num_partitions : int (default: 5)
        ``k``: data partitions of a Bernoulli code; 0 means ``k = n``. The other codes
        have ``k = n`` by construction and ignore it. Fewer, larger partitions make each
        partition's gradient sign less noisy (the reviewers' ``k != n`` point): on digits
        with ``B = 240``, ``k = 5`` votes far more reliably than ``k = 15``.
    code : str (default: "bernoulli")
        Allocation code: ``uncoded``, ``bernoulli``, ``deterministic`` or ``repetition``.
    redundancy : float (default: 3.0)
        Target mean load ``r`` of a Bernoulli code.
    code_seed : int (default: 0)
        Seed of a random code.
    code_tolerance : int (default: 0)
        ``b`` a deterministic code is built for; 0 means ``max(1, byzantine_count)``.
    repetition_group : int (default: 3)
        Group size of a fractional repetition code.
    aggregation : str (default: "election")
        ``election`` (packed sign votes) or ``fgm`` (float gradients, coordinate-wise median).
    batch_size : int (default: 240)
        Global minibatch ``B`` per step, cut into ``k`` slices of ``B // k``.
    lr : float (default: 0.001)
        Server learning rate.
    lr_milestones : str (default: "50,100")
        Comma-separated steps at which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma : float (default: 0.1)
        Learning-rate decay factor.
    momentum : float (default: 0.9)
        Server-side momentum (SPEC section 1).
    weight_decay : float (default: 0.0001)
        Weight decay added to the voted direction.
    seed : int (default: 0)
        Seed of the data split, the per-step minibatches, the model init and the attacks.
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
        Comma-separated worker indices for ``explicit`` selection.
    attack_direction : int (default: 1)
        +1 or -1, for the ``directional`` attack.
    attack_z : float (default: 1.0)
        Margin threshold of the ``alie`` attack.
    attack_std : float (default: 0.0001)
        Noise standard deviation of the ``gaussian-noise`` attack.
    malformed_kind : str (default: "garbage")
        Payload of the ``malformed`` attack: dtype, length, nan, missing or garbage.
    grad_noise_std : float (default: 0.0)
        Gaussian noise added to every honest worker's gradients before the sign (the
        paper's noisy-computation experiment, Fig. A.4b).
    eval_every : int (default: 10)
        Central test-set evaluation every this many rounds (and at the last round).
    client_eval_every : int (default: 0)
        Federated evaluation on the clients every this many rounds; 0 disables it.
    round_timeout : float (default: 600.0)
        Seconds to wait for the replies of one round; a node that misses it is counted as
        missing and the vote goes on without it.
    output_dir : str (default: "outputs")
        Where the JSON result and the plot go (relative paths resolve against the
        ``FL_ELECTION_OUTPUT_ROOT`` environment variable, else the working directory).
    run_name : str (default: "")
        File stem of the outputs; empty derives one from the config.
    num_threads : int (default: 1)
        Torch CPU threads per ClientApp.
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
    malformed_kind: str = "garbage"
    grad_noise_std: float = 0.0
    eval_every: int = 10
    client_eval_every: int = 0
    round_timeout: float = 600.0
    output_dir: str = "outputs"
    run_name: str = ""
    num_threads: int = 1

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
            Kebab-case keys; missing keys take their defaults, unknown keys are an error
            (a typo must not silently fall back to a default).

        Returns
        -------
        RunConfig
            The validated configuration.

        Raises
        ------
        ValueError
            On an unknown key, a value of the wrong type, or an impossible setting.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        unknown = []
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                unknown.append(key)
                continue
            values[name] = _coerce(key, value, known[name].type)
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
            return {"n": n, "b": self.code_tolerance or max(1, self.byzantine_count)}
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
        scheme = "fgm" if self.aggregation == "fgm" else self.code
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

        if self.aggregation == "fgm":
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
                self.allocation_code(), self.byzantine_count, seed=self.seed
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
        """Check every field; raise ``ValueError`` naming the first bad setting."""
        from fl_election import attacks, codes, data, models

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"invalid run config: {message}")

        n = self.num_workers
        need(
            self.num_server_rounds >= 1,
            f"num-server-rounds must be >= 1, got {self.num_server_rounds}",
        )
        need(
            self.dataset in data.DATASETS,
            f"dataset {self.dataset!r} is not one of {list(data.DATASETS)}",
        )
        need(
            self.model in models.MODELS, f"model {self.model!r} is not one of {list(models.MODELS)}"
        )
        need(n >= 1, f"num-workers must be >= 1, got {n}")
        need(
            self.num_partitions >= 0,
            f"num-partitions must be >= 0 (0 means n), got {self.num_partitions}",
        )
        need(
            self.code in codes.CODE_FACTORIES,
            f"code {self.code!r} is not one of {sorted(codes.CODE_FACTORIES)}",
        )
        need(self.redundancy > 0, f"redundancy must be > 0, got {self.redundancy}")
        need(
            self.aggregation in AGGREGATIONS,
            f"aggregation {self.aggregation!r} is not one of {list(AGGREGATIONS)}",
        )
        need(
            self.batch_size >= self.k,
            f"batch-size ({self.batch_size}) must be >= the number of partitions k = {self.k}, "
            "so that every partition slice holds at least one sample",
        )
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 < self.lr_gamma <= 1, f"lr-gamma must be in (0, 1], got {self.lr_gamma}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight-decay must be >= 0, got {self.weight_decay}")
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
        if self.byzantine_selection == "explicit":
            ids = self.explicit_byzantine_ids
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
        # Let the attack and the code check their own parameters (clear ValueErrors).
        self.create_attack()
        need(self.grad_noise_std >= 0, f"grad-noise-std must be >= 0, got {self.grad_noise_std}")
        need(self.eval_every >= 1, f"eval-every must be >= 1, got {self.eval_every}")
        need(
            self.client_eval_every >= 0,
            f"client-eval-every must be >= 0, got {self.client_eval_every}",
        )
        need(self.round_timeout > 0, f"round-timeout must be > 0, got {self.round_timeout}")
        need(self.num_threads >= 1, f"num-threads must be >= 1, got {self.num_threads}")
        self.milestones  # noqa: B018  (parses, raising on a malformed list)
        if self.code == "deterministic":
            b = self.code_params["b"]
            need(b < n / 2, f"code-tolerance b = {b} must be < n/2 = {n / 2:g}")


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
            return float(value)
    elif type_name == "str":
        if isinstance(value, str):
            return value
    raise ValueError(f"run-config key {key!r} must be a {type_name}, got {value!r}")
