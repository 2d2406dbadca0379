"""docker/: the compose file, its configs and docs/deployment.md describe the same stack."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from app.config import Settings
from app.runtime import render_for
from app.server import ROLE_PREFIXES, role_of_path

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOC = ROOT / "docs" / "deployment.md"
APP_PORT = "8000"  # docker/Dockerfile: CLICKPULSE_PORT=8000


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    assert isinstance(data, dict) and isinstance(data["services"], dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the first markdown table whose header row starts with `first_header`."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            header, rows = cells, []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(
                    dict(
                        zip(
                            header,
                            (c.strip() for c in row.strip().strip("|").split("|")),
                            strict=True,
                        )
                    )
                )
            return rows
    raise AssertionError(f"no table starting with {first_header!r} in {DOC}")


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.fixture(scope="module")
def doc_services() -> dict[str, dict[str, str]]:
    rows = _table(DOC.read_text(), "service")
    return {_ticked(r["service"])[0]: r for r in rows}


@pytest.fixture(scope="module")
def app_env(compose) -> dict[str, str]:
    return compose["x-app-env"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_the_documented_services_are_the_composed_ones(services, doc_services):
    assert set(doc_services) == set(services)


def test_ports_match_the_table_both_ways(services, doc_services):
    for name, service in services.items():
        composed = [str(p) for p in service.get("ports", [])] + [
            str(p) for p in service.get("expose", [])
        ]
        assert len(composed) == len(set(composed)), name
        assert set(_ticked(doc_services[name]["ports"])) == set(composed), name


def test_environment_matches_the_table_both_ways(services, doc_services, app_env):
    for name, service in services.items():
        cell = doc_services[name]["environment"]
        documented = set(_ticked(cell))
        if "app env" in cell:
            documented |= set(app_env)
        assert documented == set(_env(service)), name


def test_images_match_the_table(services, doc_services):
    for name, service in services.items():
        documented = doc_services[name]["image"]
        if "build" in service:
            assert service["build"]["dockerfile"] == "docker/Dockerfile"
            assert (ROOT / service["build"]["dockerfile"]).is_file()
            assert documented.startswith("clickpulse"), name
        else:
            assert documented == service["image"], name


def test_the_shared_app_environment_table_has_the_composed_values(app_env):
    rows = _table(DOC.read_text(), "variable")
    documented = {_ticked(r["variable"])[0]: _ticked(r["value"])[0] for r in rows}
    assert documented == {k: str(v) for k, v in app_env.items()}


def test_every_mounted_config_file_exists(services):
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                mounts += 1
                assert (DOCKER / source).is_file(), (name, source)
    assert mounts >= 15


def _clickhouse_nodes(services) -> dict[str, dict]:
    return {
        n: s
        for n, s in services.items()
        if s.get("image", "").startswith("clickhouse/clickhouse-server")
    }


def _mounted(service: dict, target: str) -> Path:
    for volume in service["volumes"]:
        source, dest = volume.split(":")[:2]
        if dest == target:
            return DOCKER / source
    raise AssertionError(f"nothing mounted at {target}")


def test_each_node_macros_match_remote_servers(services, app_env):
    cluster_xml = ET.parse(DOCKER / "clickhouse" / "cluster.xml").getroot()
    [cluster] = list(cluster_xml.find("remote_servers"))
    assert cluster.tag == app_env["CLICKPULSE_CLICKHOUSE_CLUSTER"]
    shards = [
        [r.findtext("host") for r in shard.findall("replica")] for shard in cluster.findall("shard")
    ]
    assert len(shards) == 2 and all(len(hosts) == 2 for hosts in shards)
    for shard in cluster.findall("shard"):
        assert shard.findtext("internal_replication") == "true"
    nodes = _clickhouse_nodes(services)
    assert {h for hosts in shards for h in hosts} == set(nodes)
    replicas = set()
    for name, node in nodes.items():
        assert node["hostname"] == name
        macros = ET.parse(_mounted(node, "/etc/clickhouse-server/config.d/macros.xml")).getroot()
        macros = macros.find("macros")
        shard_no, replica = int(macros.findtext("shard")), macros.findtext("replica")
        assert macros.findtext("cluster") == cluster.tag
        assert replica == name and name in shards[shard_no - 1], name
        replicas.add(replica)
        assert _mounted(node, "/etc/clickhouse-server/config.d/cluster.xml").name == "cluster.xml"
    # {replica} unique across the cluster: the migration ledger is replicated to every node.
    assert len(replicas) == len(nodes)


def test_keeper_ensemble_matches_its_config_and_the_servers(services):
    keeper_xml = ET.parse(DOCKER / "clickhouse" / "keeper.xml").getroot()
    raft = {
        s.findtext("id"): s.findtext("hostname")
        for s in keeper_xml.find("keeper_server/raft_configuration")
    }
    assert keeper_xml.find("keeper_server/server_id").get("from_env") == "KEEPER_SERVER_ID"
    keepers = {n: s for n, s in services.items() if "clickhouse-keeper" in s.get("image", "")}
    assert len(keepers) == 3
    assert {_env(s)["KEEPER_SERVER_ID"]: s["hostname"] for s in keepers.values()} == raft
    for service in keepers.values():
        assert _mounted(service, "/etc/clickhouse-keeper/keeper_config.xml").name == "keeper.xml"
    cluster_xml = ET.parse(DOCKER / "clickhouse" / "cluster.xml").getroot()
    assert {n.findtext("host") for n in cluster_xml.find("zookeeper")} == set(keepers)


def _nginx(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(upstream name → servers, location prefix → upstream) of an nginx config."""
    text = path.read_text()
    upstreams = {
        name: re.findall(r"server\s+([\w.-]+:\d+)", body)
        for name, body in re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", text)
    }
    locations = dict(
        re.findall(r"location\s+(\S+)\s*\{[^}]*?proxy_pass\s+http://(\w+);", text, re.S)
    )
    return upstreams, locations


