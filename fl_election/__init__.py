"""fl-election: election coding for SignSGD with majority vote.

Byzantine-robust, 1-bit-uplink distributed training after Sohn, Han, Choi and Moon,
"Election Coding for Distributed Learning: Protecting SignSGD against Byzantine Attacks",
NeurIPS 2020 (arXiv:1910.06093).

The package is framework-free: allocation codes and their exact certificate
(:mod:`fl_election.codes`), packed-sign voting kernels (:mod:`fl_election.voting`), the
vote's wire format (:mod:`fl_election.wire`), attack math (:mod:`fl_election.attacks`),
robust aggregators (:mod:`fl_election.aggregation`), the
cost model (:mod:`fl_election.cost`), datasets and models (:mod:`fl_election.data`,
:mod:`fl_election.models`), per-partition gradients (:mod:`fl_election.training`), the server
optimizer (:mod:`fl_election.optim`) and the typed run configuration
(:mod:`fl_election.config`). The Flower strategy, clients and apps live in the top-level
``strategies``, ``clients`` and ``simulations`` packages.
"""

__version__ = "0.1.0"
