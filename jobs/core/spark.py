"""The Spark session, built from the typed config (never from ambient defaults)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jobs.core.config import SparkConfig
from jobs.core.errors import OrchestrationError
from jobs.core.io import atomic_dir
from jobs.core.lake import is_local, local_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# settings a Spark Connect client may set on its session (runtime SQL settings); the others
# (master, memory, JVM options, the UI) belong to the server that owns the driver
SESSION_KEYS = (
    "spark.sql.shuffle.partitions",
    "spark.sql.session.timeZone",
    "spark.sql.sources.partitionOverwriteMode",
    "spark.sql.execution.arrow.pyspark.enabled",
    "spark.sql.adaptive.enabled",
)
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_conf(cfg: SparkConfig) -> dict[str, str]:
    """Every Spark setting the project's driver runs with, from the typed config."""
    conf = {
        "spark.master": cfg.master,
        "spark.app.name": cfg.app_name,
        "spark.driver.memory": cfg.driver_memory,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
        # MLlib ALS's lineage grows with every iteration; the default 1 MB thread stack
        # overflows at ~15 iterations without a checkpoint directory
        "spark.driver.extraJavaOptions": "-Xss16m",
        "spark.executor.extraJavaOptions": "-Xss16m",
    }
    conf.update({k: str(v) for k, v in cfg.extra.items()})
    return conf


def spark_environment() -> None:
    import sys

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Python workers (UDFs, xgboost.spark) must run this interpreter, not the first python3
    # on PATH, or they miss the project's packages
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def get_spark(cfg: SparkConfig, remote: str = "") -> SparkSession:
    """Return the process's session, creating it from `cfg` on first use.

    `spark.master`, memory and shuffle partitions come from the config, so the same job runs on
    `local[2]` here and on `spark://…` or YARN on a cluster. Driver memory only takes effect
    before the JVM starts, which is why the session is created once per process.

    With `remote` (`sc://host:port`) the session is a Spark Connect client of a server that
    already runs the driver (`homepage spark-connect`): no JVM starts in this process, and the
    server's JIT is warm from earlier work. Only the session settings (`SESSION_KEYS`) are
    sent; the server was started with the rest.
    """
    spark_environment()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql.utils import is_remote

    # PySpark switches a whole process to Spark Connect on its first remote session (its
    # functions then build Connect plans), so a process is a client or owns a driver, not both
    if remote and SparkContext._active_spark_context is not None:
        raise OrchestrationError(
            f"a Spark Connect session ({remote}) was asked for in a process that already runs "
            "a Spark driver; run the step in its own process (as the DAG's tasks do)"
        )
    if not remote and is_remote():
        raise OrchestrationError(
            "a local Spark driver was asked for in a process that is a Spark Connect client; "
            "run the step in its own process (as the DAG's tasks do)"
        )
    conf = spark_conf(cfg)
    if remote:
        builder = SparkSession.builder.remote(remote)
        for key in SESSION_KEYS:
            builder = builder.config(key, conf[key])
        return builder.getOrCreate()
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def connect_server_command(cfg: SparkConfig, host: str, port: int) -> list[str]:
    """The command that runs a Spark Connect server in the foreground with the project's
    settings (`spark_conf`), listening on `host:port` (`homepage spark-connect`)."""
    from pyspark.find_spark_home import _find_spark_home

    cmd = [
        os.path.join(_find_spark_home(), "bin", "spark-submit"),
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        f"{cfg.app_name} Spark Connect server",
    ]
    conf = spark_conf(cfg)
    conf["spark.connect.grpc.binding.address"] = host
    conf["spark.connect.grpc.binding.port"] = str(port)
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, "spark-internal"]


def write_spark_parquet(df: Any, uri: str) -> None:
    """Overwrite the Parquet directory `uri` with `df`: whole or not at all on local disk
    (written aside, then swapped in); Spark's own overwrite (and `_SUCCESS`) elsewhere."""
    if not is_local(uri):
        df.write.mode("overwrite").parquet(uri)
        return
    with atomic_dir(local_path(uri)) as staging:
        df.write.mode("overwrite").parquet(staging)
