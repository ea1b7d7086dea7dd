"""The same .wasm runs outside wasmtime: in Node (V8) and in a real browser (headless chromium).

One job (evaluate, then two epochs of fused training on real digits) runs through the
minimal JS host kernels/js/sandflower.mjs and through wasmtime (client.runner); the results
must agree. The plain simd128 build has no relaxed instructions, so its float results are
fully determined by the wasm spec: wasmtime and V8 must give the same bits. The relaxed build
may fuse differently per engine, so it is compared within float32 tolerance.

Node and chromium are looked for on PATH; without them the tests skip, except under CI=true,
where they fail (.ci/run installs chromium; the machine image has Node 20).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from client.runner import KernelRunner, default_kernel_path
from client.sandbox import KernelModule
from kernels.spec import ModelSpec
from tests.browser.chromium import HEADLESS_FLAGS, require_chromium, under_ci

JS_DIR = Path(__file__).resolve().parents[2] / "kernels" / "js"
SPEC = ModelSpec.parse("mlp:64-32-10")
TRAIN = {"epochs": 2, "batchSize": 16, "lr": 0.1, "mu": 0.0, "seed": 7}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if under_ci():
            pytest.fail(f"{name} is required under CI=true and was not found on PATH")
        pytest.skip(f"{name} not found on PATH")
    return path


def _job(wasm: Path) -> tuple[dict, dict]:
    digits = load_digits()
    x = (digits.data[:300] / 16.0).astype(np.float32)
    y = digits.target[:300].astype(np.int32)
    params = SPEC.init_params(seed=3)
    arrays = {"x": x, "y": y, "params": params}

    def b64(array: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()

    job = {
        "wasm": str(wasm),
        "spec": b64(SPEC.encode()),
        "params": b64(SPEC.flatten(params)),
        "x": b64(x),
        "labels": b64(y),
        "train": TRAIN,
    }
    return job, arrays


def _wasmtime(wasm: Path, arrays: dict) -> dict:
    runner = KernelRunner(KernelModule.from_file(wasm))
    evaluation = runner.evaluate(SPEC, arrays["params"], arrays["x"], arrays["y"])
    trained = runner.train(
        SPEC,
        arrays["params"],
        arrays["x"],
        arrays["y"],
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batchSize"],
        lr=TRAIN["lr"],
        mu=TRAIN["mu"],
        seed=TRAIN["seed"],
    )
    return {
        "loss": evaluation.loss,
        "accuracy": evaluation.accuracy,
        "train_loss": trained.loss,
        "params": SPEC.flatten(trained.params),
    }


def _decode(result: dict) -> dict:
    params = np.frombuffer(base64.b64decode(result["params"]), dtype=np.float32)
    return {
        "loss": result["evaluation"]["loss"],
        "accuracy": result["evaluation"]["accuracy"],
        "train_loss": result["train_loss"],
        "params": params,
    }


def _compare(outside: dict, inside: dict, exact: bool) -> None:
    assert outside["accuracy"] == pytest.approx(inside["accuracy"], abs=1e-6)
    if exact:
        assert np.float32(outside["loss"]) == np.float32(inside["loss"])
        assert np.float32(outside["train_loss"]) == np.float32(inside["train_loss"])
        np.testing.assert_array_equal(outside["params"], inside["params"])
    else:
        assert outside["loss"] == pytest.approx(inside["loss"], rel=1e-5)
        assert outside["train_loss"] == pytest.approx(inside["train_loss"], rel=1e-4)
        np.testing.assert_allclose(outside["params"], inside["params"], rtol=1e-3, atol=1e-4)
    # the job did something: training moved the parameters
    assert not np.allclose(inside["params"], SPEC.flatten(SPEC.init_params(seed=3)))


def test_simd128_build_gives_the_same_bits_in_node_and_wasmtime(tmp_path):
    node = _tool("node")
    wasm = default_kernel_path(relaxed_simd=False)
    job, arrays = _job(wasm)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    completed = subprocess.run(
        [node, str(JS_DIR / "run_job.mjs"), str(job_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    _compare(_decode(json.loads(completed.stdout)), _wasmtime(wasm, arrays), exact=True)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>sandflower kernel</title></head>
<body><pre id="result">pending</pre>
<script type="module">
{host}
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
const job = {job};
const out = document.getElementById("result");
try {{
  const kernel = await loadKernel(bytes(job.wasm_b64));
  const evaluation = kernel.evaluate(new Int32Array(bytes(job.spec)),
    new Float32Array(bytes(job.params)), new Float32Array(bytes(job.x)),
    new Int32Array(bytes(job.labels)));
  const trained = kernel.train(new Int32Array(bytes(job.spec)), new Float32Array(bytes(job.params)),
    new Float32Array(bytes(job.x)), new Int32Array(bytes(job.labels)), job.train);
  const u8 = new Uint8Array(trained.params.buffer);
  let s = ""; for (let i = 0; i < u8.length; i++) s += String.fromCharCode(u8[i]);
  out.textContent = JSON.stringify({{ evaluation, train_loss: trained.loss, params: btoa(s) }});
}} catch (error) {{
  out.textContent = "ERROR " + error;
}}
</script></body></html>
"""


