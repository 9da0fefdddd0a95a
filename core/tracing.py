"""Inference passes as TorchScript traces, checked against the eager pass they replace.

Why serving traces its models: an eager forward pass goes back to Python between its operators (about 400
for all-MiniLM-L6-v2) and takes Python's GIL each time. In the API process that lock is shared with the event
loop and the other forward threads, so an eager pass keeps waiting for them. A trace records the operators
once and runs them in C++ with the GIL released. On the 2-core VM this took the text model's forward inside
the server from 12.8-14.1 ms to 10.7-11.1 ms for one input, and embeddings/s at 32 clients from 275 to 322
(median of 5 alternating rounds in one server; bench/serve.py, bench/RESULTS.md "Serving").

A trace is a recording: a Python branch on a value or a shape of the example is frozen in. So every trace is
run beside the eager function on probes of other shapes, and where the two differ, or tracing fails, the eager
function is kept and the reason returned.

TorchScript is deprecated upstream in favour of torch.export and torch.compile, which don't run a whole pass
outside the GIL. torch is pinned (2.13.0). Should tracing go, the check fails closed: serving goes on eager.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def _shape(inputs: Any) -> str:
    if isinstance(inputs, dict):
        return str({key: tuple(value.shape) for key, value in inputs.items()})
    return str(tuple(inputs.shape))


def trace_checked(module: nn.Module, method: str, example: Any, probes: Sequence[Any], atol: float = 1e-5,
                  freeze: bool = False) -> tuple[Callable[[Any], Tensor], str | None]:  # fmt: skip
    """``module.method`` traced on ``example`` and checked on every probe: (trace, None), or (the method, why not).

    Args:
        module: a module in eval mode; the trace shares its parameters unless frozen.
        method: an inference method of one input (a tensor or a dict of tensors) returning one tensor.
        example: the input it is traced on.
        probes: inputs of other shapes that the trace must answer as the method does (within ``atol``).
        freeze: fold the parameters into the trace as constants (``torch.jit.freeze``), and with them whatever
            is computed from parameters alone: a trace recorded under autocast casts every weight to bf16 in
            every pass, a frozen one holds them cast (one input through all-MiniLM-L6-v2 in bf16 on one core:
            7.1 -> 6.1-6.8 ms; on two cores under passive OpenMP waiting 13.4 -> 9.8 ms). The constants are a
            copy of the weights.
    """
    fn = getattr(module, method)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # TracerWarnings about Python values recorded as constants (the probes check what they would
            # break) and TorchScript's deprecation notice (see the module docstring)
            warnings.simplefilter("ignore")
            recorded = torch.jit.trace_module(module, {method: (example,)}, strict=False, check_trace=False)
            if freeze:
                recorded = torch.jit.freeze(recorded, preserved_attrs=[method])
            traced = getattr(recorded, method)
            for probe in probes:
                want, got = fn(probe), traced(probe)
                if want.shape != got.shape or not torch.allclose(want, got, atol=atol, rtol=1e-4):
                    return fn, f"the trace differs from the eager pass on inputs of shape {_shape(probe)}"
    except Exception as error:  # noqa: BLE001 - tracing is only a speed-up: whatever it raises, the eager pass serves
        return fn, f"tracing failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    return traced, None
