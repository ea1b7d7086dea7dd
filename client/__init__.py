"""The device side: the wasmtime sandbox, local data, local training and the ClientApp."""
