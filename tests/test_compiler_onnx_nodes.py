"""The reference interpreter against onnxruntime on ONNX's own backend node tests.

onnx 1.23 does not ship ``onnx/backend/test/data/node``, so the cases are generated here by
onnx's own generator (``onnx.backend.test.case.node.collect_testcases``): each has a
one-node model (or an ``_expanded`` function body), inputs and expected outputs. Every case
whose ops all have a converter is run three ways: our reference (``import_onnx`` + ``run``),
onnxruntime, and the expected outputs. Ours must match onnxruntime to a relative error
<= 1e-4 (max |a-b| / max |b|) for floats and exactly for integers and booleans, and the
expected outputs within the case's own tolerance (rtol 1e-3, atol 1e-7: some expected
values are printed to four decimals).

Operands the IR takes as attributes (Clip bounds, Pad pads, axes, Reshape's shape,
quantisation parameters, Dropout's ratio and training flag) are graph inputs in these
cases; here they become initializers, as an exporter writes them (``CONST_OPERANDS``).

Deliberate gaps: of the 388 generated cases whose ops we convert, 135 raise our
``Unsupported*`` errors on purpose (``_expected_skip`` names them and the reason the error
must give; ``test_skip_list_is_what_we_expect`` counts them):
  * 120 element types the IR has no DType for: bfloat16, float8 (e4m3fn, e4m3fnuz, e5m2,
    e5m2fnuz, e8m0), float4e2m1, int4/uint4, int2/uint2. 104 of them are Cast cases and
    CastLike's expanded bodies, 7 QuantizeLinear, 9 DequantizeLinear;
  * 6 Dropout in training mode (random masks: the compiler is inference-only);
  * 2 BatchNormalization in training mode;
  * 3 blocked quantisation (block_size: QuantizeLinear x2, DequantizeLinear x1);
  * 2 MaxPool with the Indices (argmax) output;
  * 2 Identity on sequence / optional values.
The other 253 run and must match (ArgMax added 16).
"""

from __future__ import annotations

import re
import time
import warnings

import numpy as np
import pytest

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from onnx import numpy_helper  # noqa: E402

from compilers.errors import UnsupportedDType, UnsupportedOp  # noqa: E402
from compilers.frontends import import_onnx  # noqa: E402
from compilers.frontends.onnx_context import CONVERTERS  # noqa: E402
from compilers.reference import run  # noqa: E402

CONST_OPERANDS: dict[str, tuple[int, ...]] = {
    "Clip": (1, 2), "Pad": (1, 2, 3), "ReduceMean": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "Reshape": (1,), "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "Dropout": (1, 2),
}

_FLOAT8 = r"FLOAT8E4M3FN|FLOAT8E4M3FNUZ|FLOAT8E5M2|FLOAT8E5M2FNUZ|FLOAT8E8M0"
_SMALL = r"INT4|UINT4|INT2|UINT2|FLOAT4E2M1|BFLOAT16"


def _expected_skip(name: str) -> str | None:
    """The reason a case is skipped on purpose, as a regular expression, or None."""
    rules = [
        (r"^test_cast(like)?_(no_saturate_|e8m0_)?.*(FLOAT8|INT4|UINT4|INT2|UINT2|FLOAT4E2M1|BFLOAT16)",
         f"{_FLOAT8}|{_SMALL}|float8"),
        (r"^test_(de)?quantizelinear_(e4m3fn|e5m2|uint4|int4|uint2|int2|float4e2m1)",
         f"{_FLOAT8}|{_SMALL}|float8"),
        (r"^test_(de)?quantizelinear_blocked", "block_size"),
        (r"^test_training_dropout", "training_mode"),
        (r"^test_batchnorm_.*training_mode", "training"),
        (r"^test_maxpool_with_argmax", "Indices"),
        (r"^test_identity_(sequence|opt)$", "sequence|optional"),
    ]
    for pattern, reason in rules:
        if re.search(pattern, name):
            return reason
    return None


def _collect() -> list:
    from onnx.backend.test.case import node as node_cases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    supported = set(CONVERTERS)
    return [c for c in cases if c.model.graph.node
            and {n.op_type for n in c.model.graph.node} <= supported]


