"""The output layer computed one slice of the vocabulary at a time on CPU: the same numbers in fewer seconds.

Every decoding step multiplies the batch's hidden states by the whole output matrix (49,152 x 576 for SmolLM2, 113 MB
in fp32). MKL ran that one product for 64 rows at 0.035-0.046 TFLOP/s on this project's CPU, and the same product in
slices of 1,024 output rows at 0.052-0.074 (most likely because a slice's weights stay in cache while every row uses
them); a decoding step of the model, 64 rows over 200 cached tokens, took 0.93-0.94x as long with 2 threads, and
0.92-1.01x with 1 (a CPU job's two processes run one each: within the drift of single steps) (benchmarks/README.md,
"The output layer in slices"). Each logit is the same dot product over the hidden size either way, and with slices
of one width, a multiple of 256, MKL gave the same bits as the whole product here, with 1 and 2 threads
(tests/test_engine.py checks it at SmolLM2's shape, and the tiny model's logits, answers and option scores; another
CPU or BLAS is not covered by that check). A last slice of another width need not: it can take another kernel (a
vocabulary of 49,153 gave other last bits), so a vocabulary that no width of ``SLICE_ROWS_CHOICES`` divides is left
whole.
"""

from __future__ import annotations

import functools

SLICE_ROWS_CHOICES = (1024, 512, 256)  # the widest that divides the vocabulary


def sliced_linear(hidden, weight, bias=None, rows: int = 1024):
    """``torch.nn.functional.linear(hidden, weight, bias)``, computed ``rows`` output features at a time."""
    import torch

    parts = []
    for start in range(0, weight.shape[0], rows):
        part = slice(start, start + rows)
        parts.append(torch.nn.functional.linear(hidden, weight[part], None if bias is None else bias[part]))
    return torch.cat(parts, dim=-1)


def _sliced_forward(layer, rows, hidden):
    import torch

    # the slices are measured, and exact, on CPU only; for one row (a product of matrix and vector) they were slower
    if hidden.device.type != "cpu" or hidden[..., 0].numel() == 1:
        return torch.nn.functional.linear(hidden, layer.weight, layer.bias)
    return sliced_linear(hidden, layer.weight, layer.bias, rows)


def slice_rows(out_features: int, choices=None) -> int | None:
    """The width of the slices for an output layer of ``out_features``: the widest of ``choices`` (by default
    ``SLICE_ROWS_CHOICES``) that divides it into two or more slices, else None (left whole)."""
    widths = choices or SLICE_ROWS_CHOICES
    return next((rows for rows in widths if out_features % rows == 0 and out_features > rows), None)


def _output_layer(model):
    get = getattr(model, "get_output_embeddings", None)  # a stand-in model of a test may have none
    return get() if get is not None else None


def is_sliced(layer) -> bool:
    """Whether :func:`use_sliced_output_layer` shadowed ``layer``'s forward (and nothing else did, e.g. accelerate's
    hooks, which also set an instance ``forward``)."""
    return getattr(vars(layer).get("forward"), "func", None) is _sliced_forward if layer is not None else False


def use_sliced_output_layer(model, choices=None) -> bool:
    """Make ``model``'s output layer compute its product in slices (its weights, and their tying, untouched).

    Only a plain ``nn.Linear`` whose ``forward`` nothing else has replaced, and that a width of ``choices`` divides,
    is changed; returns whether it is sliced. Its ``forward`` is shadowed on the instance, so
    :func:`use_stock_output_layer` undoes it.
    """
    import torch

    layer = _output_layer(model)
    if is_sliced(layer):
        return True
    if type(layer) is not torch.nn.Linear or "forward" in vars(layer):
        return False
    rows = slice_rows(layer.out_features, choices)
    if rows is None:
        return False
    layer.forward = functools.partial(_sliced_forward, layer, rows)
    return True


def use_stock_output_layer(model) -> bool:
    """Undo :func:`use_sliced_output_layer`: the output layer as the model was loaded. Returns whether it was
    sliced."""
    layer = _output_layer(model)
    if not is_sliced(layer):
        return False
    del layer.forward
    return True
