"""The zoo's networks in Paddle, one module per family, and the layers they share (these modules import Paddle).

The catalogue (:mod:`hpi.zoo.catalogue`) only declares which models exist, so that listing the zoo never imports
Paddle; a record's ``build`` imports its network from here. :mod:`hpi.zoo.nets.layers` holds the shared blocks
(conv-BN-act, SE, heads, the softmax output) and the conventions seeding relies on; :mod:`hpi.zoo.nets.fidelity`
counts parameters and FLOPs against the published figures.
"""
