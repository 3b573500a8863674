"""What the portable C backend's op emitters share: the C types, the prelude of ``static
inline`` helpers every generated file starts with, the emitted model's description
(``CModel``, ``TensorSpec``) and ``Ctx``, through which an emitter asks for tensor pointers,
constant arrays and fresh names.

What it does not do: emit any op (``ops``, ``ops_nn``) or a whole model (``emit.to_c``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import CompilerError
from ...ir import DType, Graph, Node, Tensor

ABI_VERSION = 1
C_TYPES = {DType.FLOAT32: "float", DType.FLOAT64: "double", DType.INT8: "int8_t",
           DType.UINT8: "uint8_t", DType.INT16: "int16_t", DType.UINT16: "uint16_t",
           DType.INT32: "int32_t", DType.UINT32: "uint32_t", DType.INT64: "int64_t",
           DType.UINT64: "uint64_t", DType.BOOL: "uint8_t"}

PRELUDE = r"""
typedef signed char int8_t; typedef unsigned char uint8_t;
typedef short int16_t; typedef unsigned short uint16_t;
typedef int int32_t; typedef unsigned int uint32_t;
typedef long long int64_t; typedef unsigned long long uint64_t;
#define TM_INT32_MIN (-2147483647 - 1)
#define TM_INT32_MAX 2147483647

static inline int32_t tm_srdhm(int32_t a, int32_t b) {
  if (a == b && a == TM_INT32_MIN) return TM_INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}
static inline int32_t tm_rdbp(int32_t x, int e) {
  int32_t mask = (int32_t)((1u << e) - 1u);
  int32_t rem = x & mask, thr = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (rem > thr ? 1 : 0);
}
static inline int32_t tm_mbqm(int32_t x, int32_t m, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return tm_rdbp(tm_srdhm((int32_t)((uint32_t)x << left), m), right);
}
static inline int32_t tm_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}
static inline int32_t tm_sat_mul_pot(int32_t x, int e) {
  if (e == 0) return x;
  if (e < 0) return tm_rdbp(x, -e);
  int32_t thr = (int32_t)((1u << (31 - e)) - 1u);
  if (x > thr) return TM_INT32_MAX;
  if (x < -thr) return TM_INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}
