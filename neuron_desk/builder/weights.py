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


def _outputs(w: MlpWeights, directions: Matrix) -> Matrix:
    """The logits each direction (row) writes: (len(directions), vocab)."""
    if w.architecture == "gpt2":
        return np.asarray((directions * w.final_norm) @ w.unembedding.T, dtype=np.float32)
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
    outputs = _outputs(w, w.down_columns[layer][list(neurons)])  # (neurons, vocab)
    size = min(len(vocab), w.embedding.shape[0])
    summaries = []
    for k in range(len(neurons)):
        column = np.ascontiguousarray(inputs[:size, k])
        row = np.ascontiguousarray(outputs[k, :size])
        in_pos, in_neg = _extremes(column, n)
        out_pos, out_neg = _extremes(row, n)
        summaries.append(
            WeightBasedSummaryOfNeuron(
                input_positive=_tokens(column, in_pos, vocab),
                input_negative=_tokens(column, in_neg, vocab),
                output_positive=_tokens(row, out_pos, vocab),
                output_negative=_tokens(row, out_neg, vocab),
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
