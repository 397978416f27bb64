"""Shared transport infrastructure with no domain knowledge.

``infra`` depends on nothing of ours, so the controller, the phone bridge, the
cloud and the simulators may all use it: :mod:`infra.broker` (pick Mosquitto when
reachable, else start the embedded amqtt broker) and :mod:`infra.radio` (bumble's
virtual radio, fixed for many devices, with an optional timing model).
"""
