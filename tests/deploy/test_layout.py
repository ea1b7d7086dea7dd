"""The deployment folder `deploy init` writes, checked with Flower's own parsers."""

from __future__ import annotations

import shlex
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from simulations import cli_deploy
from simulations.deploy import certs
from simulations.deploy.layout import (
    CONNECTION_NAME,
    DeploymentError,
    DeploymentLayout,
    DeploymentPlan,
    format_address,
    write_deployment,
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> tuple[DeploymentLayout, DeploymentPlan]:
    plan = DeploymentPlan(num_nodes=3, app_dir=Path("/srv/sandflower"))
    root = tmp_path_factory.mktemp("deploy") / "fleet"
    return write_deployment(root, plan), plan


def _commands(layout: DeploymentLayout) -> list[list[str]]:
    lines = layout.commands.read_text().splitlines()
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_0600_and_public_files_are_readable(deployment):
    layout, plan = deployment
    private = [layout.ca_key, layout.server_key]
    private += [layout.node_private_key(node) for node in range(plan.num_nodes)]
    for path in private:
        assert _mode(path) == 0o600, path
    public = [layout.ca_certificate, layout.server_certificate]
    public += [layout.node_public_key(node) for node in range(plan.num_nodes)]
    for path in public:
        assert _mode(path) == 0o644, path


def test_every_node_has_its_own_key(deployment):
    layout, plan = deployment
    public_keys = {layout.node_public_key(node).read_text() for node in range(plan.num_nodes)}
    assert len(public_keys) == plan.num_nodes
    for node in range(plan.num_nodes):
        key = certs.load_node_private_key(layout.node_private_key(node))
        assert certs.node_public_key_openssh(key, f"supernode-{node}").decode() == (
            layout.node_public_key(node).read_text()
        )


def test_server_certificate_is_signed_by_the_written_ca(deployment):
    layout, _ = deployment
    ca = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(layout.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)


def test_flower_reads_the_connection_config(deployment):
    from flwr.cli.flower_config import parse_superlink_connection

    layout, plan = deployment
    config = tomllib.loads(layout.flower_config.read_text())
    assert config["superlink"]["default"] == CONNECTION_NAME
    connection = parse_superlink_connection(config["superlink"][CONNECTION_NAME], CONNECTION_NAME)
    assert connection.address == plan.superlink_address == "127.0.0.1:9092"
    assert connection.root_certificates == str(layout.ca_certificate)
    assert Path(connection.root_certificates).is_absolute()
    assert connection.insecure is False


def test_the_superlink_command_is_accepted_by_flower_superlink(deployment):
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    layout, plan = deployment
    (superlink,) = [argv for argv in _commands(layout) if argv[0] == "flower-superlink"]
    args = _parse_args_run_superlink().parse_args(superlink[1:])
    assert args.enable_supernode_auth is True
    assert args.insecure is False
    assert args.ssl_ca_certfile == str(layout.ca_certificate)
    assert args.ssl_certfile == str(layout.server_certificate)
    assert args.ssl_keyfile == str(layout.server_key)
    assert (args.host, args.port) == ("127.0.0.1", plan.superlink_port)


def test_each_supernode_command_is_accepted_by_flower_supernode(deployment):
    from flwr.common.config import parse_config_args
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    layout, plan = deployment
    supernodes = [argv for argv in _commands(layout) if argv[0] == "flower-supernode"]
    assert len(supernodes) == plan.num_nodes
    ports = []
    for node, argv in enumerate(supernodes):
        args = _parse_args_run_supernode().parse_args(argv[1:])
        assert args.superlink == plan.superlink_address
        assert args.root_certificates == str(layout.ca_certificate)
        assert args.auth_supernode_private_key == str(layout.node_private_key(node))
        assert args.insecure is False
        node_config = parse_config_args([args.node_config])
        assert node_config == {"data-path": str(layout.node_data(node))}
        ports.append(args.port)
    assert len(set(ports)) == plan.num_nodes


def test_registration_and_run_commands_name_the_connection(deployment):
    layout, plan = deployment
    commands = _commands(layout)
    registers = [argv for argv in commands if argv[:3] == ["flwr", "supernode", "register"]]
    assert [argv[3] for argv in registers] == [
        str(layout.node_public_key(node)) for node in range(plan.num_nodes)
    ]
    assert all(argv[4] == CONNECTION_NAME for argv in registers)
    (run,) = [argv for argv in commands if argv[:2] == ["flwr", "run"]]
    assert run[2:4] == ["/srv/sandflower", CONNECTION_NAME]
    run_config = run[run.index("--run-config") + 1]
    assert tomllib.loads(run_config) == {"out-dir": str(layout.root / "runs" / "run-1")}
    (export,) = [argv for argv in commands if argv[0] == "export"]
    assert f"FLWR_HOME={layout.flwr_home}" in export
    assert "FLWR_TELEMETRY_ENABLED=0" in export


def test_an_existing_folder_with_files_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DeploymentError, match="already holds files"):
        write_deployment(tmp_path, DeploymentPlan(num_nodes=1))
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_nodes": 0}, "nodes"),
        ({"num_nodes": 2, "supernode_ports": (9100, 9100)}, "distinct"),
        ({"num_nodes": 2, "supernode_ports": (9100,)}, "expected 2 ports"),
        ({"num_nodes": 1, "superlink_port": 70000}, "70000"),
        ({"num_nodes": 1, "hosts": ()}, "at least one"),
    ],
)
def test_a_bad_plan_is_refused_with_its_reason(kwargs, message):
    with pytest.raises(DeploymentError, match=message):
        DeploymentPlan(**kwargs)