def test_load_balancer_routes_each_prefix_to_a_node_of_its_role(services):
    lb = services["lb"]
    upstreams, locations = _nginx(_mounted(lb, "/etc/nginx/nginx.conf"))
    prefixes = {p for ps in ROLE_PREFIXES.values() for p in ps}
    assert prefixes <= set(locations) and "/" in locations
    for prefix, upstream in locations.items():
        role = role_of_path(prefix) or "api"
        for server in upstreams[upstream]:
            host, port = server.split(":")
            env = _env(services[host])
            assert role in env["CLICKPULSE_ROLES"].split(","), (prefix, host)
            assert port in {APP_PORT, env.get("CLICKPULSE_PUSH_PORT")}, (prefix, server)
            assert port in services[host]["expose"], (prefix, server)
            assert host in lb["depends_on"]


def test_clickhouse_balancer_spreads_over_every_node(services, app_env):
    upstreams, locations = _nginx(_mounted(services["ch-lb"], "/etc/nginx/nginx.conf"))
    assert locations == {"/": "clickhouse"}
    nodes = _clickhouse_nodes(services)
    assert sorted(upstreams["clickhouse"]) == sorted(f"{n}:8123" for n in nodes)
    assert "@ch-lb:8123" in app_env["CLICKPULSE_CLICKHOUSE_URL"]


def test_the_topic_has_a_partition_for_every_consumer(services, app_env):
    command = services["kafka-init"]["command"]
    args = {flag: value for flag, value in zip(command, command[1:], strict=False)}
    assert args["--topic"] == app_env["CLICKPULSE_KAFKA_TOPIC"]
    consumers = len(_clickhouse_nodes(services)) * int(app_env["CLICKPULSE_KAFKA_NUM_CONSUMERS"])
    assert int(args["--partitions"]) >= consumers


@pytest.mark.parametrize("role", ["ingest", "api", "push"])
def test_each_app_service_gets_valid_settings_for_its_role(services, monkeypatch, role):
    for name in list(os.environ):
        if name.startswith("CLICKPULSE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    for name, value in _env(services[role]).items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.roles == (role,)
    text = "\n".join(m.text for m in render_for(settings, settings.clickhouse_database))
    # The stack's variant: cluster + Kafka.
    assert "ENGINE = Kafka" in text and "ON CLUSTER clickpulse" in text
    assert "ENGINE = Distributed('clickpulse', 'clickpulse', 'events_local'" in text
