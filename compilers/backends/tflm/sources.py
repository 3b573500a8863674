"""C/C++ source emitters for the TFLite Micro backend (emlearn/TFLM style: pure functions
that return text; nothing here touches the file system).

* ``c_array(name, model)``: ``{"<name>_model_data.h": ..., "<name>_model_data.cc": ...}`` in
  TFLM's convention (``g_<name>_model_data`` / ``g_<name>_model_data_size``, 16-byte aligned).
* ``model_operators(model)``: the builtin operator names a flatbuffer uses (sorted, distinct).
* ``op_resolver(name, model)``: a ``Register<Name>Ops(tflite::MicroMutableOpResolver<N>&)``
  function with one ``resolver.AddXxx()`` per distinct operator.
* ``check_operators(model, available)``: ``MissingOperators`` when a TFLM build lacks ops.
"""

from __future__ import annotations

import keyword
import re
from typing import Iterable

from ai_edge_litert import schema_py_generated as S

from .emitter import BackendError

_BUILTIN_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CXX_KEYWORDS = frozenset("""alignas alignof and and_eq asm auto bitand bitor bool break case catch
char char16_t char32_t char8_t class compl concept const consteval constexpr constinit const_cast
continue co_await co_return co_yield decltype default delete do double dynamic_cast else enum
explicit export extern false float for friend goto if inline int long mutable namespace new
noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct
switch template this thread_local throw true try typedef typeid typename union unsigned using
virtual void volatile wchar_t while xor xor_eq""".split())

# Builtin operator -> tflite::MicroMutableOpResolver method (tflite-micro's spelling).
TFLM_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual",
    "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOG_SOFTMAX": "AddLogSoftmax", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D", "MAXIMUM": "AddMaximum", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}


class MissingOperators(BackendError):
    """The model needs operators that the target's TFLM build does not register."""

    def __init__(self, missing: Iterable[str], available: Iterable[str]) -> None:
        self.missing = sorted(set(missing))
        self.available = sorted(set(available))
        have = ", ".join(self.available) or "nothing"
        super().__init__(f"model needs {', '.join(self.missing)}; this TFLM build registers only {have}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name) \
            or name in _CXX_KEYWORDS:
        raise ValueError(f"model name {name!r} is not a C identifier "
                         "(letters, digits and '_', not starting with a digit, not a keyword)")
    return name


# ---------------------------------------------------------------- model data

def c_array(name: str, model: bytes) -> dict[str, str]:
    """The model as a TFLM-style C array: ``{"<name>_model_data.h", "<name>_model_data.cc"}``."""
    _check_name(name)
    data = bytes(model)
    var = f"g_{name}_model_data"
    guard = f"{name.upper()}_MODEL_DATA_H_"
    header = (f"// Generated by tinymlaas.compilers (TFLite Micro backend). Do not edit.\n"
              f"#ifndef {guard}\n#define {guard}\n\n"
              f"extern const unsigned char {var}[];\n"
              f"extern const int {var}_size;\n\n"
              f"#endif  // {guard}\n")
    lines = [", ".join(f"0x{b:02x}" for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    body = ",\n".join(f"    {ln}" for ln in lines)
    source = (f"// Generated by tinymlaas.compilers (TFLite Micro backend). Do not edit.\n"
              f"#include \"{name}_model_data.h\"\n\n"
              f"// Flatbuffers read in place: keep the model 16-byte aligned.\n"
              f"alignas(16) const unsigned char {var}[] = {{\n{body}\n}};\n"
              f"const int {var}_size = {len(data)};\n")
    return {f"{name}_model_data.h": header, f"{name}_model_data.cc": source}


# ---------------------------------------------------------------- operators

def _operator_codes(model: bytes) -> list[tuple[int, str]]:
    buf = bytearray(model)
    try:
        m = S.Model.GetRootAsModel(buf, 0)
        n = m.OperatorCodesLength()
        codes = []
        for i in range(n):
            oc = m.OperatorCodes(i)
            # Schema >= 2.3 keeps builtin_code; older files only set the int8 deprecated field
            # (capped at 127, PLACEHOLDER_FOR_GREATER_OP_CODES): the larger of the two is right.
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            custom = oc.CustomCode()
            codes.append((code, custom.decode("utf-8", "replace") if custom else ""))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad flatbuffer
        raise BackendError(f"not a TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return codes


def model_operators(model: bytes) -> list[str]:
    """Builtin operator names the model's operator codes list (sorted, distinct); custom
    operators appear as ``CUSTOM:<custom_code>``."""
    names = set()
    for code, custom in _operator_codes(model):
        name = _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
        names.add(f"CUSTOM:{custom}" if name == "CUSTOM" else name)
    return sorted(names)


def op_resolver(name: str, model: bytes) -> str:
    """A C++ snippet registering exactly the model's operators with TFLM's
    ``MicroMutableOpResolver<N>`` (N = number of distinct operators)."""
    _check_name(name)
    ops = model_operators(model)
    unknown = [op for op in ops if op not in TFLM_METHODS]
    if unknown:
        raise MissingOperators(unknown, TFLM_METHODS)
    n = len(ops)
    fn = "Register" + "".join(p[:1].upper() + p[1:] for p in name.split("_") if p) + "Ops"
    calls = "\n".join(f"  TF_LITE_ENSURE_STATUS(resolver.{TFLM_METHODS[op]}());  // {op}" for op in ops)
    return (f"// Generated by tinymlaas.compilers (TFLite Micro backend). Do not edit.\n"
            f"#include \"tensorflow/lite/micro/micro_mutable_op_resolver.h\"\n\n"
            f"using {name}_op_resolver_t = tflite::MicroMutableOpResolver<{n}>;\n\n"
            f"TfLiteStatus {fn}(tflite::MicroMutableOpResolver<{n}>& resolver) {{\n"
            f"{calls}\n  return kTfLiteOk;\n}}\n")


def check_operators(model: bytes, available: Iterable[str]) -> None:
    """Raise ``MissingOperators`` naming every operator the model needs that ``available``
    (builtin names, e.g. ``"CONV_2D"``, case-insensitive) lacks."""
    have = {str(a).strip().upper() for a in available}
    missing = [op for op in model_operators(model) if op.upper() not in have]
    if missing:
        raise MissingOperators(missing, have)