/* gemmlowp one_over_one_plus_x_for_x_in_0_1 (Newton-Raphson), a in Q0.31 */
static inline int32_t tm_one_over_one_plus_x(int32_t a) {
  int64_t total = (int64_t)a + TM_INT32_MAX;
  total += total >= 0 ? 1 : -1;
  int32_t half_den = (int32_t)(total / 2);
  int32_t x = (int32_t)((uint32_t)1515870810 + (uint32_t)tm_srdhm(half_den, -1010580540));
  for (int i = 0; i < 3; i++) {
    int32_t hdx = tm_srdhm(half_den, x);
    int32_t one_minus = (int32_t)((uint32_t)(1 << 29) - (uint32_t)hdx);
    x = (int32_t)((uint32_t)x + (uint32_t)tm_sat_mul_pot(tm_srdhm(x, one_minus), 2));
  }
  return tm_sat_mul_pot(x, 1);
}
static inline float tm_rint(float x) {  /* round half to even, no libc */
  float t = x >= 0 ? x : -x;
  if (!(t < 8388608.0f)) return x;
  int32_t i = (int32_t)t; float f = t - (float)i;
  if (f > 0.5f || (f == 0.5f && (i & 1))) i++;
  return x >= 0 ? (float)i : -(float)i;
}
static inline float tm_round_away(float x) {  /* round half away from zero */
  float t = x >= 0 ? x : -x;
  if (!(t < 8388608.0f)) return x;
  int32_t i = (int32_t)t; if (t - (float)i >= 0.5f) i++;
  return x >= 0 ? (float)i : -(float)i;
}
static inline float tm_expf(float x) {
  if (x > 88.7f) return __builtin_inff();
  if (x < -103.9f) return 0.0f;
  float kf = tm_rint(x * 1.44269504088896341f);
  int32_t k = (int32_t)kf;
  float r = (x - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666418f
            + r * (0.00833330024f + r * (0.00138878601f + r * 0.000198527617f))))));
  int32_t k1 = k / 2, k2 = k - k1;
  union { float f; int32_t i; } s1, s2;
  s1.i = (k1 + 127) << 23; s2.i = (k2 + 127) << 23;
  return p * s1.f * s2.f;
}
static inline float tm_tanhf(float x) {
  if (x > 9.0f) return 1.0f;
  if (x < -9.0f) return -1.0f;
  float t = x >= 0 ? x : -x;
  if (t < 0.0004f) return x;
  float e = tm_expf(-2.0f * t);
  float r = (1.0f - e) / (1.0f + e);
  return x >= 0 ? r : -r;
}
static inline float tm_clampf(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }
static inline float tm_sigmoidf(float x) { return 1.0f / (1.0f + tm_expf(-x)); }
static inline float tm_fmaxf(float a, float b) { return a > b || b != b ? a : b; }
static inline void tm_copy(void *dst, const void *src, int n) {
  unsigned char *d = (unsigned char *)dst; const unsigned char *s = (const unsigned char *)src;
  if (d == s) return;
  for (int i = 0; i < n; i++) d[i] = s[i];
}
"""


class CBackendError(CompilerError):
    """The graph cannot be emitted as C (the message names the node or tensor)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # byte offset in the arena
    nbytes: int
    scale: float | None = None
    zero_point: int | None = None

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.scale is not None:
            d["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        return d


@dataclass(frozen=True)
class CModel:
    name: str
    source: str
    arena_bytes: int
    const_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def exports(self) -> tuple[str, ...]:
        return ("tinyml_abi_version", "input_count", "input_ptr", "input_size",
                "output_count", "output_ptr", "output_size", "invoke")

    def header(self) -> str:
        """The C library's header: the ABI v1 functions ``source`` defines."""
        guard = "TINYML_" + "".join(c if c.isalnum() else "_" for c in self.name.upper()) + "_H"
        protos = "".join(f"int {fn}({'int i' if fn.endswith(('_ptr', '_size')) else 'void'});\n"
                         for fn in self.exports)
        return (f"/* Generated by tinymlaas.compilers (portable C backend): model {self.name!r}, "
                f"tinyml ABI v{ABI_VERSION}. */\n#ifndef {guard}\n#define {guard}\n{protos}#endif\n")

    def metadata(self, **extra: object) -> dict[str, object]:
        return {"abi": ABI_VERSION, "name": self.name, "arena_bytes": self.arena_bytes,
                "tensors": {"inputs": [t.as_dict() for t in self.inputs],
                            "outputs": [t.as_dict() for t in self.outputs]}, **extra}


class Ctx:
    """What an op emitter may ask: C expressions for tensors, constants it adds, names."""

    def __init__(self, graph: Graph, offsets: dict[str, int]) -> None:
        self.g = graph
        self.offsets = offsets
        self.consts: dict[str, str] = {}  # tensor name -> C array name
        self.decls: list[str] = []
        self.const_bytes = 0
        self._n = 0

    def t(self, name: str) -> Tensor:
        return self.g.tensors[name]

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    def array(self, data: np.ndarray, ctype: str | None = None) -> str:
        """A new ``static const`` array holding ``data`` (flattened); returns its name."""
        data = np.ascontiguousarray(data)
        if ctype is None:
            ctype = C_TYPES[DType.from_numpy(data.dtype)]
        name = self.fresh("k")
        flat = data.reshape(-1)
        literal = float_literal if flat.dtype.kind == "f" else (lambda v: str(int(v)))
        body = ",".join(literal(v) for v in flat)
        self.decls.append(f"static const {ctype} {name}[{max(flat.size, 1)}] "
                          f"__attribute__((aligned(16))) = {{{body or '0'}}};")
        self.const_bytes += flat.size * np.dtype(flat.dtype).itemsize
        return name

    def ptr(self, name: str) -> str:
        """A C expression: pointer to ``name``'s first element, of its element type."""
        t = self.t(name)
        ctype = C_TYPES.get(t.dtype)
        if ctype is None:
            raise CBackendError(f"tensor {name!r}: no C type for {t.dtype.value}")
        if t.is_const:
            if name not in self.consts:
                self.consts[name] = self.array(np.asarray(t.data), ctype)
            return self.consts[name]
        if name not in self.offsets:
            raise CBackendError(f"tensor {name!r} is neither a constant nor planned in the arena")
        return f"(({ctype} *)(tm_arena + {self.offsets[name]}))"

    def data(self, name: str) -> np.ndarray:
        t = self.t(name)
        if not t.is_const:
            raise CBackendError(f"tensor {name!r} must be a constant")
        return np.asarray(t.data)


def float_literal(v: np.floating | float) -> str:
    f = float(v)
    if np.isnan(f):
        return "__builtin_nanf(\"\")"
    if np.isinf(f):
        return "__builtin_inff()" if f > 0 else "(-__builtin_inff())"
    text = f"{f:.9g}"
    return f"{text}f" if ("e" in text or "." in text) else f"{text}.0f"


Emitter = Callable[[Ctx, Node], str]


__all__ = ["ABI_VERSION", "C_TYPES", "PRELUDE", "CBackendError", "CModel", "Ctx", "Emitter", "TensorSpec",
           "float_literal"]
