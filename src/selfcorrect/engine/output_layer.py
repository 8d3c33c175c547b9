"""The output layer computed one slice of the vocabulary at a time on CPU: the same numbers in fewer seconds.

Every decoding step multiplies the batch's hidden states by the whole output matrix (49,152 x 576 for SmolLM2, 113 MB
in fp32). MKL runs that one product for 64 rows at 0.035-0.046 TFLOP/s on this project's CPU, and the same product in
slices of 1,024 output rows at 0.049-0.076 (most likely because a slice's weights stay in cache while every row uses
them): a decoding step of the model, 64 rows over 200 cached tokens, took 0.93x as long (benchmarks/README.md, "The
output layer in slices"). Each logit is the same dot product over the hidden size either way, and with slices of one
width, a multiple of 256, MKL gives the same bits as the whole product (tests/test_engine.py checks it at SmolLM2's
shape, and the tiny model's logits, answers and option scores). A narrow or odd last slice need not: it can take
another kernel (a vocabulary of 49,153 gave other last bits), so a vocabulary that no width of
``SLICE_ROWS_CHOICES`` divides is left whole.
"""

from __future__ import annotations

import functools

SLICE_ROWS_CHOICES = (1024, 512, 256)  # the widest that divides the vocabulary


def sliced_linear(hidden, weight, bias=None, rows: int = 1024):
    """``torch.nn.functional.linear(hidden, weight, bias)``, computed ``rows`` output features at a time."""
    import torch

    out = hidden.new_empty(*hidden.shape[:-1], weight.shape[0])
    for start in range(0, weight.shape[0], rows):
        part = slice(start, start + rows)
        out[..., part] = torch.nn.functional.linear(hidden, weight[part], None if bias is None else bias[part])
    return out


def _sliced_forward(layer, rows, hidden):
    return sliced_linear(hidden, layer.weight, layer.bias, rows)


def slice_rows(out_features: int, choices=None) -> int | None:
    """The width of the slices for an output layer of ``out_features``: the widest of ``choices`` (by default
    ``SLICE_ROWS_CHOICES``) that divides it into two or more slices, else None (left whole)."""
    widths = choices or SLICE_ROWS_CHOICES
    return next((rows for rows in widths if out_features % rows == 0 and out_features > rows), None)


def use_sliced_output_layer(model, choices=None) -> bool:
    """Make ``model``'s output layer compute its product in slices (its weights, and their tying, untouched).

    Only a plain ``nn.Linear`` that a width of ``choices`` divides is changed; returns whether it was. The layer's
    own ``forward`` is shadowed on the instance, so :func:`use_stock_output_layer` undoes it.
    """
    import torch

    layer = model.get_output_embeddings()
    rows = slice_rows(layer.out_features, choices) if type(layer) is torch.nn.Linear else None
    if rows is None:
        return False
    layer.forward = functools.partial(_sliced_forward, layer, rows)
    return True


def use_stock_output_layer(model) -> None:
    """Undo :func:`use_sliced_output_layer`: the output layer as the model was loaded."""
    layer = model.get_output_embeddings()
    if layer is not None:
        layer.__dict__.pop("forward", None)
