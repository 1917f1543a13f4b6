"""glassbench: a results service for benchmarking MLIPs on glass simulations."""

__version__ = "0.1.0"
