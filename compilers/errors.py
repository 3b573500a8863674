"""The compiler's exception hierarchy: every error the compiler raises on purpose is a
``CompilerError``.

What it does: gives callers (the server, the CLI, tests) one type to catch and a few
subtypes to tell "the file is broken" from "the model uses something we do not support"
from "our own IR is inconsistent". Each message names what is wrong and where (op type,
opset, node name, tensor, dimension) so it can be shown to a user as one line.

What it does not do: no error codes, no recovery, no logging.
"""

from __future__ import annotations


class CompilerError(Exception):
    """Base class of every error the compiler raises deliberately."""


class ModelFormatError(CompilerError):
    """The model file cannot be read: truncated, corrupt, not a model, invalid per its spec."""


class UnsupportedOp(CompilerError):
    """An op (or one configuration of an op: an attribute value, a non-constant input
    where we need a constant, a training-mode flag) that the frontend cannot express."""

    def __init__(self, op_type: str, opset: int | None, node: str, detail: str = "") -> None:
        self.op_type, self.opset, self.node, self.detail = op_type, opset, node, detail
        where = f"{op_type} (opset {opset})" if opset is not None else op_type
        msg = f"unsupported op {where} at node {node!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class UnsupportedOps(UnsupportedOp):
    """Several unsupported ops of one model, reported together (``ops``: each one, in model
    order). Its op type, opset, node and detail are the first one's, so code that handles
    an ``UnsupportedOp`` keeps working; the message lists every one."""

    def __init__(self, ops: "list[UnsupportedOp]") -> None:
        first = ops[0]
        super().__init__(first.op_type, first.opset, first.node, first.detail)
        for key, value in vars(first).items():  # frontend extras (TFLite: version, index)
            setattr(self, key, value)
        self.ops = tuple(ops)
        if len(ops) > 1:
            lines = "; ".join(str(e).removeprefix("unsupported op ") for e in ops)
            self.args = (f"{len(ops)} unsupported ops: {lines}",)


class ImportNote(UserWarning):
    """Something the import changed about the model's interface that the user should know
    (a float16 input that became float32, a dropped string-label output, ...)."""


class UnsupportedDType(CompilerError):
    """A tensor element type the IR has no ``DType`` for (bfloat16, float8, int4, string...)."""


class ShapeError(CompilerError):
    """A shape that cannot be made static: a dynamic dimension nobody fixed, or shape
    inference failing on the model. For a dynamic input dimension, ``input_name`` and
    ``suggested`` (the full shape with 1 for each unknown dimension) say what would fix it."""

    def __init__(self, message: str, *, input_name: str | None = None,
                 suggested: tuple[int, ...] | None = None) -> None:
        super().__init__(message)
        self.input_name, self.suggested = input_name, suggested


class GraphError(CompilerError):
    """The IR graph is inconsistent (raised by ``Graph.validate``): names the node and the
    problem."""


class ExecutionError(CompilerError):
    """The reference interpreter was given inputs that do not fit the graph."""