def test_a_remote_host_binds_every_interface_and_keeps_loopback_in_the_certificate():
    plan = DeploymentPlan(num_nodes=1, hosts=("coord.lan", "10.0.0.5"))
    assert plan.superlink_address == "coord.lan:9092"
    assert plan.superlink_bind_host == "0.0.0.0"
    # the SuperLink's own superexec dials 127.0.0.1 over TLS
    assert plan.certificate_hosts == ("coord.lan", "10.0.0.5", "127.0.0.1", "localhost", "::1")


def test_ipv6_addresses_get_brackets():
    assert format_address("::1", 9092) == "[::1]:9092"
    assert format_address("10.0.0.5", 9092) == "10.0.0.5:9092"
    assert format_address("coord.lan", 9092) == "coord.lan:9092"


def test_cli_init_writes_a_deployment(tmp_path):
    result = CliRunner().invoke(
        cli_deploy.app,
        ["init", str(tmp_path / "fleet"), "--nodes", "2", "--host", "coord.lan"],
    )
    assert result.exit_code == 0, result.output
    layout = DeploymentLayout(tmp_path / "fleet")
    assert layout.node_private_key(1).is_file()
    assert not layout.node_private_key(2).exists()
    assert "--superlink coord.lan:9092" in layout.commands.read_text()
    # the default app is this source folder (the Flower App)
    repo = Path(cli_deploy.__file__).resolve().parents[1]
    assert f"flwr run {repo} sandflower" in layout.commands.read_text()


def test_cli_init_refuses_a_bad_host_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(
        cli_deploy.app, ["init", str(tmp_path / "fleet"), "--nodes", "2", "--host", "a b"]
    )
    assert result.exit_code == 2
    assert "'a b'" in result.output
    assert not (tmp_path / "fleet").exists()


def test_cli_init_with_a_scenario_writes_each_nodes_partition(tmp_path):
    from client.data import load_data_file
    from simulations.federated_data import load_client_data
    from simulations.scenario import load_scenario

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        '[scenario]\nname = "init-data"\nseed = 3\n[data]\ndataset = "digits"\n'
        'partitioning = "iid"\n[federation]\nclients = 9\n[model]\nkind = "logreg"\n'
    )
    result = CliRunner().invoke(
        cli_deploy.app,
        ["init", str(tmp_path / "fleet"), "--nodes", "2", "--scenario", str(scenario)],
    )
    assert result.exit_code == 0, result.output
    run_config = load_scenario(scenario).with_overrides(clients=2).to_run_config()
    layout = DeploymentLayout(tmp_path / "fleet")
    for node in range(2):
        x, y = load_data_file(layout.node_data(node))
        partition = load_client_data(run_config, node)
        assert len(y) == len(partition.y_train) + len(partition.y_test)
        assert x.shape[1] == partition.x_train.shape[1]
    assert not layout.node_data(2).exists()


def test_cli_init_refuses_an_unknown_scenario_before_writing_anything(tmp_path):
    result = CliRunner().invoke(
        cli_deploy.app,
        ["init", str(tmp_path / "fleet"), "--nodes", "2", "--scenario", "no-such-scenario"],
    )
    assert result.exit_code == 2
    assert "no-such-scenario" in result.output
    assert not (tmp_path / "fleet").exists()


def test_cli_local_refuses_an_unknown_scenario_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(
        cli_deploy.app, ["local", "no-such-scenario", "--nodes", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "no-such-scenario" in result.output
    assert not (tmp_path / "logs").exists()


def test_cli_local_refuses_a_malformed_set_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(
        cli_deploy.app, ["local", "--set", "no-equals-sign", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
