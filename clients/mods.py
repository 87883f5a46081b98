"""Byzantine behaviour as a ClientApp mod.

The same mod runs in simulation and in a real deployment: it wraps the honest train
handler and, on a Byzantine node, changes what goes in (poisoned labels, noisy gradients,
a request for the sign sum over *all* partitions) and what comes out (the forged vote, a
malformed payload, or no vote at all). The attack math lives in :mod:`fl_election.attacks`;
this module only translates between Flower messages and it.

Which nodes are Byzantine:

- in a deployment, a SuperNode started with ``--node-config "byzantine=true"`` (optionally
  ``attack='reverse'``) is Byzantine, one with ``byzantine=false`` is honest; with
  ``byzantine-selection = "node-config"`` a node without the key is honest too;
- otherwise the run config decides (``byzantine-count``, ``byzantine-selection``,
  ``byzantine-ids``) over the code rows the strategy assigns (``worker-index``), so
  ``worst`` picks the rows that hurt the code most, whatever node ids Flower hands out.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from clients.context import byzantine_rows, run_config
from fl_election.attacks import SignAttack, create_attack, forge_gradient, malform
from fl_election.config import ConfigValue
from fl_election.voting import unpack_signs
from fl_election.wire import decode_vote, encode_vote

#: Error code of the reply a silent node produces (Flower always returns some message;
#: the strategy treats an error reply exactly like a missing vote).
SILENT_ERROR_CODE = 4100


def _truthy(value: ConfigValue) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"node-config 'byzantine' must be true or false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def node_attack(context: Context, config: ConfigRecord) -> SignAttack | None:
    """Return this node's attack for the current message, or ``None`` if it is honest."""
    cfg = run_config(context)
    node_config = context.node_config
    if "byzantine" in node_config:  # a deployment names its Byzantine SuperNodes
        if not _truthy(node_config["byzantine"]):
            return None
        name = str(node_config.get("attack", cfg.attack))
        return create_attack(name, **cfg.replace(attack=name).attack_params)
    if cfg.byzantine_selection == "node-config":
        return None  # only nodes marked byzantine=true attack; unmarked nodes are honest
    if cfg.byzantine_count == 0 or cfg.attack == "none":
        return None
    worker = int(config.get("worker-index", -1))  # type: ignore[arg-type]
    if worker not in byzantine_rows(context):
        return None
    return create_attack(cfg.attack, **cfg.attack_params)


def _rng(config: ConfigRecord) -> np.random.Generator:
    seed = int(config.get("seed", 0))  # type: ignore[arg-type]
    step = int(config.get("step", 0))  # type: ignore[arg-type]
    worker = int(config.get("worker-index", 0))  # type: ignore[arg-type]
    return np.random.default_rng([seed, step, worker, 0xB7])


def byzantine_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Turn the honest train handler into the node's attack, if it is Byzantine."""
    if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
        return call_next(msg, context)
    config = msg.content["config"]
    attack = node_attack(context, config)
    if attack is None or attack.name == "none":
        return call_next(msg, context)

    if attack.drops_reply:
        return Message(Error(code=SILENT_ERROR_CODE, reason="silent node: no vote"), reply_to=msg)
    if attack.poisons_data:
        config["label-flip"] = True
        return call_next(msg, context)
    if attack.perturbs_gradient:
        config["grad-noise-std"] = float(attack.std)
        return call_next(msg, context)
    if attack.needs_sign_sum:
        # The omniscient adversary knows every partition's gradient: compute them all.
        config["partition-ids"] = list(range(int(config["num-partitions"])))  # type: ignore[arg-type]
        config["return-sign-sum"] = True

    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    vote = reply.content["vote"]
    rng = _rng(config)
    sign_sum = vote["sign-sum"].numpy() if "sign-sum" in vote else None
    forged = ArrayRecord()
    if "gradient" in vote:  # the FGM baseline: the attack acts on float gradients
        gradient = vote["gradient"].numpy()
        payload = forge_gradient(attack, gradient, sign_sum, rng)
        if attack.malforms_reply:
            bad = malform(gradient, str(attack.kind), rng)
            if bad is not None:
                forged["gradient"] = Array(bad)
        else:
            forged["gradient"] = Array(payload.astype(np.float32))
    else:
        count = int(reply.content["metrics"]["num-coordinates"])  # type: ignore[arg-type]
        arrays = {key: vote[key].numpy() for key in vote.keys() if key != "sign-sum"}
        signs, abstain = decode_vote(arrays, count)
        honest = unpack_signs(signs, count, abstain)
        if attack.malforms_reply:
            bad = malform(signs, str(attack.kind), rng)
            if bad is not None:
                forged["signs"] = Array(bad)
        else:
            for key, array in encode_vote(attack.forge(honest, sign_sum, rng)).items():
                forged[key] = Array(array)
    reply.content["vote"] = forged
    return reply
