"""A corpus of hostile kernel modules: inline WAT and small byte builders, one case each.

Each case says how it must end: refused at load (``refused``, with a pattern of the reason), or
loaded and then one job entry fails with a typed error (``job``), or loaded and contained
(``contained``: a job runs and returns within its limits). ``hostile_harness.py`` runs one case
in a fresh process and measures its time and memory; ``test_hostile.py`` asserts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# -- a small byte builder for what WAT cannot say (over-bound counts, malformed layouts) ------


def leb(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vec(items: list[bytes]) -> bytes:
    return leb(len(items)) + b"".join(items)


def name(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return leb(len(raw)) + raw


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb(len(payload)) + payload


HEADER = b"\x00asm\x01\x00\x00\x00"
# type 0: () -> (i32)
TYPE_VOID_I32 = section(1, vec([b"\x60\x00\x01\x7f"]))


def module(*sections: bytes) -> bytes:
    return HEADER + b"".join(sections)


def body(instructions: bytes, locals_: bytes = b"\x00") -> bytes:
    payload = locals_ + instructions + b"\x0b"
    return leb(len(payload)) + payload


def version_module(*extra: bytes, functions: int = 1, exports: list[bytes] | None = None) -> bytes:
    """A module whose function 0 is sf_abi_version () -> i32 returning 1, plus ``extra``."""
    export_entries = exports if exports is not None else [name("sf_abi_version") + b"\x00\x00"]
    bodies = [body(b"\x41\x01")] * functions
    by_id = {s[0]: s for s in extra}
    ordered = [
        TYPE_VOID_I32,
        by_id.pop(2, b""),
        section(3, vec([leb(0)] * functions)),
        by_id.pop(4, b""),
        by_id.pop(5, b""),
        by_id.pop(6, b""),
        section(7, vec(export_entries)),
        by_id.pop(9, b""),
        by_id.pop(12, b""),
        section(10, vec(bodies)),
        by_id.pop(11, b""),
    ]
    return module(*ordered, *by_id.values())


def many_exports(count: int) -> bytes:
    # 3-byte names keep 40,000 exports under the module size bound: the export count, not the
    # size, must be what refuses it.
    def short(index: int) -> bytes:
        return bytes(33 + (index // 94**power) % 94 for power in range(3))

    entries = [name("sf_abi_version") + b"\x00\x00"]
    entries += [name(short(index)) + b"\x00\x00" for index in range(count - 1)]
    return version_module(exports=entries)


def big_body(size: int) -> bytes:
    # drop(i32.const 0) repeated: a valid body of ~size bytes
    count = (size - 8) // 3
    instructions = b"\x41\x00\x1a" * count + b"\x41\x01"
    return module(
        TYPE_VOID_I32,
        section(3, vec([leb(0)])),
        section(7, vec([name("sf_abi_version") + b"\x00\x00"])),
        section(10, vec([body(instructions)])),
    )


def compile_heavy() -> bytes:
    # br_table-heavy bodies, each just under the body bound, the module under the size bound:
    # the slowest pattern to compile that was found (~1.3 s for 256 KiB on a loaded 2-core box).
    from client.sandbox.bounds import ModuleBounds

    bounds = ModuleBounds()
    case = b"\x02\x40\x20\x00\x0e" + leb(40) + b"\x00" * 41 + b"\x0b"
    per_body = (bounds.max_function_body_bytes - 16) // len(case)
    instructions = case * per_body + b"\x41\x01"
    one = body(instructions, locals_=vec([leb(8) + b"\x7f"]))
    count = (bounds.max_module_bytes - 200) // len(one)
    return module(
        TYPE_VOID_I32,
        section(3, vec([leb(0)] * count)),
        section(7, vec([name("sf_abi_version") + b"\x00\x00"])),
        section(10, vec([one] * count)),
    )


ALLOC_WAT = """
  (global $top (mut i32) (i32.const 16))
  (func (export "sf_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
"""


def wat_with_version(body_wat: str, version: str = "(i32.const 1)") -> str:
    return f"""(module (memory (export "memory") 1) {ALLOC_WAT}
      (func (export "sf_abi_version") (result i32) {version})
      {body_wat})"""


@dataclass(frozen=True)
class Case:
    """One hostile module and how it must end."""

    build: Callable[[], bytes | str]
    outcome: str  # "refused" | "job" | "contained"
    reason: str = ""  # regex the error message must match
    entry: str = ""  # job cases: the export to call
    error: str = ""  # job cases: the client.sandbox error class expected
    memory_mb: int = 128  # job cap
    required: tuple[str, ...] = ("sf_abi_version",)  # exports the loader must find


CASES: dict[str, Case] = {
    # -- declared sizes and counts, refused before compiling -----------------------------------
    "table-initial-3e8": Case(
        lambda: version_module(section(4, vec([b"\x70\x00" + leb(300_000_000)]))),
        "refused",
        r"300000000 initial table elements, at most \d+ allowed",
    ),
    "table-max-2e9": Case(
        lambda: version_module(section(4, vec([b"\x70\x01\x01" + leb(2_000_000_000)]))),
        "refused",
        "maximum elements",
    ),
    "two-tables": Case(
        lambda: version_module(section(4, vec([b"\x70\x00\x01", b"\x70\x00\x01"]))),
        "refused",
        "declares 2 tables",
    ),
    "memory-initial-4gib": Case(
        lambda: version_module(section(5, vec([b"\x00" + leb(65536)]))),
        "refused",
        "65536 initial memory pages",
    ),
    "two-memories": Case(
        lambda: version_module(section(5, vec([b"\x00\x01", b"\x00\x01"]))),
        "refused",
        "declares 2 memories",
    ),
    "40000-exports": Case(lambda: many_exports(40_000), "refused", "40000 exports"),
    "5000-functions": Case(
        lambda: version_module(functions=5000), "refused", "5000 functions, at most"
    ),
    "huge-function-body": Case(lambda: big_body(200_000), "refused", "max_function_body_bytes"),
    "locals-2e32": Case(
        lambda: module(
            TYPE_VOID_I32,
            section(3, vec([leb(0)])),
            section(10, vec([body(b"\x41\x01", locals_=vec([leb(2**32 - 1) + b"\x7f"]))])),
        ),
        "refused",
        "locals",
    ),
    "module-over-size": Case(
        lambda: version_module(section(0, name("pad") + b"\x00" * (300 << 10))),
        "refused",
        "max_module_bytes",
    ),
    "10000-globals": Case(
        lambda: version_module(section(6, vec([b"\x7f\x00\x41\x00\x0b"] * 10_000))),
        "refused",
        "10000 globals",
    ),
    "10000-data-segments": Case(
        lambda: version_module(
            section(5, vec([b"\x00\x01"])), section(11, vec([b"\x01\x01\x00"] * 10_000))
        ),
        "refused",
        "10000 data segments",
    ),
    "datacount-2e9": Case(
        lambda: version_module(section(12, leb(2_000_000_000))), "refused", "data segments"
    ),
    "element-items-1e6": Case(
        lambda: version_module(
            section(4, vec([b"\x70\x00\x01"])),
            section(9, vec([b"\x00\x41\x00\x0b" + leb(1_000_000) + b"\x00" * 1_000_000])),
        ),
        "refused",
        "max_module_bytes|element items",
    ),
    "type-with-100-params": Case(
        lambda: module(section(1, vec([b"\x60" + vec([b"\x7f"] * 100) + b"\x00"]))),
        "refused",
        "max_type_arity",
    ),
    # -- code that would run before any limit, and capabilities -------------------------------
    "start-function-loop": Case(
        lambda: wat_with_version("(func $s (loop $l (br $l))) (start $s)"),
        "refused",
        "start function",
    ),
    "imports-memory": Case(
        lambda: '(module (import "env" "memory" (memory 1)))',
        "refused",
        r"imports \['env.memory'\]",
    ),
    "imports-function": Case(
        lambda: '(module (import "wasi" "fd_write" (func (param i32) (result i32))))',
        "refused",
        "must import nothing",
    ),
    "shared-memory": Case(
        lambda: '(module (memory (export "memory") 1 1 shared))', "refused", "shared"
    ),
    "memory64": Case(lambda: '(module (memory (export "memory") i64 1))', "refused", "64-bit"),
    # -- malformed layouts --------------------------------------------------------------------
    "leb-overflow": Case(
        lambda: HEADER + b"\x01\xff\xff\xff\xff\x7f", "refused", "not a valid wasm module"
    ),
    "section-past-end": Case(
        lambda: HEADER + b"\x01" + leb(1 << 20) + b"\x00", "refused", "not a valid wasm module"
    ),
    "unknown-section": Case(lambda: HEADER + b"\x2a\x00", "refused", "unknown section id 42"),
    "duplicate-section": Case(
        lambda: HEADER + TYPE_VOID_I32 + TYPE_VOID_I32, "refused", "appears twice"
    ),
    "non-utf8-export-name": Case(
        lambda: version_module(exports=[name(b"\xff\xfe") + b"\x00\x00"]), "refused", "UTF-8"
    ),
    "gc-rec-group": Case(
        lambda: module(section(1, vec([b"\x4e\x01\x60\x00\x00"]))), "refused", "type form 0x4e"
    ),
    "tag-section": Case(lambda: HEADER + b"\x0d\x01\x00", "refused", "unknown section id 13"),
    "component-binary": Case(lambda: b"\x00asm\x0d\x00\x01\x00", "refused", "binary version"),
    "truncated-header": Case(lambda: b"\x00as", "refused", "not a valid wasm module"),
    "data-past-memory": Case(
        lambda: version_module(
            section(5, vec([b"\x00\x01"])),
            section(11, vec([b"\x00\x41" + b"\xff\xff\xff\xff\x07" + b"\x0b" + vec([b"x"])])),
        ),
        "refused",
        "cannot be instantiated|out of bounds",
    ),
    # -- code inside the ABI probe --------------------------------------------------------------
    "probe-table-grow-3e8": Case(
        lambda: (
            """(module (table 1 funcref)
          (func (export "sf_abi_version") (result i32)
            (if (i32.eq (table.grow (ref.null func) (i32.const 300000000)) (i32.const -1))
              (then unreachable))
            (i32.const 1)))"""
        ),
        "refused",
        "trapped while reporting its ABI version",
    ),
    "probe-memory-bomb": Case(
        lambda: wat_with_version(
            "",
            version="(loop $g (br_if $g (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))"
            "(unreachable)",
        ),
        "refused",
        "trapped while reporting its ABI version",
    ),
    "probe-loop": Case(
        lambda: wat_with_version("", version="(loop $l (br $l)) (i32.const 1)"),
        "refused",
        "trapped while reporting its ABI version",
    ),
    "probe-wrong-version": Case(
        lambda: wat_with_version("", version="(i32.const 7)"), "refused", "returned 7, expected 1"
    ),
    "compile-heavy-at-the-bounds": Case(compile_heavy, "contained", entry="sf_abi_version"),
    # -- loaded, then a job misbehaves --------------------------------------------------------
    "job-table-grow-3e8": Case(
        lambda: (
            """(module (memory (export "memory") 1) (table 1 funcref)
          (func (export "sf_abi_version") (result i32) (i32.const 1))
          (func (export "grow") (result i32)
            (if (i32.eq (table.grow (ref.null func) (i32.const 300000000)) (i32.const -1))
              (then unreachable))
            (i32.const 0)))"""
        ),
        "job",
        "unreachable",
        entry="grow",
        error="KernelTrapped",
    ),
    "job-touching-memory-bomb": Case(
        lambda: wat_with_version(
            """(func (export "bomb") (local $p i32)
              (block $out (loop $g
                (br_if $out (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
                (local.set $p (i32.mul (memory.size) (i32.const 65536)))
                (block $done (loop $touch
                  (br_if $done (i32.le_u (local.get $p) (i32.const 4096)))
                  (local.set $p (i32.sub (local.get $p) (i32.const 4096)))
                  (i32.store (local.get $p) (i32.const 1))
                  (br $touch)))
                (br $g)))
              (unreachable))"""
        ),
        "job",
        "unreachable",
        entry="bomb",
        error="KernelTrapped",
    ),
    "job-infinite-loop": Case(
        lambda: wat_with_version('(func (export "spin") (loop $l (br $l)))'),
        "job",
        "deadline|fuel",
        entry="spin",
        error="KernelTrapped",
    ),
    "job-recursion": Case(
        lambda: wat_with_version(
            '(func $r (export "recurse") (result i32) (i32.add (call $r) (i32.const 1)))'
        ),
        "job",
        "stack overflow|call stack",
        entry="recurse",
        error="KernelTrapped",
    ),
    "job-v128-parameter": Case(
        lambda: wat_with_version('(func (export "wide") (param v128) (result i32) (i32.const 0))'),
        "job",
        "non-numeric",
        entry="wide",
        error="KernelError",
    ),
    "job-oob-store": Case(
        lambda: wat_with_version(
            '(func (export "wild") (i32.store (i32.const 0x7ffffff0) (i32.const 1)))'
        ),
        "job",
        "out of bounds",
        entry="wild",
        error="OutOfBounds",
    ),
    "deep-nesting-at-the-body-bound": Case(
        lambda: module(
            TYPE_VOID_I32,
            section(3, vec([leb(0)])),
            section(7, vec([name("sf_abi_version") + b"\x00\x00"])),
            section(10, vec([body(b"\x02\x40" * 10_000 + b"\x0b" * 10_000 + b"\x41\x01")])),
        ),
        "contained",
        entry="sf_abi_version",
    ),
    "memory-export-is-a-global": Case(
        lambda: wat_with_version("", version="(i32.const 1)").replace(
            '(memory (export "memory") 1)',
            '(memory 1) (global (export "memory") v128 (v128.const i32x4 0 0 0 0))',
        ),
        "refused",
        r"lacks required exports \['memory'\]",
        required=("sf_abi_version", "memory"),
    ),
    # -- at the bounds, and fine ----------------------------------------------------------------
    "127-exports-contained": Case(lambda: many_exports(127), "contained", entry="sf_abi_version"),
}
