"""fl-election: election coding for SignSGD with majority vote.

Byzantine-robust, 1-bit-uplink distributed training after Sohn, Han, Choi and Moon,
"Election Coding for Distributed Learning: Protecting SignSGD against Byzantine Attacks",
NeurIPS 2020 (arXiv:1910.06093).

The core is framework-free: allocation codes and their exact certificate
(:mod:`fl_election.codes`), packed-sign voting kernels (:mod:`fl_election.voting`), the
vote's wire format (:mod:`fl_election.wire`), the client/server contract
(:mod:`fl_election.contract`), attack math (:mod:`fl_election.attacks`), robust aggregators
(:mod:`fl_election.aggregation`), the cost model (:mod:`fl_election.cost`), datasets and
models (:mod:`fl_election.data`, :mod:`fl_election.models`), per-partition gradients
(:mod:`fl_election.training`), the server optimizer (:mod:`fl_election.optim`) and the typed
run configuration (:mod:`fl_election.config`).

The Flower side is imported through this one namespace, so that an app with packages of
its own named ``strategies`` or ``clients`` cannot shadow it:

- :mod:`fl_election.strategies`: the server strategies (``ElectionCoding``, ...);
- :mod:`fl_election.clients`: the client API, the honest ClientApp and the Byzantine mod;
- :mod:`fl_election.simulations`: the ServerApp, the in-process grid, sweeps and plots.
"""

import os as _os

__version__ = "0.1.0"

# The repository keeps strategies/, clients/ and simulations/ at its top level (the design
# card) and installs them as subpackages of fl_election only. In a checkout and in a wheel
# they are found inside this package (fl_election/<name> is a symlink to ../<name> in the
# checkout, a copy in the wheel); a Flower App Bundle carries no symlinks, so there the
# folder above joins the package path instead.
_PARENT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "strategies")) and _os.path.isfile(
    _os.path.join(_PARENT, "strategies", "__init__.py")
):
    __path__.append(_PARENT)
