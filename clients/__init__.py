"""The client side of fl-election: the client API, the Byzantine mod, the honest ClientApp.

Import it as ``fl_election.clients``:

- :func:`coded_client_app`: an election-coded ClientApp from a model, a loss and data;
- :func:`coded_train`: one function from (train message, model, loss, data) to the reply,
  for a ClientApp of one's own;
- :func:`make_byzantine_mod`, :data:`byzantine_mod`: attacks from :mod:`fl_election.attacks`
  mounted on any client built with the two above (:mod:`.attack_hook` is how);
- :mod:`.client_app`: this project's own ClientApp (``flwr run .``), built on them.
"""

from .attack_hook import ActiveAttack, active_attack, attacking
from .coded import TrainData, coded_client_app, coded_train, default_device, partition_batch
from .mods import SILENT_ERROR_CODE, attack_from_node_config, byzantine_mod, make_byzantine_mod

__all__ = [
    "SILENT_ERROR_CODE",
    "ActiveAttack",
    "TrainData",
    "active_attack",
    "attack_from_node_config",
    "attacking",
    "byzantine_mod",
    "coded_client_app",
    "coded_train",
    "default_device",
    "make_byzantine_mod",
    "partition_batch",
]
