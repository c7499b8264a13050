"""Peer implementations of the workloads, one module per peer.

Each module imports its peer at the top, so import it only after
``benchmarks._harness.peer_missing`` said the peer is installed.
"""
