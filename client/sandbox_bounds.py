"""Bounds on what a wasm module may declare, checked on its bytes before it is compiled.

Compiling and instantiating a module costs time and memory in proportion to what it declares
(exports, functions, tables and their initial sizes, data segments, a start function that runs
at instantiation) before any Store limit, fuel or deadline applies. So every count and declared
size is read from the module's sections and checked against :class:`ModuleBounds` first; a
module over a bound is refused with a reason that names the bound, and nothing is compiled.

Why a reader by hand: wasmtime-py offers no inspection before compiling (``Module.imports`` and
``Module.exports`` need a compiled module; ``Module.validate`` checks well-formedness but bounds
nothing), and the Python wasm parsers on PyPI are unmaintained or whole toolchains. The binary
format's section layout is small and stable (WebAssembly core spec, "Binary Format"); this
reader walks it once, never allocates in proportion to a declared count, and leaves full
validation to wasmtime (``Module.validate``), which runs after it. It imports nothing of ours
and not wasmtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

WASM_MAGIC = b"\x00asm"
WASM_VERSION = b"\x01\x00\x00\x00"
WASM_PAGE_BYTES = 65536

SECTION_NAMES = {
    0: "custom",
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "datacount",
}
# Value types of the proposals a kernel may use (MVP, SIMD, reference types); GC and
# function-references types (ref null ht, rec groups) are refused with the proposals themselves.
_VALUE_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_REF_TYPES = {0x70: "funcref", 0x6F: "externref"}
_IMPORT_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class ModuleBoundsError(ValueError):
    """The module's bytes are malformed or declare more than a bound allows."""


