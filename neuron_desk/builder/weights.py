"""Weight-based files: top tokens by weight and related neurons (pure numpy).

Two architectures, defined in neuron_desk/builder/README.md:

- `gpt2` (GELU MLP, LayerNorm): the public datasets' linear definitions, e.g. the connection
  of (l1, n1) to (l2, n2) is `c_proj[l1][n1, :] @ diag(ln_2[l2].g) @ c_fc[l2][:, n2]`.
- `swiglu` (Llama-style gate/up/down MLP, RMSNorm): the activation the neuron would have if
  the residual stream held only one direction — a token's embedding, or an upstream neuron's
  output (down) column: `silu(x @ gate[n]) * (x @ up[n])` with `x = rmsnorm_l(direction)`.
  Output weights are the logits of the neuron's down column through the final RMSNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from neuron_desk.builder.records import short_float
from neuron_desk.core.model import (
    NeuronConnections,
    RelatedNeurons,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)

Matrix = npt.NDArray[np.float32]
Architecture = Literal["gpt2", "swiglu"]
WeightFiles = tuple[list[WeightBasedSummaryOfNeuron], list[RelatedNeurons]]
"""Top tokens by weight and related units, one of each per unit."""


@dataclass(frozen=True)
class Readout:
    """A model's token embedding and how a residual-stream direction becomes logits.

    `architecture` "gpt2": `(d * final_norm) @ unembedding.T` (LayerNorm's gain, as the public
    definitions); "swiglu": `rmsnorm(d) @ unembedding.T`; "linear": `d @ unembedding.T`.
    """

    architecture: Literal["gpt2", "swiglu", "linear"]
    embedding: Matrix
    unembedding: Matrix
    final_norm: Matrix
    norm_eps: float = 0.0


@dataclass(frozen=True)
class MlpWeights:
    """The weights the weight-based files need, as float32 numpy arrays.

    `input_rows[l]` is (n_neurons, d_model): c_fc columns for gpt2, gate rows for swiglu;
    `up_rows[l]` the up rows (swiglu only); `down_columns[l]` is (n_neurons, d_model): what
    each neuron writes to the residual stream per unit of activation.
    """

    architecture: Architecture
    embedding: Matrix
    unembedding: Matrix
    final_norm: Matrix
    mlp_norms: Sequence[Matrix]
    input_rows: Sequence[Matrix]
    down_columns: Sequence[Matrix]
    up_rows: Sequence[Matrix] | None = None
    norm_eps: float = 0.0

    @property
    def n_layers(self) -> int:
        """How many MLP layers."""
        return len(self.input_rows)

    @property
    def readout(self) -> Readout:
        """The embedding and the logit readout these weights imply."""
        return Readout(
            self.architecture, self.embedding, self.unembedding, self.final_norm, self.norm_eps
        )


def _silu(x: Matrix) -> Matrix:
    return np.asarray(x / (1.0 + np.exp(-x)), dtype=np.float32)


def _rms_normalize(x: Matrix, gain: Matrix, eps: float) -> Matrix:
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps)
    return np.asarray(x / rms * gain, dtype=np.float32)


def _responses(w: MlpWeights, layer: int, x: Matrix, neurons: Sequence[int] | None) -> Matrix:
    """How the neurons of `layer` respond to each direction (row) of x: (len(x), neurons)."""
    rows = w.input_rows[layer] if neurons is None else w.input_rows[layer][list(neurons)]
    if w.architecture == "gpt2":
        return np.asarray((x * w.mlp_norms[layer]) @ rows.T, dtype=np.float32)
    assert w.up_rows is not None
    up = w.up_rows[layer] if neurons is None else w.up_rows[layer][list(neurons)]
    normed = _rms_normalize(x, w.mlp_norms[layer], w.norm_eps)
    return _silu(normed @ rows.T) * (normed @ up.T)


def _outputs(w: Readout, directions: Matrix) -> Matrix:
    """The logits each direction (row) writes: (len(directions), vocab)."""
    if w.architecture == "gpt2":
        return np.asarray((directions * w.final_norm) @ w.unembedding.T, dtype=np.float32)
    if w.architecture == "linear":
        return np.asarray(directions @ w.unembedding.T, dtype=np.float32)
    normed = _rms_normalize(directions, w.final_norm, w.norm_eps)
    return np.asarray(normed @ w.unembedding.T, dtype=np.float32)


def _extremes(values: Matrix, n: int) -> tuple[list[int], list[int]]:
    """Indices of the n most positive (> 0) and n most negative (< 0) values."""
    order = np.argsort(-values, kind="stable")
    positive = [int(i) for i in order[:n] if values[i] > 0]
    negative = [int(i) for i in order[::-1][:n] if values[i] < 0]
    return positive, negative


def _tokens(values: Matrix, indices: list[int], vocab: Sequence[str]) -> TokensAndWeights:
    return TokensAndWeights(
        tokens=[vocab[i] for i in indices],
        strengths=[short_float(values[i]) for i in indices],
    )


def token_weights(
    w: MlpWeights, layer: int, neurons: Sequence[int], vocab: Sequence[str], n: int = 50
) -> list[WeightBasedSummaryOfNeuron]:
    """Tokens with the largest input and output weights of each neuron, both signs."""
    inputs = _responses(w, layer, w.embedding, neurons)  # (vocab, neurons)
    outputs = _outputs(w.readout, w.down_columns[layer][list(neurons)])  # (neurons, vocab)
    return _summaries(inputs, outputs, vocab, n)


def _summaries(
    inputs: Matrix | None, outputs: Matrix | None, vocab: Sequence[str], n: int
) -> list[WeightBasedSummaryOfNeuron]:
    """One summary per unit from input weights (vocab, units) and output weights (units,
    vocab); a side that is None is left empty."""
    count = inputs.shape[1] if inputs is not None else 0 if outputs is None else len(outputs)
    empty = TokensAndWeights(tokens=[], strengths=[])
    summaries = []
    for k in range(count):
        ins = outs = (empty, empty)
        if inputs is not None:
            column = np.ascontiguousarray(inputs[: len(vocab), k])
            positive, negative = _extremes(column, n)
            ins = (_tokens(column, positive, vocab), _tokens(column, negative, vocab))
        if outputs is not None:
            row = np.ascontiguousarray(outputs[k, : len(vocab)])
            positive, negative = _extremes(row, n)
            outs = (_tokens(row, positive, vocab), _tokens(row, negative, vocab))
        summaries.append(
            WeightBasedSummaryOfNeuron(
                input_positive=ins[0],
                input_negative=ins[1],
                output_positive=outs[0],
                output_negative=outs[1],
            )
        )
    return summaries


def _connections(values: Matrix, keys: list[str], n: int) -> NeuronConnections:
    positive, negative = _extremes(values, n)
    return NeuronConnections(
        top_positive_neurons=[keys[i] for i in positive],
        top_negative_neurons=[keys[i] for i in negative],
        top_positive_weights=[short_float(values[i]) for i in positive],
        top_negative_weights=[short_float(values[i]) for i in negative],
    )


def related_neurons(
    w: MlpWeights, layer: int, neurons: Sequence[int], n: int = 20
) -> list[RelatedNeurons]:
    """Upstream (c_fc: layers below) and downstream (c_proj: layers above) connections."""
    below = list(range(layer))
    above = list(range(layer + 1, w.n_layers))
    keys_below = [f"{lo}_{i}" for lo in below for i in range(w.input_rows[lo].shape[0])]
    keys_above = [f"{hi}_{i}" for hi in above for i in range(w.input_rows[hi].shape[0])]
    upstream: Matrix | None = None
    if below:
        upstream = np.concatenate(
            [_responses(w, layer, w.down_columns[lo], neurons) for lo in below]
        )  # (upstream neurons, neurons)
    downstream: Matrix | None = None
    if above:
        own = w.down_columns[layer][list(neurons)]
        downstream = np.concatenate(
            [_responses(w, hi, own, None) for hi in above], axis=1
        )  # (neurons, downstream neurons)
    results = []
    for k in range(len(neurons)):
        results.append(
            RelatedNeurons(
                c_fc=None
                if upstream is None
                else _connections(np.ascontiguousarray(upstream[:, k]), keys_below, n),
                c_proj=None
                if downstream is None
                else _connections(np.ascontiguousarray(downstream[k]), keys_above, n),
            )
        )
    return results


def _unit_rows(matrix: Matrix) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms > 0, norms, 1), dtype=np.float32)


def latent_token_weights(
    readout: Readout,
    encoder: Matrix | None,
    decoder: Matrix | None,
    latents: Sequence[int],
    vocab: Sequence[str],
    n: int = 50,
) -> list[WeightBasedSummaryOfNeuron]:
    """Tokens with the largest input weights `W_E · W_enc[:, i]` (the token's embedding read
    by the encoder) and output weights `readout(W_dec[i])` (the logits the latent's decoder
    direction writes) of each latent; `encoder` (d_model, d_sae) or `decoder` (d_sae,
    d_model) None when its width is not the residual stream's."""
    chosen = list(latents)
    inputs = None if encoder is None else readout.embedding @ encoder[:, chosen]
    outputs = None if decoder is None else _outputs(readout, decoder[chosen])
    return _summaries(inputs, outputs, vocab, n)


def latent_related(
    layer: int, encoder: Matrix, decoder: Matrix, latents: Sequence[int], n: int = 20
) -> list[RelatedNeurons]:
    """Latents of the same hook point writing (`c_proj`: cosine similarity of decoder rows)
    and reading (`c_fc`: of encoder columns) the most similar directions, both signs; a
    latent is not its own relative."""
    chosen = list(latents)
    keys = [f"{layer}_{i}" for i in range(decoder.shape[0])]
    by_side = []
    for rows in (np.ascontiguousarray(encoder.T), decoder):
        unit = _unit_rows(rows)
        similarity = unit[chosen] @ unit.T  # (latents, d_sae)
        similarity[np.arange(len(chosen)), chosen] = 0.0  # neither positive nor negative
        by_side.append(similarity)
    reading, writing = by_side
    return [
        RelatedNeurons(
            c_fc=_connections(np.ascontiguousarray(reading[k]), keys, n),
            c_proj=_connections(np.ascontiguousarray(writing[k]), keys, n),
        )
        for k in range(len(chosen))
    ]
