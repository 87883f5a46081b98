"""Byzantine behaviour as a ClientApp mod, for any ClientApp built on the client API.

The same mod runs in simulation and in a real deployment, on this project's ClientApp or
on an outside one built with :func:`fl_election.clients.coded_train` /
:func:`fl_election.clients.coded_client_app`. It is configured by its arguments and by
the SuperNode's node config, never by the run config of a particular project. The attack
math lives in :mod:`fl_election.attacks`; this module only decides who attacks, and how
the attack reaches the client:

- ``silent``: the mod answers with an error instead of calling the client;
- every other attack is *declared* to the client through
  :mod:`fl_election.clients.attack_hook` for the duration of ``call_next``: the client API
  flips the targets (``label-flip``), perturbs each gradient (``gaussian-noise``), computes
  every partition's sign (``omniscient``, ``ipm``, ``alie``) and forges the vote before
  encoding it once;
- ``malformed``: after the client answered, the mod replaces the encoded payload by a
  malformed one (post-processing the reply only, like Flower's ``fixedclipping_mod``).

Which nodes are Byzantine, in this order:

1. a SuperNode started with ``--node-config "byzantine=true"`` is Byzantine (attack from
   its ``attack`` key, else the mod's ``attack``; parameters from its ``attack-direction``,
   ``attack-z``, ``attack-std``, ``malformed-kind`` keys), one with ``byzantine=false``
   is honest;
2. otherwise the mod's ``select(context, instruction)`` decides, if given (it may read the
   node config itself, ``context.node_config``, e.g. a key of your own);
3. otherwise the node is Byzantine when the mod has an ``attack`` and the node's code row
   (``worker-index``) is in ``rows``.

One Byzantine mod per ClientApp: every mod built here already reads the node config, so
stacking ``byzantine_mod`` with ``make_byzantine_mod(...)`` is refused on the first train
message (the error reply says so). An attacking node logs its attack once per node: the
flag lives in the node's ``context.state`` (key :data:`STATE_KEY`), which Flower keeps
across messages even where every message starts a fresh ClientApp process.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.supercore import log

from fl_election import contract
from fl_election.attacks import SignAttack, create_attack_from_config, malform
from fl_election.contract import ContractError, TrainInstruction
from fl_election.wire import SIGNS

from .attack_hook import ActiveAttack, attacking

__all__ = [
    "SILENT_ERROR_CODE",
    "STACKED_MODS_ERROR",
    "STATE_KEY",
    "AttackSelector",
    "attack_from_node_config",
    "byzantine_mod",
    "make_byzantine_mod",
]

#: Error code of the reply a silent node produces (Flower always returns some message;
#: the strategy treats an error reply exactly like a missing vote).
SILENT_ERROR_CODE = 4100

#: ``select(context, instruction) -> attack, attack name or None`` for a train message.
AttackSelector = Callable[[Context, TrainInstruction], SignAttack | str | None]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError(f"node-config 'byzantine' must be true or false, got {value!r}")
        return value.lower() in _TRUE
    return bool(value)


def attack_from_node_config(
    node_config: Mapping[str, Any],
    instruction: TrainInstruction,
    default: str | SignAttack | None = None,
) -> SignAttack | None | bool:
    """Return the node config's verdict: an attack, ``None`` (honest), or ``False`` (silent on it).

    Parameters
    ----------
    node_config : Mapping[str, Any]
        The SuperNode's node config.
    instruction : TrainInstruction
        The current train instruction (``alie`` needs its ``k``).
    default : str | SignAttack | None (default: None)
        The attack of a node marked ``byzantine=true`` without an ``attack`` key.

    Returns
    -------
    SignAttack | None | bool
        The attack of a node marked Byzantine, ``None`` for a node marked honest, and
        ``False`` when the node config does not say (no ``byzantine`` key).
    """
    if "byzantine" not in node_config:
        return False
    if not _truthy(node_config["byzantine"]):
        return None
    name = node_config.get("attack", default)
    if isinstance(name, SignAttack):
        return name
    if name is None:
        raise ValueError("node-config byzantine=true needs an 'attack' key (or a mod default)")
    return create_attack_from_config(
        str(name), node_config, num_partitions=instruction.num_partitions
    )


#: Key of the node's ``context.state`` record in which the mod notes what it has logged.
STATE_KEY = "fl-election.byzantine-mod"

#: Reason of the refusal when two Byzantine mods wrap the same ClientApp.
STACKED_MODS_ERROR = (
    "two Byzantine mods are stacked on this ClientApp: use one (make_byzantine_mod(...) "
    "reads the node config too, like byzantine_mod)"
)

# Set while a Byzantine mod's call_next runs (the mods and the ClientApp share a thread).
_INSIDE: ContextVar[bool] = ContextVar("fl_election_byzantine_mod_inside", default=False)


@contextmanager
def _only_mod() -> Iterator[None]:
    """Mark a Byzantine mod's call as running; refuse a second mod inside it.

    A module-level function (pickled by reference), so the mods built here stay picklable
    for Flower's Ray simulation although the context variable itself is not.
    """
    if _INSIDE.get():
        raise RuntimeError(STACKED_MODS_ERROR)
    token = _INSIDE.set(True)
    try:
        yield
    finally:
        _INSIDE.reset(token)


def _first_time(context: Context, note: str) -> bool:
    """Record ``note`` in the node's state; return whether it was new there."""
    record = context.state.get(STATE_KEY)
    if not isinstance(record, ConfigRecord):
        record = ConfigRecord({"logged": []})
        context.state[STATE_KEY] = record
    value = record.get("logged", [])
    logged = [str(x) for x in value] if isinstance(value, list) else []
    if note in logged:
        return False
    record["logged"] = [*logged, note]
    return True


