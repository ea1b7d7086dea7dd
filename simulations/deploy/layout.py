"""What goes into a deployment folder, and the command lines that use it.

``sandflower deploy init DIR`` writes::

    DIR/
      COMMANDS.txt                 the exact command lines, in the order to run them
      certificates/ca.crt          the CA every SuperNode and the operator trust
      certificates/ca.key          0600; keep it offline, it signs new server certificates
      certificates/server.crt      the SuperLink's certificate (SANs: the given hosts)
      certificates/server.key      0600; stays on the coordinator host
      keys/supernode-K             0600; OpenSSH ECDSA private key of SuperNode K (to device K)
      keys/supernode-K.pub         its OpenSSH public key (registered with the SuperLink)
      data/                        where node K's data file node-K.npz is expected
      flwr-home/config.toml        the Flower connection ``[superlink.sandflower]``
      superlink/                   the SuperLink's state database
      supernodes/supernode-K/      FLWR_HOME of SuperNode K when it runs here (`deploy local`)
      logs/                        process logs (``deploy local``)

Nodes are numbered from 0, like the partitions of a simulation.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from simulations.deploy import certs, device
from simulations.environment import FLOWER_ENV

CONNECTION_NAME = "sandflower"
DEFAULT_SUPERLINK_PORT = 9092
DEFAULT_SUPERNODE_BASE_PORT = 9100  # SuperNode K serves its runtime API on base + K


class DeploymentError(ValueError):
    """A deployment cannot be written or used as asked (the message says why)."""


@dataclass(frozen=True)
class DeploymentLayout:
    """The paths of one deployment folder (nothing is read or written by this class)."""

    root: Path

    @property
    def commands(self) -> Path:
        """Return the path of COMMANDS.txt."""
        return self.root / "COMMANDS.txt"

    @property
    def certificates_dir(self) -> Path:
        """Return the folder of the CA and server certificates and keys."""
        return self.root / "certificates"

    @property
    def ca_certificate(self) -> Path:
        """Return the path of the CA certificate."""
        return self.certificates_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """Return the path of the CA's private key."""
        return self.certificates_dir / "ca.key"

    @property
    def server_certificate(self) -> Path:
        """Return the path of the SuperLink's certificate."""
        return self.certificates_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        """Return the path of the SuperLink's private key."""
        return self.certificates_dir / "server.key"

    @property
    def keys_dir(self) -> Path:
        """Return the folder of the SuperNodes' authentication keys."""
        return self.root / "keys"

    def node_private_key(self, node: int) -> Path:
        """Return the path of SuperNode ``node``'s private key."""
        return self.keys_dir / f"supernode-{node}"

    def node_public_key(self, node: int) -> Path:
        """Return the path of SuperNode ``node``'s public key (OpenSSH)."""
        return self.keys_dir / f"supernode-{node}.pub"

    @property
    def data_dir(self) -> Path:
        """Return the folder of the SuperNodes' data files."""
        return self.root / "data"

    def node_data(self, node: int) -> Path:
        """Return the path of SuperNode ``node``'s data file (.npz)."""
        return self.data_dir / f"node-{node}.npz"

    @property
    def flwr_home(self) -> Path:
        """Return the FLWR_HOME of the ``flwr`` CLI on the coordinator."""
        return self.root / "flwr-home"

    @property
    def flower_config(self) -> Path:
        """Return the path of the Flower connection config (``flwr_home/config.toml``)."""
        return self.flwr_home / "config.toml"

    def node_flwr_home(self, node: int) -> Path:
        """FLWR_HOME of SuperNode K when it runs on this machine (a device has its own)."""
        return self.root / "supernodes" / f"supernode-{node}"

    @property
    def superlink_database(self) -> Path:
        """Return the path of the SuperLink's state database."""
        return self.root / "superlink" / "state.db"

    @property
    def logs_dir(self) -> Path:
        """Return the folder of the processes' log files."""
        return self.root / "logs"


