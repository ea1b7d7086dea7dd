// A minimal JavaScript host for the Sandflower kernels (kernels/ABI.md), for Node and browsers.
// It proves the same .wasm runs outside wasmtime: it instantiates the module with NO imports
// and runs sf_evaluate / sf_train on arrays the caller gives. The ABI version, the exports and
// the status codes come from registry.mjs, generated from kernels/registry.py.
import { ABI_VERSION, EXPORTS, MEMORY_EXPORT, STATUS_CODES } from "./registry.mjs";

export { ABI_VERSION };

const STATUS_NAMES = Object.fromEntries(
  Object.entries(STATUS_CODES).map(([name, code]) => [code, name]),
);

// Every export of the registry, with its parameter count (a wasm export's JS function has
// `length` = its parameter count), and the memory: a module that differs is refused.
export function exportMismatches(exports) {
  const problems = [];
  for (const [name, { params }] of Object.entries(EXPORTS)) {
    if (typeof exports[name] !== "function") problems.push(`missing export ${name}`);
    else if (exports[name].length !== params.length) {
      problems.push(`export ${name} takes ${exports[name].length} arguments, expected ${params.length}`);
    }
  }
  if (!(exports[MEMORY_EXPORT] instanceof WebAssembly.Memory)) {
    problems.push(`missing memory export ${MEMORY_EXPORT}`);
  }
  return problems;
}

export async function loadKernel(bytes) {
  const { instance } = await WebAssembly.instantiate(bytes, {});
  const exports = instance.exports;
  const problems = exportMismatches(exports);
  if (problems.length) throw new Error(`not a Sandflower kernel: ${problems.join("; ")}`);
  if (exports.sf_abi_version() !== ABI_VERSION) {
    throw new Error(`kernel ABI ${exports.sf_abi_version()}, expected ${ABI_VERSION}`);
  }
  return new Kernel(exports);
}

class Kernel {
  constructor(exports) {
    this.exports = exports;
  }

  // Copy a typed array into linear memory; return its pointer.
  put(array) {
    const ptr = this.exports.sf_alloc(array.byteLength);
    if (ptr === 0) throw new Error(`sf_alloc(${array.byteLength}) failed`);
    // A fresh view every time: memory.grow inside sf_alloc detaches older buffers.
    new Uint8Array(this.exports.memory.buffer, ptr, array.byteLength).set(
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength),
    );
    return ptr;
  }

  readF32(ptr, length) {
    return Float32Array.from(new Float32Array(this.exports.memory.buffer, ptr, length));
  }

  check(status, entry) {
    if (status !== STATUS_CODES.SF_OK) {
      throw new Error(`${entry} returned status ${status} (${STATUS_NAMES[status] ?? "unknown status"})`);
    }
  }

  // spec: Int32Array (kernels/spec.py ModelSpec.encode), params: Float32Array (flat),
  // x: Float32Array [n * input_dim], labels: Int32Array [n].
  evaluate(spec, params, x, labels) {
    this.exports.sf_heap_reset();
    const n = labels.length;
    const out = this.put(new Float32Array(2));
    const status = this.exports.sf_evaluate(
      this.put(spec), this.put(params), this.put(x), this.put(labels), n, out,
    );
    this.check(status, "sf_evaluate");
    const [loss, accuracy] = this.readF32(out, 2);
    return { loss, accuracy };
  }

  train(spec, params, x, labels, { epochs, batchSize, lr, mu, seed }) {
    this.exports.sf_heap_reset();
    const n = labels.length;
    const paramsPtr = this.put(params);
    const globalPtr = this.put(params);
    const out = this.put(new Float32Array(1));
    const status = this.exports.sf_train(
      this.put(spec), paramsPtr, globalPtr, this.put(x), this.put(labels), n,
      epochs, batchSize, lr, mu, BigInt(seed), out,
    );
    this.check(status, "sf_train");
    return { params: this.readF32(paramsPtr, params.length), loss: this.readF32(out, 1)[0] };
  }

  // sf_train stopped after maxSteps minibatch steps (ABI.md, "Step budgets"): returns the
  // steps done as well.
  trainBudget(spec, params, x, labels, { epochs, batchSize, lr, mu, seed, maxSteps }) {
    this.exports.sf_heap_reset();
    const n = labels.length;
    const paramsPtr = this.put(params);
    const globalPtr = this.put(params);
    const out = this.put(new Float32Array(1));
    const steps = this.put(new Int32Array(1));
    const status = this.exports.sf_train_budget(
      this.put(spec), paramsPtr, globalPtr, this.put(x), this.put(labels), n,
      epochs, batchSize, lr, mu, BigInt(seed), maxSteps, out, steps,
    );
    this.check(status, "sf_train_budget");
    return {
      params: this.readF32(paramsPtr, params.length),
      loss: this.readF32(out, 1)[0],
      steps: new Int32Array(this.exports.memory.buffer, steps, 1)[0],
    };
  }
}
