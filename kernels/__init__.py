"""The C kernels, the .wasm they build to, their numpy reference and the build tool."""