def _announce_once(context: Context, row: int, attack: str) -> None:
    if _first_time(context, f"attack:{attack}"):
        log(
            INFO,
            "Byzantine mod: node %d (code row %d) mounts attack %r",
            context.node_id,
            row,
            attack,
        )


def _warn_once(context: Context, message: str) -> None:
    if _first_time(context, f"warning:{message}"):
        log(WARNING, "Byzantine mod: node %d: %s; it stays honest", context.node_id, message)


def _rng(instruction: TrainInstruction) -> np.random.Generator:
    return np.random.default_rng(
        [instruction.seed, instruction.step, instruction.worker_index, 0xB7]
    )


def _malform_reply(reply: Message, kind: str, rng: np.random.Generator) -> None:
    """Replace the reply's encoded payload by a malformed one, in place."""
    vote = reply.content[contract.VOTE]
    assert isinstance(vote, ArrayRecord)
    key = SIGNS if SIGNS in vote else contract.GRADIENT
    raw = np.ascontiguousarray(vote[key].numpy()).view(np.uint8).reshape(-1)
    bad = malform(raw, kind, rng)
    forged = ArrayRecord({k: v for k, v in vote.items() if k != key})
    if bad is not None:
        forged[key] = Array(bad)
    reply.content[contract.VOTE] = forged


def make_byzantine_mod(
    attack: str | SignAttack | None = None,
    *,
    rows: Collection[int] = (),
    select: AttackSelector | None = None,
    **params: Any,
) -> Mod:
    """Build a mod that turns a coded client into a Byzantine one where told to.

    Parameters
    ----------
    attack : str | SignAttack | None (default: None)
        The attack of the ``rows`` (and the default of nodes marked ``byzantine=true``
        without an ``attack`` key): a registry name (:data:`fl_election.attacks.ATTACKS`)
        or an attack object.
    rows : Collection[int] (default: ())
        Code rows (``worker-index``) that mount ``attack``.
    select : AttackSelector | None (default: None)
        ``select(context, instruction)`` decides per message instead of ``rows``: an
        attack, a registry name or ``None`` (honest). It is asked only when the node config
        has no ``byzantine`` key (a ``byzantine`` key decides first), and it may read the
        node config itself, e.g. ``lambda c, i: c.node_config.get("my-attack")``.
    **params : Any
        Parameters of a named ``attack`` in flat form, e.g. ``{"attack-z": 1.5}``.

    Returns
    -------
    Mod
        The mod, for ``ClientApp(mods=[...])`` or ``@app.train(mods=[...])``.
    """
    flat = {key.replace("_", "-"): value for key, value in params.items()}
    chosen_rows = frozenset(int(r) for r in rows)

    def choose(context: Context, instruction: TrainInstruction) -> SignAttack | None:
        verdict = attack_from_node_config(context.node_config, instruction, attack)
        if verdict is not False:
            return verdict if isinstance(verdict, SignAttack) else None
        if select is not None:
            chosen = select(context, instruction)
            if isinstance(chosen, str):
                chosen = create_attack_from_config(
                    chosen, flat, num_partitions=instruction.num_partitions
                )
            return chosen
        if attack is None or instruction.worker_index not in chosen_rows:
            return None
        if isinstance(attack, SignAttack):
            return attack
        return create_attack_from_config(attack, flat, num_partitions=instruction.num_partitions)

    def byzantine(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
            return call_next(msg, context)
        with _only_mod():
            return _byzantine(msg, context, call_next)

    def _byzantine(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            instruction = TrainInstruction.from_config(msg.content[contract.CONFIG])
        except (ContractError, KeyError, TypeError):
            return call_next(msg, context)  # the client answers with the contract error
        chosen = choose(context, instruction)
        if chosen is None or chosen.name == "none":
            if "attack" in context.node_config and "byzantine" not in context.node_config:
                _warn_once(context, "node config names an attack but not byzantine=true")
            return call_next(msg, context)
        _announce_once(context, instruction.worker_index, chosen.name)
        if chosen.drops_reply:
            return Message(
                Error(code=SILENT_ERROR_CODE, reason="silent node: no vote"), reply_to=msg
            )
        hook = ActiveAttack(chosen, rng=_rng(instruction))
        with attacking(hook):
            reply = call_next(msg, context)
        if reply.has_error():
            return reply
        if not hook.used:
            raise RuntimeError(
                f"attack {chosen.name!r} cannot be mounted: the ClientApp did not compute "
                "its vote with fl_election's client API (coded_train / coded_client_app)"
            )
        if chosen.malforms_reply:
            _malform_reply(reply, str(getattr(chosen, "kind", "garbage")), hook.rng)
        return reply

    byzantine.__name__ = "byzantine_mod"
    return byzantine


#: The mod configured by node config alone: a SuperNode started with
#: ``--node-config "byzantine=true attack='reverse'"`` attacks, every other node is honest.
byzantine_mod: Mod = make_byzantine_mod()
