"""docker/compose.yaml and conf/cluster.yaml agree: services, ports, paths (pure YAML, fast)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from jobs.core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
CLUSTER = ROOT / "conf" / "cluster.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

REQUIRED = {
    "postgres",
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "spark-master",
    "spark-worker-1",
    "spark-worker-2",
    "lookup",
}
PIPELINE = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "lookup"}
WORKERS = ("spark-worker-1", "spark-worker-2")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _cmd(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _container_ports(svc: dict) -> set[int]:
    """Container-side ports the service publishes ("host:container" or a bare port)."""
    out = set()
    for p in svc.get("ports", []):
        out.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return out


def _flag(cmd: list[str], name: str) -> str | None:
    for i, c in enumerate(cmd):
        if c == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if c.startswith(name + "="):
            return c.split("=", 1)[1]
    return None


def test_cluster_config_loads() -> None:
    cfg = load_config(CLUSTER)
    assert cfg.mf.backend == "spark"
    assert cfg.engagement.backend == "xgboost_spark"
    assert cfg.spark.master.startswith("spark://")
    assert cfg.mlflow.tracking_uri.startswith("http://")
    assert cfg.serve.host == "0.0.0.0"


def test_compose_has_required_services(services: dict) -> None:
    assert set(services) >= REQUIRED, sorted(REQUIRED - set(services))


def test_spark_master_matches(services: dict) -> None:
    cfg = load_config(CLUSTER)
    url = urlsplit(cfg.spark.master)
    assert url.hostname in services
    master = services[url.hostname]
    cmd = _cmd(master)
    assert "org.apache.spark.deploy.master.Master" in cmd
    assert int(_flag(cmd, "--port") or 7077) == url.port
    assert url.port in _container_ports(master)
    for name in WORKERS:
        worker = _cmd(services[name])
        assert "org.apache.spark.deploy.worker.Worker" in worker
        assert cfg.spark.master in worker, f"{name} does not join {cfg.spark.master}"


def test_mlflow_matches(services: dict) -> None:
    cfg = load_config(CLUSTER)
    url = urlsplit(cfg.mlflow.tracking_uri)
    svc = services[url.hostname]
    cmd = _cmd(svc)
    assert "server" in cmd
    assert int(_flag(cmd, "--port")) == url.port
    assert url.port in _container_ports(svc)
    backend = _flag(cmd, "--backend-store-uri")
    assert backend and urlsplit(backend).hostname == "postgres"
    for name in PIPELINE:
        env = services[name].get("environment", {})
        assert env.get("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri) == cfg.mlflow.tracking_uri


def test_lookup_server_matches(services: dict) -> None:
    cfg = load_config(CLUSTER)
    cmd = _cmd(services["lookup"])
    assert cmd[0] == "serve"
    assert int(_flag(cmd, "--port")) == cfg.serve.port
    assert _flag(cmd, "--host") == cfg.serve.host
    assert cfg.serve.port in _container_ports(services["lookup"])


def test_s3a_endpoint_matches_minio(services: dict) -> None:
    cfg = load_config(CLUSTER)
    extra = cfg.spark.extra
    assert extra["spark.hadoop.fs.s3a.path.style.access"] == "true"
    url = urlsplit(extra["spark.hadoop.fs.s3a.endpoint"])
    assert url.hostname == "minio"
    minio = services["minio"]
    assert f":{url.port}" == _flag(_cmd(minio), "--address")
    assert url.port in _container_ports(minio)
    # every bucket the stack writes to is created by minio-init
    created = set(
        re.findall(
            r"mc mb (?:--ignore-existing )?local/([\w.-]+)", str(_cmd(services["minio-init"]))
        )
    )
    lake = services["airflow-scheduler"]["environment"]["HOMEPAGE_LAKE"]
    assert urlsplit(lake).scheme == "s3a"
    assert urlsplit(lake).hostname in created
    artifacts = _flag(_cmd(services["mlflow"]), "--artifacts-destination")
    assert urlsplit(artifacts).hostname in created
    for name in (*PIPELINE, *WORKERS, "mlflow"):
        env = services[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]


def test_hosts_in_cluster_config_exist(services: dict, cluster: dict) -> None:
    text = yaml.safe_dump(cluster)
    hosts = {h for h in re.findall(r"[a-z0-9]+://([\w.-]+)", text)}
    assert hosts, "no URLs in conf/cluster.yaml"
    assert hosts <= set(services), sorted(hosts - set(services))


def test_homepage_conf_is_in_the_image(services: dict) -> None:
    dockerfile = DOCKERFILE.read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", dockerfile, re.M)[-1]
    assert re.search(r"^COPY\s+conf\s+conf/?\s*$", dockerfile, re.M)
    expected = f"{workdir}/conf/{CLUSTER.name}"
    for name in (*PIPELINE, *WORKERS):
        assert services[name]["environment"]["HOMEPAGE_CONF"] == expected, name


def test_airflow_services(services: dict) -> None:
    commands = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
    }
    for name, sub in commands.items():
        svc = services[name]
        assert svc["entrypoint"] == ["airflow"] and _cmd(svc)[0] == sub
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
        assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert _cmd(services["airflow-init"]) == ["db", "migrate"]
    api = urlsplit(
        services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    )
    assert api.hostname == "airflow-apiserver"
    assert api.port == int(_flag(_cmd(services["airflow-apiserver"]), "--port"))


def test_postgres_databases_exist(services: dict) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    init = compose["configs"]["postgres-init"]["content"]
    created = set(re.findall(r"CREATE DATABASE (\w+)", init))
    airflow_db = urlsplit(
        services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    mlflow_db = urlsplit(_flag(_cmd(services["mlflow"]), "--backend-store-uri"))
    for url in (airflow_db, mlflow_db):
        assert url.path.lstrip("/") in created
        assert re.search(rf"CREATE USER {url.username} WITH PASSWORD '{url.password}'", init)
