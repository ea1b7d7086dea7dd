"""The Flower App components that `flwr run .` loads (pyproject.toml [tool.flwr.app.components]).

The top layer composes the parts: the coordinator's ServerApp gets its central evaluation
(the held-out test set belongs to the scenario's data set, i.e. to simulations/) and the pin
of the kernel every client must run. The ClientApp (the ``clientapp`` component) is
``simulations.client_app:app``: the client's app with the scenario's partitions as its data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

# Imported here, not lazily in the ServerApp: Flower 1.42's app loader takes a module that is
# already in sys.modules as it is, so a ServerApp thread still importing the ClientApp's module
# while the simulation engine loads `simulations.client_app:app` hands the engine a
# half-initialised module (LoadClientAppError, seen in about 1 run in 4). Importing it while
# this module loads happens under Flower's import lock.
import simulations.client_app  # noqa: F401  (imported eagerly: see the comment above)
from client import kernel_source
from client.runner import KernelRunner
from coordinator.config import FederationConfig, RunConfigError
from coordinator.server_app import run_rounds_on_grid
from simulations.central import make_central_evaluate
from simulations.faults import fault_labels
from simulations.federated_data import (
    DataConfig,
    build_federated_data,
    example_counts,
    is_lazy,
)

KERNEL_FLAVOUR_KEY = "kernel-flavour"
SCENARIO_KEY = "scenario"
NUM_PARTITIONS_KEY = "num-partitions"


def select_scenario(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the run config that ``flwr run . --run-config "scenario='NAME'"`` means.

    pyproject.toml's ``[tool.flwr.app.config]`` is the default scenario's flat run config
    (a test keeps them equal), so Flower hands the ServerApp those values with the user's
    ``--run-config`` keys replaced. The ``scenario`` key selects a bundled scenario: its flat
    run config is the base, and every key whose value differs from the default scenario's is
    the user's override and wins. A name that is not bundled is refused, unless the run config
    is a whole scenario's own (some other key differs from the default: a deployment of the
    user's scenario file, ``sandflower scenario show FILE --flat``), which is taken as it is.

    Raises
    ------
    RunConfigError
        ``scenario`` names no bundled scenario and nothing else says what to run.
    """
    from simulations.scenario import (
        DEFAULT_SCENARIO,
        bundled_scenarios,
        default_scenario_path,
        find_scenario,
        load_scenario,
    )

    name = run_config.get(SCENARIO_KEY)
    if name is None or name == DEFAULT_SCENARIO:
        return dict(run_config)
    default = load_scenario(default_scenario_path()).to_run_config()
    overrides = {
        key: value
        for key, value in run_config.items()
        if key != SCENARIO_KEY and (key not in default or default[key] != value)
    }
    if str(name) in bundled_scenarios():
        return load_scenario(find_scenario(str(name))).to_run_config() | overrides
    own_keys = set(overrides) - {"out-dir", "kernel-sha256", "resume-from", KERNEL_FLAVOUR_KEY}
    if own_keys:
        return dict(run_config)
    raise RunConfigError(
        SCENARIO_KEY,
        f"expected a bundled scenario (one of {', '.join(bundled_scenarios())}), given "
        f"{name!r}; to run your own scenario file pass its whole flat run config "
        "(`sandflower scenario show FILE --flat`)",
    )


def partition_check(run_config: Mapping[str, Any]) -> Callable[[Mapping[int, int]], None]:
    """Refuse a run whose simulated SuperNodes do not hold the scenario's partitions.

    On Flower's simulation engine node ``i`` of ``num-supernodes`` reports partition ``i``;
    with fewer nodes than the scenario's ``num-partitions`` (Flower's default federation
    starts 2) most of the data would silently never train. Nodes that report no partition
    (devices with their own data) are not in the map and not checked.
    """
    num_partitions = int(run_config[NUM_PARTITIONS_KEY])

    def check(node_partitions: Mapping[int, int]) -> None:
        # Only nodes that reported a partition are in the map (coordinator.strategy).
        reported = set(node_partitions.values())
        if not reported:
            return
        if len(node_partitions) != num_partitions or reported != set(range(num_partitions)):
            raise RunConfigError(
                NUM_PARTITIONS_KEY,
                f"the scenario has num-partitions = {num_partitions}, but Flower started "
                f"{len(node_partitions)} SuperNodes (partitions {sorted(reported)[:10]}): "
                f"set options.num-supernodes = {num_partitions} for the federation "
                f"(pyproject.toml [tool.flwr.federations.*] or `flwr run . --federation-config "
                f'"num-supernodes={num_partitions}"`), or pass --run-config '
                f'"num-partitions={len(node_partitions)}"',
            )

    return check


