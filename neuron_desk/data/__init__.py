"""Datasets: the registry, sources, the SQLite store and the neuron service."""
