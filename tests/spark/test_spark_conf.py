"""The Spark settings: one table for the in-process driver and the Spark Connect server."""

from __future__ import annotations

import os

import pytest

from jobs.core.config import load_config
from jobs.core.spark import CONNECT_SERVER_CLASS, SESSION_KEYS, connect_server_command, spark_conf


def test_the_connect_server_runs_with_the_drivers_settings():
    cfg = load_config(
        overrides=["spark.driver_memory=3g", "spark.extra.spark.sql.ansi.enabled=false"]
    ).spark
    cmd = connect_server_command(cfg, "127.0.0.1", 15123)
    assert os.path.basename(cmd[0]) == "spark-submit" and os.access(cmd[0], os.X_OK)
    assert cmd[cmd.index("--class") + 1] == CONNECT_SERVER_CLASS
    assert cmd[-1] == "spark-internal"
    confs = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--conf")
    assert confs == {
        **spark_conf(cfg),
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": "15123",
    }
    assert confs["spark.driver.memory"] == "3g"
    assert confs["spark.sql.ansi.enabled"] == "false"  # spark.extra is passed through


def test_a_connect_client_sets_only_session_settings():
    conf = spark_conf(load_config().spark)
    assert set(SESSION_KEYS) <= set(conf)
    # what only the process that owns the driver can set
    assert not {"spark.master", "spark.driver.memory", "spark.ui.enabled"} & set(SESSION_KEYS)
    assert all(k.startswith("spark.sql.") for k in SESSION_KEYS)


def test_a_process_with_a_driver_refuses_to_become_a_connect_client(spark):
    from jobs.core.spark import get_spark

    # PySpark would switch the whole process to Connect mode: refused before it does
    with pytest.raises(RuntimeError, match="already runs a Spark driver"):
        get_spark(load_config().spark, remote="sc://127.0.0.1:1")
    from pyspark.sql.utils import is_remote

    assert not is_remote() and spark.range(3).count() == 3  # the driver is still usable
