"""How many bytes of flash and RAM a C source takes on a microcontroller core, measured.

What it does: ``section_sizes(c_source, core)`` compiles the file to an object for ``core``
with the clang that the ``ziglang`` package ships (``-c -Os -ffunction-sections
-fdata-sections -fno-common -ffreestanding -nostdlib``) and sums the ELF
section headers itself: ``.text*`` -> text, ``.rodata*`` / ``.srodata*`` -> rodata,
``.data*`` / ``.sdata*`` -> data, ``.bss*`` / ``.sbss*`` (and COMMON symbols, should any
appear) -> bss. Flash is about text + rodata + data, RAM data + bss. ``CORES`` maps the core
names of ``device_profiles`` to a zig target and CPU; a core zig cannot target (Xtensa, for
the ESP32 and ESP32-S3) is in the table as None and raises ``CrossCompileError`` naming it.

What it does not do: link (no startup code, libc, libm or compiler-rt helpers are counted;
an object's calls to ``__aeabi_*`` soft-float helpers on a core without an FPU are not
included), count ``.ARM.exidx`` unwind entries (8 bytes per function on Arm; zig keeps
them), place sections in a memory map, or count the stack.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import CompilerError
from ..zig import zig_cc

__all__ = ["CORES", "CrossCompileError", "CoreTarget", "SectionSizes", "elf_section_sizes",
           "section_sizes"]


class CrossCompileError(CompilerError):
    """The C source does not compile for the core, or zig cannot target the core."""


@dataclass(frozen=True)
class CoreTarget:
    target: str  # zig target triple
    cpu: str  # zig CPU name, optionally with +feature suffixes

    def flags(self) -> list[str]:
        return [f"--target={self.target}", f"-mcpu={self.cpu}"]


# Profile core name -> zig target. zig's Cortex-M CPU models carry no FPU, so the FPU is a
# feature here (without it an eabihf build still calls __aeabi_f* helpers): M4F FPv4-SP,
# M7 and M33 FPv5 single precision (the STM32F746's M7 has no double-precision unit).
CORES: dict[str, CoreTarget | None] = {
    "cortex-m0plus": CoreTarget("thumb-freestanding-eabi", "cortex_m0plus"),
    "cortex-m4f": CoreTarget("thumb-freestanding-eabihf", "cortex_m4+vfp4d16sp"),
    "cortex-m7": CoreTarget("thumb-freestanding-eabihf", "cortex_m7+fp_armv8d16sp"),
    "cortex-m33": CoreTarget("thumb-freestanding-eabihf", "cortex_m33+fp_armv8d16sp"),
    "riscv32": CoreTarget("riscv32-freestanding-none", "generic_rv32+m+c"),
    "riscv32imc": CoreTarget("riscv32-freestanding-none", "generic_rv32+m+c"),
    "aarch64": CoreTarget("aarch64-freestanding-none", "cortex_a53"),
    "xtensa-lx6": None,  # ESP32: zig's LLVM has no Xtensa backend
    "xtensa-lx7": None,  # ESP32-S3
}
FLAGS = ["-c", "-Os", "-ffunction-sections", "-fdata-sections", "-fno-common", "-nostdlib",
         "-ffreestanding"]
SOURCE_NAME = "model.c"


@dataclass(frozen=True)
class SectionSizes:
    """Bytes per kind of section of one object file."""

    text: int
    rodata: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


# Section name prefix -> SectionSizes field (a name matches "prefix" or "prefix.<anything>").
_KINDS: dict[str, str] = {".text": "text", ".rodata": "rodata", ".srodata": "rodata",
                          ".data": "data", ".sdata": "data", ".bss": "bss", ".sbss": "bss",
                          ".tbss": "bss", ".tdata": "data"}
_SHT_SYMTAB, _SHN_COMMON = 2, 0xFFF2
# ELF class -> (header fields after e_ident, section header, symbol) struct formats.
_LAYOUT: dict[int, tuple[str, str, str]] = {
    1: ("HHIIIIIHHHHHH", "IIIIIIIIII", "IIIBBH"),
    2: ("HHIQQQIHHHHHH", "IIQQQQIIQQ", "IBBHQQ"),
}


def elf_section_sizes(obj: bytes) -> SectionSizes:
    """Sum the allocated sections of an ELF32 or ELF64 relocatable object by kind."""
    if obj[:4] != b"\x7fELF" or obj[4] not in _LAYOUT or obj[5] not in (1, 2):
        raise CrossCompileError("the compiler did not write an ELF object")
    end = "<" if obj[5] == 1 else ">"
    head, shdr, sym = (struct.Struct(end + f) for f in _LAYOUT[obj[4]])
    fields = head.unpack_from(obj, 16)
    shoff, shentsize, shnum, shstrndx = fields[5], fields[10], fields[11], fields[12]
    sections = [shdr.unpack_from(obj, shoff + i * shentsize) for i in range(shnum)]
    name_at = sections[shstrndx][4]  # file offset of the section name table

    def name(offset: int) -> str:
        start = name_at + offset
        return obj[start:obj.index(b"\0", start)].decode("ascii", "replace")

    totals = dict.fromkeys(("text", "rodata", "data", "bss"), 0)
    for sec in sections:
        sname, stype, size = name(sec[0]), sec[1], sec[5]
        kind = next((k for p, k in _KINDS.items() if sname == p or sname.startswith(p + ".")), None)
        if kind is not None:
            totals[kind] += size
        if stype == _SHT_SYMTAB:
            totals["bss"] += _common_bytes(obj, sec, sym, obj[4])
    return SectionSizes(**totals)


def _common_bytes(obj: bytes, symtab: tuple[int, ...], sym: struct.Struct, elf_class: int) -> int:
    """Sizes of COMMON symbols (none with -fno-common, but an object may still carry some)."""
    offset, size, entsize = symtab[4], symtab[5], symtab[9]
    total = 0
    for at in range(offset, offset + size, entsize or sym.size):
        entry = sym.unpack_from(obj, at)
        shndx, st_size = (entry[5], entry[2]) if elf_class == 1 else (entry[3], entry[5])
        if shndx == _SHN_COMMON:
            total += st_size
    return total


def section_sizes(c_source: str, core: str) -> SectionSizes:
    """Measured text/rodata/data/bss of ``c_source`` compiled for ``core`` (a ``CORES`` key)."""
    if core not in CORES:
        raise CrossCompileError(f"unknown core {core!r}; known: {', '.join(sorted(CORES))}")
    target = CORES[core]
    if target is None:
        raise CrossCompileError(f"core {core!r} cannot be compiled for: zig (its clang/LLVM) "
                                "has no backend for it")
    with tempfile.TemporaryDirectory(prefix="tinyml-cross-") as tmp:
        work = Path(tmp)
        (work / SOURCE_NAME).write_text(c_source, encoding="utf-8")
        zig_cc([*target.flags(), *FLAGS, SOURCE_NAME, "-o", "model.o"], work,
               f"C source does not compile for {core}", CrossCompileError)
        return elf_section_sizes((work / "model.o").read_bytes())