@dataclass(frozen=True)
class DeploymentPlan:
    """Where the SuperLink listens and what each SuperNode is called and serves on.

    Parameters
    ----------
    num_nodes : how many SuperNodes (one key pair, one data file each).
    hosts : the names/addresses the SuperLink is reached by; the first is the one dialled.
    superlink_port : the SuperLink's one HTTPS port (Fleet, Control and Runtime APIs).
    supernode_ports : one runtime-API port per SuperNode (distinct when they share a host).
    app_dir : the Flower App (the sandflower source folder) ``flwr run`` submits.
    """

    num_nodes: int
    hosts: tuple[str, ...] = certs.DEFAULT_HOSTS
    superlink_port: int = DEFAULT_SUPERLINK_PORT
    supernode_ports: tuple[int, ...] = ()
    app_dir: Path = Path(".")

    def __post_init__(self) -> None:
        """Check the node count, hosts and ports; raise DeploymentError naming the bad one."""
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise DeploymentError(f"nodes: expected an integer >= 1, given {self.num_nodes!r}")
        if not self.hosts:
            raise DeploymentError("hosts: expected at least one host name or IP, given none")
        certs.subject_alternative_names(self.hosts)  # raises CertificateError on a bad host
        ports = self.supernode_ports or tuple(
            DEFAULT_SUPERNODE_BASE_PORT + node for node in range(self.num_nodes)
        )
        if len(ports) != self.num_nodes:
            raise DeploymentError(
                f"supernode_ports: expected {self.num_nodes} ports, given {len(ports)}"
            )
        for port in (self.superlink_port, *ports):
            if not 1 <= int(port) <= 65535:
                raise DeploymentError(f"port {port}: expected 1..65535")
        if len(set(ports)) != len(ports):
            raise DeploymentError(f"supernode_ports: expected distinct ports, given {ports}")
        object.__setattr__(self, "supernode_ports", tuple(int(port) for port in ports))

    @property
    def superlink_address(self) -> str:
        """``host:port`` the SuperNodes and ``flwr`` dial (brackets around an IPv6 host)."""
        return format_address(self.hosts[0], self.superlink_port)

    @property
    def certificate_hosts(self) -> tuple[str, ...]:
        """The server certificate's SANs: the given hosts plus this machine's loopback names.

        The SuperLink's own ``flower-superexec`` dials the SuperLink over TLS at 127.0.0.1
        when it listens on 0.0.0.0 (flwr.supercore.address.resolve_bind_address), so the
        loopback names must be in the certificate even for a remote deployment.
        """
        return tuple(dict.fromkeys((*self.hosts, *certs.DEFAULT_HOSTS)))

    @property
    def superlink_bind_host(self) -> str:
        """127.0.0.1 when every host is this machine, else every interface."""
        return "127.0.0.1" if all(_is_loopback(host) for host in self.hosts) else "0.0.0.0"


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


# -- command lines --------------------------------------------------------------------------
def superlink_argv(layout: DeploymentLayout, plan: DeploymentPlan) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and a state database."""
    return [
        "flower-superlink",
        "--ssl-ca-certfile",
        str(layout.ca_certificate),
        "--ssl-certfile",
        str(layout.server_certificate),
        "--ssl-keyfile",
        str(layout.server_key),
        "--enable-supernode-auth",
        "--host",
        plan.superlink_bind_host,
        "--port",
        str(plan.superlink_port),
        "--database",
        str(layout.superlink_database),
    ]


def supernode_argv(
    layout: DeploymentLayout,
    plan: DeploymentPlan,
    node: int,
    extra_node_config: dict[str, str] | None = None,
) -> list[str]:
    """``flower-supernode`` K: trusts the CA, signs in with its key, reads its data file."""
    node_config = {"data-path": str(layout.node_data(node)), **(extra_node_config or {})}
    return [
        "flower-supernode",
        "--superlink",
        plan.superlink_address,
        "--root-certificates",
        str(layout.ca_certificate),
        "--auth-supernode-private-key",
        str(layout.node_private_key(node)),
        "--port",
        str(plan.supernode_ports[node]),
        "--node-config",
        format_node_config(node_config),
    ]


def register_argv(layout: DeploymentLayout, node: int) -> list[str]:
    """``flwr supernode register`` for node K's public key (needs FLWR_HOME set)."""
    return [
        "flwr",
        "supernode",
        "register",
        str(layout.node_public_key(node)),
        CONNECTION_NAME,
        "--name",
        f"supernode-{node}",
    ]


def format_node_config(values: dict[str, str]) -> str:
    """``key="value" ...`` as ``--node-config`` parses it (TOML strings)."""
    return " ".join(f"{key}={_toml_string(str(value))}" for key, value in values.items())


# The device runtime's virtualenv, relative to the folder the device commands run in.
DEVICE_VENV = ".venv"