def resolve_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the run config with the defaults filled in that only this layer knows.

    An empty ``kernel-sha256`` pins the kernel build named by ``kernel-flavour`` ("relaxed",
    the default, or "simd128" for devices whose runtime has no relaxed SIMD), as shipped in
    the app bundle (kernels/wasm/<build>.json): clients refuse to train on any other. The
    flavour is resolved into the pin here, so ``kernel-flavour`` does not go further.

    Raises
    ------
    RunConfigError
        ``kernel-flavour`` is unknown, or its shipped kernel is unreadable or altered.
    """
    resolved = dict(run_config)
    flavour = str(resolved.pop(KERNEL_FLAVOUR_KEY, "") or kernel_source.DEFAULT_FLAVOUR)
    if not str(resolved.get("kernel-sha256") or ""):
        try:
            shipped = kernel_source.read_shipped(kernel_source.shipped_path(flavour.strip()))
        except kernel_source.KernelSourceError as error:
            raise RunConfigError(KERNEL_FLAVOUR_KEY, str(error)) from error
        resolved["kernel-sha256"] = shipped.sha256
    return resolved


def partition_sizes(
    data_config: DataConfig | Mapping[str, Any],
) -> Callable[[int, str], int | None]:
    """``(partition id, "train" | "evaluate") -> examples`` of the scenario's partitions.

    In simulation the coordinator knows what each client holds, so a larger num-examples
    claim is clipped to it (coordinator.validation.WeightPolicy). None for an unknown or
    unreadable partition.
    """
    if not isinstance(data_config, DataConfig):
        data_config = DataConfig.from_mapping(data_config)
    config = data_config  # narrowed for the closure
    # Counted per client when asked (synthetic devices from their seeds, not generated):
    # building the whole population here cost ~150 MB and seconds at 1000 clients. An
    # eager data set is built now (its errors raised here), not in the middle of a round.
    if not is_lazy(config):
        build_federated_data(config)

    def expected(partition_id: int, purpose: str) -> int | None:
        counts = example_counts(config, partition_id)
        if counts is None:
            return None
        return counts[0] if purpose == "train" else counts[1]

    return expected


def pinned_runner(pin: str) -> KernelRunner:
    """Return a runner on the pinned kernel, for central evaluation: the one the clients run.

    A pin that no shipped build has (the operator's own kernel) falls back to the bundled
    kernel: central evaluation computes the same function whatever build runs it.
    """
    try:
        kernel = kernel_source.pinned_kernel(pin)
    except kernel_source.KernelMismatch:
        return KernelRunner()
    return KernelRunner(kernel_source.compiled_module(kernel))


def build_scenario_server_app(
    *,
    run_config_override: Mapping[str, Any] | None = None,
    on_round: Callable | None = None,
) -> ServerApp:
    """Build the scenario's ServerApp: central evaluation on the scenario's held-out test set.

    It resolves the run config, then runs ``coordinator.server_app.run_rounds_on_grid`` with
    the scenario's central evaluation, partition sizes and fault labels (what
    ``coordinator.server_app.build_coordinator_server_app`` leaves to its caller).

    Parameters
    ----------
    run_config_override : Mapping[str, Any] or None
        The flat run config to use instead of ``context.run_config``.
    on_round : Callable or None
        Called with each finished RoundReport (a progress display).

    Returns
    -------
    flwr.serverapp.ServerApp
        The app; ``serverapp`` below is the one ``flwr run .`` starts.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if run_config_override is not None:
            run_config = resolve_run_config(run_config_override)
            check_partitions = None  # our engines start one node per partition
        else:  # `flwr run .`: the scenario key selects; the nodes must hold every partition
            run_config = resolve_run_config(select_scenario(context.run_config))
            check_partitions = partition_check(run_config)
        config = FederationConfig.from_run_config(run_config)
        # The data keys parsed once, through the same schema as the scenario file.
        data_config = DataConfig.from_mapping(run_config)
        run_rounds_on_grid(
            grid,
            config,
            central_evaluate=make_central_evaluate(
                data_config, config.model, runner=pinned_runner(config.kernel_sha256)
            ),
            on_round=on_round,
            expected_num_examples=partition_sizes(data_config),
            fault_labels=fault_labels(run_config),
            check_partitions=check_partitions,
        )

    return app


serverapp = build_scenario_server_app()
