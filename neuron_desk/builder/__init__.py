"""The dataset builder: the five kinds of neuron files from any Hugging Face causal LM, for
its MLP neurons or for the latents of sparse dictionaries (SAEs, transcoders) on it.

Needs the `build` extra (torch, transformers; gguf + accelerate to read GGUF files):
`pip install 'neuron-desk[build]'`. Only `hf` imports torch, and only when a model is loaded.

    from neuron_desk.builder import BuildOptions, DatasetInfo, build_dataset, load_model
    model = load_model(Path("my-model/"))
    build_dataset(model, corpus_files, Path("my.sqlite3"), Path("work/"), DatasetInfo(...))

Latents: `load_dictionary_model(model, dictionary, base)` (or `dictionary_from_folders`) gives
a model whose units are latents, built the same way. `python -m neuron_desk.builder --help`;
neuron_desk/builder/README.md has the details.
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
    describe_latents,
    print_progress,
)
from neuron_desk.builder.dictionaries import Sae, read_dictionary, save_saelens
from neuron_desk.builder.hf import HfModel, library_versions, load_model
from neuron_desk.builder.latents import (
    DictionaryModel,
    dictionary_from_folders,
    load_dictionary_model,
)
from neuron_desk.builder.records import RecordOptions

__all__ = [
    "Build",
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "DatasetInfo",
    "DictionaryModel",
    "HfModel",
    "NeuronModel",
    "RecordOptions",
    "Sae",
    "SelectedNeuron",
    "build_dataset",
    "describe_latents",
    "dictionary_from_folders",
    "library_versions",
    "load_dictionary_model",
    "load_model",
    "print_progress",
    "read_dictionary",
    "save_saelens",
]
