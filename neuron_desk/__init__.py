"""neuron-desk: browse, explain and score the neurons of language models."""

__version__ = "0.1.0"
