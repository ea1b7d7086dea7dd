// node kernels/js/run_job.mjs JOB.json
// Runs one evaluate + train (+ optional step-budget) job described by a JSON file (arrays base64, little-endian) with
// the JS host and prints the results as JSON: the portability check used by tests/kernels/.
import { readFileSync } from "node:fs";
import { loadKernel } from "./sandflower.mjs";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const bytes = (b64) => {
  const buf = Buffer.from(b64, "base64");
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
};
const kernel = await loadKernel(readFileSync(job.wasm));
const spec = new Int32Array(bytes(job.spec));
const params = new Float32Array(bytes(job.params));
const x = new Float32Array(bytes(job.x));
const labels = new Int32Array(bytes(job.labels));
const evaluation = kernel.evaluate(spec, params, x, labels);
const trained = kernel.train(spec, params, x, labels, job.train);
const b64 = (f32) => Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength).toString("base64");
const result = { evaluation, train_loss: trained.loss, params: b64(trained.params) };
if (job.budget) {
  // The same job stopped after job.budget.maxSteps minibatch steps (sf_train_budget).
  const stopped = kernel.trainBudget(spec, params, x, labels, { ...job.train, ...job.budget });
  result.budget = { loss: stopped.loss, steps: stopped.steps, params: b64(stopped.params) };
}
console.log(JSON.stringify(result));