CASES = _collect()
SKIPPED = sorted(c.name for c in CASES if _expected_skip(c.name))


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def _freeze(model: "onnx.ModelProto", feeds: dict[str, np.ndarray]) -> "onnx.ModelProto":
    """Turn the graph inputs that are attribute-like operands into initializers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inputs = {v.name for v in model.graph.input}
    frozen = {name for node in model.graph.node
              for i, name in enumerate(node.input)
              if i in CONST_OPERANDS.get(node.op_type, ()) and name in inputs}
    keep = [v for v in model.graph.input if v.name not in frozen]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for name in sorted(frozen):
        model.graph.initializer.append(numpy_helper.from_array(feeds.pop(name), name))
    return model


ORT_MAX_IR = 13
ORT_MAX_OPSET = 25  # onnxruntime 1.31 runs <= 26; 26..28 only added float6 to Cast/Q/DQ


def _for_onnxruntime(model: "onnx.ModelProto") -> bytes:
    """The model re-declared at the newest IR version and opset onnxruntime loads. Sound
    for the cases run here: every schema version newer than that (Cast, QuantizeLinear,
    DequantizeLinear 28) only adds element types (float6) that these cases do not use."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = min(model.ir_version, ORT_MAX_IR)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = min(imp.version, ORT_MAX_OPSET)
    return model.SerializeToString()


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    if ref.size == 0:
        return 0.0
    ours, ref = np.atleast_1d(ours), np.atleast_1d(ref)
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    both_nan = np.isnan(ours) & np.isnan(ref)
    same_inf = np.isinf(ref) & (ours == ref)
    diff[both_nan | same_inf] = 0
    finite = np.abs(ref[np.isfinite(ref)].astype(np.float64))
    return float(np.max(diff) / max(finite.max() if finite.size else 0.0, 1e-30))


def _check(ours: np.ndarray, ref: np.ndarray, what: str, rtol: float | None = None,
           atol: float = 0.0) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != {ref.dtype}"
    if ours.dtype.kind != "f":
        np.testing.assert_array_equal(ours, ref, err_msg=what)
    elif rtol is None:
        err = _rel_err(ours, ref)
        assert err <= 1e-4, f"{what}: relative error {err:.3g} > 1e-4"
    else:
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    inputs, expected = case.data_sets[0]
    names = [v.name for v in case.model.graph.input]
    feeds = {n: _array(a) for n, a in zip(names, inputs, strict=True)}
    model = _freeze(case.model, feeds)
    reason = _expected_skip(case.name)
    try:
        graph = import_onnx(model)
    except (UnsupportedOp, UnsupportedDType) as e:
        assert reason is not None, f"unexpectedly unsupported: {e}"
        assert re.search(reason, str(e)), f"skipped for another reason than /{reason}/: {e}"
        pytest.skip(f"deliberate gap: {e}")
    assert reason is None, f"{case.name} is in the skip list but imports now: update it"
    ours = run(graph, {n: a for n, a in feeds.items() if n in graph.inputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = ort.InferenceSession(_for_onnxruntime(model),
                                       providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)
    for out, ort_value, exp in zip(case.model.graph.output, theirs, expected, strict=True):
        mine = ours[out.name]
        _check(mine, np.asarray(ort_value), f"{out.name} vs onnxruntime")
        _check(mine, _array(exp), f"{out.name} vs expected", case.rtol, case.atol)


def test_skip_list_is_what_we_expect() -> None:
    """The deliberate gaps, counted: a new skip or a newly supported case shows up here."""
    by_reason: dict[str, int] = {}
    for name in SKIPPED:
        key = _expected_skip(name)
        assert key is not None
        by_reason[key] = by_reason.get(key, 0) + 1
    assert (len(CASES), len(SKIPPED)) == (388, 135)  # 372 + 16 ArgMax cases
    assert by_reason == {
        f"{_FLOAT8}|{_SMALL}|float8": 120,
        "training_mode": 6,
        "training": 2,
        "block_size": 3,
        "Indices": 2,
        "sequence|optional": 2,
    }, by_reason


def test_every_supported_op_has_node_cases() -> None:
    tested = {n.op_type for c in CASES if c.name not in SKIPPED for n in c.model.graph.node}
    untested = set(CONVERTERS) - tested
    assert untested == set(), untested


def test_collection_is_quick() -> None:
    start = time.perf_counter()
    _collect()
    assert time.perf_counter() - start < 20
