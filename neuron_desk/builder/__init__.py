"""The dataset builder: the five kinds of neuron files from any Hugging Face causal LM.

Needs the `build` extra (torch, transformers; gguf + accelerate to read GGUF files):
`pip install 'neuron-desk[build]'`. Only `hf` imports torch, and only when a model is loaded.

    from neuron_desk.builder import BuildOptions, DatasetInfo, build_dataset, load_model
    model = load_model(Path("my-model/"))
    build_dataset(model, corpus_files, Path("my.sqlite3"), Path("work/"), DatasetInfo(...))

or `python -m neuron_desk.builder --help`. neuron_desk/builder/README.md has the details.
"""

from __future__ import annotations

from neuron_desk.builder.build import (
    Build,
    BuildError,
    BuildOptions,
    BuildResult,
    DatasetInfo,
    NeuronModel,
    SelectedNeuron,
    build_dataset,
    print_progress,
)
from neuron_desk.builder.hf import HfModel, library_versions, load_model
from neuron_desk.builder.records import RecordOptions

__all__ = [
    "Build",
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "DatasetInfo",
    "HfModel",
    "NeuronModel",
    "RecordOptions",
    "SelectedNeuron",
    "build_dataset",
    "library_versions",
    "load_model",
    "print_progress",
]