@pytest.mark.browser
@pytest.mark.parametrize("relaxed", [False, True], ids=["simd128", "relaxed"])
def test_both_builds_run_in_headless_chromium(tmp_path, relaxed):
    chromium = require_chromium()
    wasm = default_kernel_path(relaxed_simd=relaxed)
    job, arrays = _job(wasm)
    job["wasm_b64"] = base64.b64encode(wasm.read_bytes()).decode()
    # One inline script: the generated registry, then the host without its import of it.
    sources = (JS_DIR / "registry.mjs").read_text() + (JS_DIR / "sandflower.mjs").read_text()
    sources = re.sub(r"^(import .*;|export \{.*\};)$", "", sources, flags=re.MULTILINE)
    host = re.sub(r"^export ", "", sources, flags=re.MULTILINE)
    page = tmp_path / "kernel.html"
    page.write_text(PAGE.format(host=host, job=json.dumps(job)))
    completed = subprocess.run(
        [
            chromium,
            *HEADLESS_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r'<pre id="result">(.*?)</pre>', completed.stdout, re.DOTALL)
    assert match, f"no result in the page; chromium said: {completed.stderr[-2000:]}"
    text = match.group(1).replace("&quot;", '"')
    assert not text.startswith(("ERROR", "pending")), text
    _compare(_decode(json.loads(text)), _wasmtime(wasm, arrays), exact=not relaxed)


def test_step_budget_gives_the_same_bits_in_node_and_wasmtime(tmp_path):
    # sf_train_budget through the JS host stops where wasmtime's does, with the same bits.
    node = _tool("node")
    wasm = default_kernel_path(relaxed_simd=False)
    job, arrays = _job(wasm)
    max_steps = 25  # 300 samples / 16 = 19 steps per epoch: stops 6 steps into epoch 2
    job["budget"] = {"maxSteps": max_steps}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    completed = subprocess.run(
        [node, str(JS_DIR / "run_job.mjs"), str(job_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    outside = json.loads(completed.stdout)["budget"]
    inside = KernelRunner(KernelModule.from_file(wasm)).train(
        SPEC,
        arrays["params"],
        arrays["x"],
        arrays["y"],
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batchSize"],
        lr=TRAIN["lr"],
        mu=TRAIN["mu"],
        seed=TRAIN["seed"],
        max_steps=max_steps,
    )
    assert outside["steps"] == inside.steps_done == max_steps < inside.steps_planned
    assert np.float32(outside["loss"]) == np.float32(inside.loss)
    params = np.frombuffer(base64.b64decode(outside["params"]), dtype=np.float32)
    np.testing.assert_array_equal(params, SPEC.flatten(inside.params))
