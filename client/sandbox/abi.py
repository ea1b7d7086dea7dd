"""The kernel ABI's surface as the sandbox checks it: exports, signatures, status codes."""

from __future__ import annotations

ABI_VERSION = 1

# Every export kernels/ABI.md names, with its wasm signature (params, results). A module that
# lacks one, or has it with another signature, is refused before it runs.
KERNEL_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sf_abi_version": ((), ("i32",)),
    "sf_alloc": (("i32",), ("i32",)),
    "sf_heap_reset": ((), ()),
    "sf_sgemm": (("i32",) * 9, ()),
    "sf_dense_forward": (("i32",) * 7, ()),
    "sf_dense_backward": (("i32",) * 9, ()),
    "sf_relu": (("i32",) * 3, ()),
    "sf_relu_backward": (("i32",) * 4, ()),
    "sf_softmax_xent": (("i32",) * 5, ("f32",)),
    "sf_sgd_update": (("i32",) * 4 + ("f32", "f32"), ()),
    "sf_model_forward": (("i32",) * 5, ("i32",)),
    "sf_model_loss_grad": (("i32",) * 7, ("i32",)),
    "sf_train": (("i32",) * 8 + ("f32", "f32", "i64", "i32"), ("i32",)),
    "sf_train_budget": (("i32",) * 8 + ("f32", "f32", "i64", "i32", "i32", "i32"), ("i32",)),
    "sf_evaluate": (("i32",) * 6, ("i32",)),
}
MEMORY_EXPORT = "memory"
KERNEL_EXPORTS: tuple[str, ...] = (*KERNEL_SIGNATURES, MEMORY_EXPORT)

# Status codes of the model-level entries (kernels/ABI.md, "Status codes").
STATUS_OK = 0
STATUS_NO_MEMORY = 2
STATUS_NAMES = {0: "SF_OK", 1: "SF_BAD_SPEC", 2: "SF_NO_MEMORY", 3: "SF_BAD_ARGUMENT"}


def _format_signature(signature: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = signature
    return f"({', '.join(params)}) -> ({', '.join(results)})"
