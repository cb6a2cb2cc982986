"""Value types (NeuronRef, the data model), JSON codec, errors, the best-first ordering and
Paths: pure Python, no Qt, no I/O policy."""