@dataclass(frozen=True)
class ModuleBounds:
    """The most a kernel module may declare. Defaults leave >= 10x room over the bundled kernel.

    The bundled kernel (kernels/wasm, 28 KB) has 1 memory of 25 pages, 1 table of 1 element,
    15 exports, 31 functions, bodies up to 13 KB and 127 locals;
    ``tests/client/test_sandbox_bounds.py`` checks it fits. Module and body sizes bound compile
    time: the slowest 256 KiB module found (br_table-heavy bodies) compiled in ~1.3 s.
    A count bound of 0 refuses the item outright (imports, start function).
    """

    max_module_bytes: int = 256 << 10
    max_types: int = 1024
    max_type_arity: int = 32  # params + results of one function type
    max_imports: int = 0  # a kernel computes on its memory and nothing else
    max_functions: int = 2048
    max_function_body_bytes: int = 64 << 10
    max_locals_per_function: int = 1024
    max_tables: int = 1
    max_table_elements: int = 4096  # initial and declared maximum
    max_memories: int = 1
    max_memory_initial_pages: int = 1024  # 64 MiB; kernels grow memory as they need it
    max_globals: int = 256
    max_exports: int = 128
    max_element_segments: int = 64
    max_element_items: int = 4096  # summed over segments
    max_data_segments: int = 256
    max_start_functions: int = 0  # code that would run during instantiation, before any call
    max_custom_sections: int = 64

    def __post_init__(self) -> None:
        """Check that every bound is an int >= 0; raise ValueError naming the field."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ModuleBounds.{item.name}: expected an int >= 0, given {value!r}")


@dataclass
class ModuleCounts:
    """What a module declares, as read by :func:`check_module_bounds`."""

    module_bytes: int = 0
    types: int = 0
    imports: list[str] = field(default_factory=list)
    functions: int = 0
    tables: list[tuple[int, int | None]] = field(default_factory=list)
    memories: list[tuple[int, int | None]] = field(default_factory=list)
    globals: int = 0
    exports: int = 0
    export_names: list[str] = field(default_factory=list)
    start: bool = False
    element_segments: int = 0
    element_items: int = 0
    data_segments: int = 0
    data_bytes: int = 0
    max_body_bytes: int = 0
    max_locals: int = 0
    custom_sections: int = 0


class _Reader:
    """A cursor over ``data[start:end]`` that never reads past ``end``."""

    def __init__(self, data: bytes, start: int, end: int, where: str) -> None:
        self.data = data
        self.pos = start
        self.end = end
        self.where = where

    def fail(self, problem: str) -> ModuleBoundsError:
        return ModuleBoundsError(
            f"not a valid wasm module: {self.where}: {problem} (at byte {self.pos})"
        )

    def at_end(self) -> bool:
        return self.pos >= self.end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > self.end:
            raise self.fail(f"needs {count} more bytes, {self.end - self.pos} are left")
        self.pos += count

    def u32(self) -> int:
        # Unsigned LEB128 of at most 5 bytes, the last one using at most 4 bits.
        result = 0
        for shift in range(0, 35, 7):
            value = self.byte()
            if shift == 28 and value & 0x70:
                raise self.fail("integer too large for u32")
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                return result
        raise self.fail("integer representation too long")

    def signed(self, max_bytes: int) -> None:
        # Skip a signed LEB128 (i32: 5 bytes, i64: 10 bytes); its value is not needed.
        for _ in range(max_bytes):
            if not self.byte() & 0x80:
                return
        raise self.fail("integer representation too long")

    def name(self) -> str:
        length = self.u32()
        start = self.pos
        self.skip(length)
        try:
            return self.data[start : start + length].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a name is not valid UTF-8") from None

    def sub(self, length: int, where: str) -> _Reader:
        start = self.pos
        self.skip(length)
        return _Reader(self.data, start, start + length, where)


def _over(reader: _Reader, what: str, given: int, bound: int, bound_name: str) -> None:
    if given > bound:
        raise ModuleBoundsError(
            f"{reader.where}: declares {given} {what}, at most {bound} allowed "
            f"(ModuleBounds.{bound_name})"
        )


def check_module_bounds(wasm: bytes, bounds: ModuleBounds | None = None) -> ModuleCounts:
    """Read a module's sections and check every count and declared size against ``bounds``.

    Parameters
    ----------
    wasm
        The module's bytes (binary format, not WAT).
    bounds
        The limits; default :class:`ModuleBounds`.

    Returns
    -------
    ModuleCounts
        What the module declares.

    Raises
    ------
    ModuleBoundsError
        The bytes are not a well-formed module layout, or something is over a bound; the
        message names the section, what it declares and the bound.
    """
    bounds = bounds or ModuleBounds()
    counts = ModuleCounts(module_bytes=len(wasm))
    top = _Reader(wasm, 0, len(wasm), "module")
    if len(wasm) > bounds.max_module_bytes:
        raise ModuleBoundsError(
            f"module: {len(wasm)} bytes, at most {bounds.max_module_bytes} allowed "
            "(ModuleBounds.max_module_bytes)"
        )
    if wasm[:4] != WASM_MAGIC:
        raise ModuleBoundsError("not a valid wasm module: no \\0asm magic")
    if wasm[4:8] != WASM_VERSION:
        raise ModuleBoundsError(
            f"not a valid wasm module: binary version {wasm[4:8].hex()}, expected 01000000 "
            "(a core module)"
        )
    top.pos = 8
    seen: set[int] = set()
    last_id = 0
    # Order of the non-custom sections in the binary format (datacount sits before code).
    order = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 12: 10, 10: 11, 11: 12}
    while not top.at_end():
        section_id = top.byte()
        size = top.u32()
        name = SECTION_NAMES.get(section_id)
        if name is None:
            raise top.fail(f"unknown section id {section_id}")
        section = top.sub(size, f"{name} section")
        if section_id == 0:
            counts.custom_sections += 1
            _over(section, "custom sections", counts.custom_sections,
                  bounds.max_custom_sections, "max_custom_sections")  # fmt: skip
            section.name()
            continue
        if section_id in seen:
            raise section.fail("appears twice")
        if order[section_id] < last_id:
            raise section.fail("out of order")
        seen.add(section_id)
        last_id = order[section_id]
        _READERS[section_id](section, bounds, counts)
        if not section.at_end():
            raise section.fail(f"{section.end - section.pos} bytes left after its contents")
    return counts


# -- sections ---------------------------------------------------------------------------------
def _types(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.types = reader.u32()
    _over(reader, "types", counts.types, bounds.max_types, "max_types")
    for _ in range(counts.types):
        form = reader.byte()
        if form != 0x60:
            raise reader.fail(f"type form 0x{form:02x}; only function types (0x60) are allowed")
        arity = 0
        for _vector in range(2):  # params, results
            length = reader.u32()
            arity += length
            _over(reader, "params + results in one type", arity, bounds.max_type_arity,
                  "max_type_arity")  # fmt: skip
            for _value in range(length):
                _value_type(reader)


def _value_type(reader: _Reader) -> None:
    code = reader.byte()
    if code not in _VALUE_TYPES and code not in _REF_TYPES:
        raise reader.fail(f"value type 0x{code:02x} is not one a kernel may use")


def _ref_type(reader: _Reader) -> None:
    code = reader.byte()
    if code not in _REF_TYPES:
        raise reader.fail(f"reference type 0x{code:02x} is not funcref or externref")


def _limits(reader: _Reader, what: str) -> tuple[int, int | None]:
    flags = reader.byte()
    if flags == 0x00:
        return reader.u32(), None
    if flags == 0x01:
        minimum, maximum = reader.u32(), reader.u32()
        return minimum, maximum
    raise reader.fail(
        f"{what} limits flag 0x{flags:02x}: shared, 64-bit and custom-page-size {what}s are refused"
    )


def _imports(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    count = reader.u32()
    # Names for the message (at most a few; parsing stops at the first bound).
    for _ in range(min(count, max(bounds.max_imports, 0) + 5)):
        module_name = reader.name()
        field_name = reader.name()
        kind = reader.byte()
        counts.imports.append(f"{module_name}.{field_name}")
        if kind == 0:
            reader.u32()
        elif kind == 1:
            _ref_type(reader)
            _limits(reader, "table")
        elif kind == 2:
            _limits(reader, "memory")
        elif kind == 3:
            _value_type(reader)
            reader.byte()
        else:
            raise reader.fail(f"import kind {_IMPORT_KINDS.get(kind, kind)} is refused")
    if count > bounds.max_imports:
        listed = counts.imports if count == len(counts.imports) else [*counts.imports, "..."]
        if bounds.max_imports == 0:
            raise ModuleBoundsError(
                f"imports {listed}; a kernel module must import nothing "
                "(ModuleBounds.max_imports = 0)"
            )
        _over(reader, "imports", count, bounds.max_imports, "max_imports")


def _functions(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.functions = reader.u32()
    _over(reader, "functions", counts.functions, bounds.max_functions, "max_functions")
    for _ in range(counts.functions):
        reader.u32()


def _tables(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    count = reader.u32()
    _over(reader, "tables", count, bounds.max_tables, "max_tables")
    for _ in range(count):
        _ref_type(reader)
        minimum, maximum = _limits(reader, "table")
        _over(reader, "initial table elements", minimum, bounds.max_table_elements,
              "max_table_elements")  # fmt: skip
        if maximum is not None:
            _over(reader, "as a table's maximum elements", maximum, bounds.max_table_elements,
                  "max_table_elements")  # fmt: skip
        counts.tables.append((minimum, maximum))


def _memories(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    count = reader.u32()
    _over(reader, "memories", count, bounds.max_memories, "max_memories")
    for _ in range(count):
        minimum, maximum = _limits(reader, "memory")
        _over(reader, "initial memory pages", minimum, bounds.max_memory_initial_pages,
              "max_memory_initial_pages")  # fmt: skip
        if maximum is not None and maximum < minimum:
            raise reader.fail(f"memory maximum {maximum} is below its minimum {minimum}")
        counts.memories.append((minimum, maximum))


def _const_expr(reader: _Reader) -> None:
    # The constant instructions of the MVP, SIMD, reference types and extended-const.
    while True:
        opcode = reader.byte()
        if opcode == 0x0B:  # end
            return
        if opcode == 0x41:
            reader.signed(5)
        elif opcode == 0x42:
            reader.signed(10)
        elif opcode == 0x43:
            reader.skip(4)
        elif opcode == 0x44:
            reader.skip(8)
        elif opcode in (0x23, 0xD2):  # global.get, ref.func
            reader.u32()
        elif opcode == 0xD0:  # ref.null
            _ref_type(reader)
        elif opcode in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const add/sub/mul
            pass
        elif opcode == 0xFD and reader.u32() == 12:  # v128.const
            reader.skip(16)
        else:
            raise reader.fail(f"opcode 0x{opcode:02x} is not allowed in a constant expression")


def _globals(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.globals = reader.u32()
    _over(reader, "globals", counts.globals, bounds.max_globals, "max_globals")
    for _ in range(counts.globals):
        _value_type(reader)
        mutability = reader.byte()
        if mutability not in (0, 1):
            raise reader.fail(f"global mutability 0x{mutability:02x}")
        _const_expr(reader)


def _exports(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.exports = reader.u32()
    _over(reader, "exports", counts.exports, bounds.max_exports, "max_exports")
    for _ in range(counts.exports):
        counts.export_names.append(reader.name())
        kind = reader.byte()
        if kind not in (0, 1, 2, 3):
            raise reader.fail(f"export kind {_IMPORT_KINDS.get(kind, kind)} is refused")
        reader.u32()


def _start(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    reader.u32()
    counts.start = True
    if bounds.max_start_functions == 0:
        raise ModuleBoundsError(
            "start section: a start function would run during instantiation, before any "
            "call; a kernel module must have none (ModuleBounds.max_start_functions = 0)"
        )


def _elements(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.element_segments = reader.u32()
    _over(reader, "element segments", counts.element_segments, bounds.max_element_segments,
          "max_element_segments")  # fmt: skip
    for _ in range(counts.element_segments):
        flags = reader.u32()
        if flags > 7:
            raise reader.fail(f"element segment flags {flags}")
        if flags & 0b010 and not flags & 0b001:  # explicit table index (2, 6)
            reader.u32()
        if not flags & 0b001:  # active: an offset expression (0, 2, 4, 6)
            _const_expr(reader)
        if flags & 0b011:  # an element kind (1, 2, 3) or reference type (5, 6, 7)
            if flags & 0b100:
                _ref_type(reader)
            elif reader.byte() != 0x00:
                raise reader.fail("element kind other than funcref")
        items = reader.u32()
        counts.element_items += items
        _over(reader, "element items", counts.element_items, bounds.max_element_items,
              "max_element_items")  # fmt: skip
        for _item in range(items):
            if flags & 0b100:
                _const_expr(reader)
            else:
                reader.u32()


def _code(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    count = reader.u32()
    _over(reader, "function bodies", count, bounds.max_functions, "max_functions")
    for index in range(count):
        size = reader.u32()
        if size > bounds.max_function_body_bytes:
            raise ModuleBoundsError(
                f"code section: function body {index} has {size} bytes, at most "
                f"{bounds.max_function_body_bytes} allowed (ModuleBounds.max_function_body_bytes)"
            )
        body = reader.sub(size, f"code section, function body {index}")
        counts.max_body_bytes = max(counts.max_body_bytes, size)
        locals_total = 0
        for _group in range(body.u32()):
            locals_total += body.u32()
            # Checked per group: a declared count of 2**32 - 1 must not get further.
            if locals_total > bounds.max_locals_per_function:
                raise ModuleBoundsError(
                    f"code section: function body {index} declares {locals_total}+ locals, at "
                    f"most {bounds.max_locals_per_function} allowed "
                    "(ModuleBounds.max_locals_per_function)"
                )
            _value_type(body)
        counts.max_locals = max(counts.max_locals, locals_total)
        # The instructions themselves are wasmtime's to validate.


def _data(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    counts.data_segments = reader.u32()
    _over(reader, "data segments", counts.data_segments, bounds.max_data_segments,
          "max_data_segments")  # fmt: skip
    for _ in range(counts.data_segments):
        flags = reader.u32()
        if flags == 0:
            _const_expr(reader)
        elif flags == 2:
            reader.u32()
            _const_expr(reader)
        elif flags != 1:
            raise reader.fail(f"data segment flags {flags}")
        length = reader.u32()
        reader.skip(length)  # the bytes are in the module: bounded by its size
        counts.data_bytes += length


def _data_count(reader: _Reader, bounds: ModuleBounds, counts: ModuleCounts) -> None:
    declared = reader.u32()
    _over(reader, "data segments", declared, bounds.max_data_segments, "max_data_segments")


_READERS = {
    1: _types,
    2: _imports,
    3: _functions,
    4: _tables,
    5: _memories,
    6: _globals,
    7: _exports,
    8: _start,
    9: _elements,
    10: _code,
    11: _data,
    12: _data_count,
}

__all__ = ["ModuleBounds", "ModuleBoundsError", "ModuleCounts", "check_module_bounds"]
