"""Consul with ACLs (default deny), over HTTPS with client certificates, and on a unix socket, for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, ConsulAgent, run_cli, wait_until

Run = Callable[..., Any]
ROOT = "root-8d1e0f2a"
#: The minimal policy registrar needs (also in docs/guides/consul-acl-tls.md).
POLICY = 'service_prefix "" { policy = "write" }'


def acl_agent(agent: ConsulAgent) -> Consul:
    acl = f'acl {{ enabled = true, default_policy = "deny", tokens {{ master = "{ROOT}" }} }}'
    agent.configure(acl, Consul(agent.url, token=ROOT))
    agent.start()
    # An agent that has just elected itself may still answer its ACL endpoints with a 500 (its ACL system
    # not set up yet): create the policy once they answer.
    wait_until(lambda: agent.client.session.get(agent.url + "/v1/acl/policies", timeout=5).ok, "Consul's ACLs")
    agent.client.put("/v1/acl/policy", {"Name": "registrar", "Rules": POLICY})
    return agent.client


def test_acl_token_with_minimal_policy_registers(host: str, containers: Run, own_consul: ConsulAgent) -> None:
    """With a token holding only service:write, sync registers; the token never shows in the output."""
    root = acl_agent(own_consul)
    token = root.put("/v1/acl/token", {"Policies": [{"Name": "registrar"}]})["SecretID"]
    c = containers()
    result = run_cli("sync", "--hostname", host, own_consul.uri, env={"CONSUL_HTTP_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert f"{host}:{c.name}:80" in root.services(host)
    assert token not in result.stdout + result.stderr


def test_acl_without_token_says_why(host: str, containers: Run, own_consul: ConsulAgent) -> None:
    """Without a token, sync fails and says that Consul's ACLs denied the registration."""
    root = acl_agent(own_consul)
    containers()
    result = run_cli("sync", "--hostname", host, own_consul.uri, env={"CONSUL_HTTP_TOKEN": ""})
    assert result.returncode == 1
    assert "permission denied by Consul's ACLs" in result.stderr
    assert "CONSUL_HTTP_TOKEN" in result.stderr
    assert root.services(host) == {}


def tls_agent(agent: ConsulAgent, also_at: str = "") -> dict[str, str]:
    """An HTTPS agent on 127.0.0.1:18501 (client certificates verified), and at ``also_at`` too when given."""
    files = agent.tls()
    hcl = (
        f'ca_file = "{files["ca"]}"\ncert_file = "{files["server_cert"]}"\nkey_file = "{files["server_key"]}"\n'
        "verify_incoming = true\nverify_outgoing = true"
    )
    if also_at:
        hcl += f'\naddresses {{ https = "127.0.0.1 {also_at}" }}'
    client = Consul("https://127.0.0.1:18501", verify=files["ca"], cert=(files["client_cert"], files["client_key"]))
    agent.configure(hcl, client, http=-1, https=18501)
    agent.start()
    return files


def test_consul_tls_with_client_certificate(host: str, containers: Run, own_consul: ConsulAgent) -> None:
    """consul-tls:// with CONSUL_CACERT and a client certificate registers over HTTPS."""
    files = tls_agent(own_consul)
    c = containers()
    env = {
        "CONSUL_CACERT": files["ca"],
        "CONSUL_CLIENT_CERT": files["client_cert"],
        "CONSUL_CLIENT_KEY": files["client_key"],
    }
    result = run_cli("sync", "--hostname", host, "consul-tls://127.0.0.1:18501", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{host}:{c.name}:80" in own_consul.client.services(host)


def test_consul_tls_without_client_certificate_fails_clearly(host: str, own_consul: ConsulAgent) -> None:
    """Without the client certificate the agent refuses the connection: one line, exit 5."""
    files = tls_agent(own_consul)
    result = run_cli(
        "sync", "--hostname", host, "--retry-attempts", "0", "consul-tls://127.0.0.1:18501",
        env={"CONSUL_CACERT": files["ca"]},
    )  # fmt: skip
    assert result.returncode == 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "https://127.0.0.1:18501" in lines[0]


#: Where the TLS tests below also serve HTTPS: a loopback address its certificate (server.dc1.consul, localhost,
#: 127.0.0.1) does not name.
ELSEWHERE = "127.0.0.2:18501"


def tls_env(files: dict[str, str], **env: str) -> dict[str, str]:
    """The client certificate (the agent verifies incoming connections), the rest as given, nothing else of
    CONSUL_*'s TLS variables from the outer environment."""
    unset = ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_TLS_SERVER_NAME")
    return {
        **dict.fromkeys(unset, ""),
        "CONSUL_HTTP_SSL_VERIFY": "true",
        "CONSUL_CLIENT_CERT": files["client_cert"],
        "CONSUL_CLIENT_KEY": files["client_key"],
        **env,
    }


def test_tls_address_not_in_the_certificate_fails_in_one_line(
    host: str, containers: Run, own_consul: ConsulAgent
) -> None:
    """An HTTPS agent dialled at an address its certificate does not name, with only its CA given: sync exits
    non-zero with one line that names the address and CONSUL_TLS_SERVER_NAME, and registers nothing."""
    files = tls_agent(own_consul, also_at=ELSEWHERE.split(":")[0])
    containers()
    env = tls_env(files, CONSUL_CACERT=files["ca"])
    result = run_cli("sync", "--hostname", host, "--retry-attempts", "0", f"consul-tls://{ELSEWHERE}", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "does not name 127.0.0.2" in lines[0] and "CONSUL_TLS_SERVER_NAME" in lines[0], lines[0]
    assert own_consul.client.services(host) == {}


def test_tls_server_name_registers_at_an_address_not_in_the_certificate(
    host: str, containers: Run, own_consul: ConsulAgent
) -> None:
    """The same agent and address with CONSUL_TLS_SERVER_NAME=server.dc1.consul: sync registers."""
    files = tls_agent(own_consul, also_at=ELSEWHERE.split(":")[0])
    c = containers()
    env = tls_env(files, CONSUL_CACERT=files["ca"], CONSUL_TLS_SERVER_NAME="server.dc1.consul")
    result = run_cli("sync", "--hostname", host, "--retry-attempts", "0", f"consul-tls://{ELSEWHERE}", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{host}:{c.name}:80" in own_consul.client.services(host)


def test_tls_without_verification_registers_with_no_ca(host: str, containers: Run, own_consul: ConsulAgent) -> None:
    """CONSUL_HTTP_SSL_VERIFY=false, no CA, the agent at CONSUL_HTTP_ADDR with CONSUL_HTTP_SSL=true: sync registers."""
    files = tls_agent(own_consul, also_at=ELSEWHERE.split(":")[0])
    c = containers()
    env = tls_env(files, CONSUL_HTTP_ADDR=ELSEWHERE, CONSUL_HTTP_SSL="true", CONSUL_HTTP_SSL_VERIFY="false")
    result = run_cli("sync", "--hostname", host, "--retry-attempts", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{host}:{c.name}:80" in own_consul.client.services(host)


def test_consul_unix_socket(host: str, containers: Run, own_consul: ConsulAgent) -> None:
    """consul-unix:// registers through an agent that serves its HTTP API on a unix socket only."""
    socket_path = str(own_consul.workdir / "consul.sock")
    own_consul.configure(f'addresses {{ http = "unix://{socket_path}" }}', Consul(unix_socket=socket_path))
    own_consul.start()
    c = containers()
    result = run_cli("sync", "--hostname", host, f"consul-unix://{socket_path}")
    assert result.returncode == 0, result.stderr
    assert f"{host}:{c.name}:80" in own_consul.client.services(host)
