"""The Spark session, built from the typed config (never from ambient defaults)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jobs.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(cfg: SparkConfig) -> SparkSession:
    """Return the process's session, creating it from `cfg` on first use.

    `spark.master`, memory and shuffle partitions come from the config, so the same job runs on
    `local[2]` here and on `spark://…` or YARN on a cluster. Driver memory only takes effect
    before the JVM starts, which is why the session is created once per process.
    """
    import sys

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Python workers (UDFs, xgboost.spark) must run this interpreter, not the first python3
    # on PATH, or they miss the project's packages
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        # MLlib ALS's lineage grows with every iteration; the default 1 MB thread stack
        # overflows at ~15 iterations without a checkpoint directory
        .config("spark.driver.extraJavaOptions", "-Xss16m")
        .config("spark.executor.extraJavaOptions", "-Xss16m")
    )
    for key, value in cfg.extra.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