def render_commands(layout: DeploymentLayout, plan: DeploymentPlan) -> str:
    """Return the text of COMMANDS.txt: every command line, in order, ready to paste."""
    env_line = " ".join(
        f"{key}={shlex.quote(value)}"
        for key, value in {**FLOWER_ENV, "FLWR_HOME": str(layout.flwr_home)}.items()
    )
    device_env_line = " ".join(f"{key}={shlex.quote(value)}" for key, value in FLOWER_ENV.items())
    lines = [
        "# Sandflower deployment: run these in order. Paths are this folder's; on a device,",
        "# use the paths you copied the files to. Every shell first needs:",
        f"export {env_line}",
        "",
        "# 1. On the coordinator host: the SuperLink (TLS, only registered SuperNodes may join).",
        _shell(superlink_argv(layout, plan)),
        "",
        "# 2. On the operator's machine (or the coordinator): register each SuperNode's key.",
        *(_shell(register_argv(layout, node)) for node in range(plan.num_nodes)),
        "",
        "# 3. On each device K: copy certificates/ca.crt, keys/supernode-K and data/node-K.npz",
        "#    there, install the device runtime once (no sandflower: `flwr run` sends the",
        "#    ClientApp and the kernel), activate it and start the SuperNode (it starts",
        "#    flower-superexec by name, so the venv's bin must be on PATH).",
        device.install_command(DEVICE_VENV),
        f'. {DEVICE_VENV}/bin/activate && export {device_env_line} FLWR_HOME="$PWD/flwr-home"',
        *(
            f"# device {node}\n" + _shell(supernode_argv(layout, plan, node))
            for node in range(plan.num_nodes)
        ),
        "",
        "# 4. On the operator's machine: submit the app (the sandflower source folder) and",
        "#    follow it. `flwr ls sandflower` lists runs, `flwr log RUN_ID sandflower` shows logs.",
        "#    The ServerApp writes the run folder to out-dir on the coordinator host.",
        _shell(
            [
                "flwr",
                "run",
                str(plan.app_dir),
                CONNECTION_NAME,
                "--stream",
                "--run-config",
                f"out-dir={_toml_string(str(layout.root / 'runs' / 'run-1'))}",
            ]
        ),
        "",
    ]
    return "\n".join(lines)


def flower_config_toml(layout: DeploymentLayout, plan: DeploymentPlan) -> str:
    """$FLWR_HOME/config.toml: the connection ``sandflower``, made the default."""
    return tomli_w.dumps(
        {
            "superlink": {
                "default": CONNECTION_NAME,
                CONNECTION_NAME: {
                    "address": plan.superlink_address,
                    "root-certificates": str(layout.ca_certificate.resolve()),
                },
            }
        }
    )


# -- writing a deployment -------------------------------------------------------------------
def write_deployment(root: str | Path, plan: DeploymentPlan) -> DeploymentLayout:
    """Write everything ``plan`` needs into ``root`` (which must be absent or empty).

    Raises
    ------
    DeploymentError
        ``root`` is a file or a folder with something in it (keys are never overwritten).
    """
    root = Path(root).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DeploymentError(
            f"deployment folder {root}: expected a new or empty folder, it already holds files "
            "(keys and certificates are never overwritten)"
        )
    layout = DeploymentLayout(root)
    for folder in (
        layout.certificates_dir,
        layout.keys_dir,
        layout.data_dir,
        layout.flwr_home,
        layout.superlink_database.parent,
        layout.logs_dir,
    ):
        folder.mkdir(parents=True, exist_ok=True)

    ca = certs.generate_ca()
    server = certs.generate_server_certificate(ca, plan.certificate_hosts)
    certs.write_private_file(layout.ca_key, ca.private_key_pem())
    certs.write_public_file(layout.ca_certificate, ca.certificate_pem())
    certs.write_private_file(layout.server_key, server.private_key_pem())
    certs.write_public_file(layout.server_certificate, server.certificate_pem())
    for node in range(plan.num_nodes):
        key = certs.generate_node_key()
        certs.write_private_file(layout.node_private_key(node), certs.node_private_key_openssh(key))
        certs.write_public_file(
            layout.node_public_key(node), certs.node_public_key_openssh(key, f"supernode-{node}")
        )
    layout.flower_config.write_text(flower_config_toml(layout, plan), encoding="utf-8")
    layout.commands.write_text(render_commands(layout, plan), encoding="utf-8")
    return layout


def _shell(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def _toml_string(value: str) -> str:
    # tomli_w writes a valid TOML basic string for any str.
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
