"""The sections of the typed configuration (`jobs.core.config.Config`), one frozen dataclass
per area (spark, ingest, features, mf, scoring, training, engagement, gate, page, export,
refresh, serve, mlflow, eval), each validated in `__post_init__`."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.core.errors import ConfigError

# models.ranking.policy.MAX_PLAN_CANDIDATES (core imports nothing above it; a test keeps them equal)
PLAN_CANDIDATES_LIMIT = 63


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    app_name: str = "homepage"
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shuffle_partitions < 1:
            raise ConfigError(
                f"spark.shuffle_partitions must be >= 1, got {self.shuffle_partitions}"
            )


@dataclass(frozen=True)
class IngestConfig:
    max_bad_share: float = 0.05  # a day with more rejected rows than this fails the run
    max_future_seconds: int = 300  # events later than now + this are rejected

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ConfigError(f"ingest.max_bad_share must be in [0, 1], got {self.max_bad_share}")


@dataclass(frozen=True)
class FeatureConfig:
    lookback_days: int = 365  # history used for counts (priors keep all history, decayed)
    half_life_days: float = 30.0  # time decay of transaction counts; 0 = no decay
    weight_click: float = 1.0
    weight_add_to_cart: float = 3.0
    weight_purchase: float = 5.0
    prior_strength: float = 10.0  # pseudo-impressions of the carousel-level Beta prior
    trending_days: int = 7
    prior_half_life_days: float = 0.0  # decay of the Beta priors' counts; 0 = none
    session_gap_minutes: float = 30.0
    intent_decay: float = 0.5  # eta of the purchase-intent attribution, in (0, 1)
    intent_epsilon: float = 1.0
    row_count_max_ratio: float = 3.0  # a table may grow or shrink this much from the previous day

    def __post_init__(self) -> None:
        if self.lookback_days < 1:
            raise ConfigError(f"features.lookback_days must be >= 1, got {self.lookback_days}")
        if self.half_life_days < 0:
            raise ConfigError(f"features.half_life_days must be >= 0, got {self.half_life_days}")
        if self.prior_strength <= 0:
            raise ConfigError(f"features.prior_strength must be > 0, got {self.prior_strength}")
        if self.session_gap_minutes <= 0:
            raise ConfigError(
                f"features.session_gap_minutes must be > 0, got {self.session_gap_minutes}"
            )
        if not 0 < self.intent_decay < 1:
            raise ConfigError(f"features.intent_decay must be in (0, 1), got {self.intent_decay}")
        if self.row_count_max_ratio < 1:
            raise ConfigError(
                f"features.row_count_max_ratio must be >= 1, got {self.row_count_max_ratio}"
            )


@dataclass(frozen=True)
class MFConfig:
    algorithm: str = "als"  # als | bpr
    factors: int = 32
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 10.0  # confidence scaling of implicit ALS: C = 1 + alpha * eta
    learning_rate: float = 0.05  # BPR only
    seed: int = 42
    backend: str = "implicit"  # implicit (one machine) | spark (Spark MLlib ALS, ALS only)
    # fold_in: serve the cutoff fit's item/category factors with users folded in as of ds (the
    # factor space the heads and w were trained on) | refit: a new fit on all data before ds
    serving: str = "fold_in"

    def __post_init__(self) -> None:
        if self.serving not in ("fold_in", "refit"):
            raise ConfigError(f"mf.serving must be 'fold_in' or 'refit', got {self.serving!r}")
        if self.algorithm not in ("als", "bpr"):
            raise ConfigError(f"mf.algorithm must be 'als' or 'bpr', got {self.algorithm!r}")
        if self.backend not in ("implicit", "spark"):
            raise ConfigError(f"mf.backend must be 'implicit' or 'spark', got {self.backend!r}")
        if self.backend == "spark" and self.algorithm != "als":
            raise ConfigError("mf.backend=spark supports mf.algorithm=als only")
        if self.factors < 1 or self.iterations < 1:
            raise ConfigError("mf.factors and mf.iterations must be >= 1")


@dataclass(frozen=True)
class ScoringConfig:
    w: float = 0.7  # phi = w * alpha + (1 - w) * gamma; replaced by the grid search's choice
    choose_w: bool = True  # grid-search w on the validation split (false: keep scoring.w)
    w_grid_steps: int = 11  # w in linspace(0, 1, steps)
    # rerank: items by combined engagement score | fixed: source order | auto: whichever of the
    # two gives the better validation page NDCG_2D (chosen with w, by the same grid search)
    item_mode: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= self.w <= 1.0:
            raise ConfigError(f"scoring.w must be in [0, 1], got {self.w}")
        if self.w_grid_steps < 2:
            raise ConfigError(f"scoring.w_grid_steps must be >= 2, got {self.w_grid_steps}")
        if self.item_mode not in ("rerank", "fixed", "auto"):
            raise ConfigError(
                f"scoring.item_mode must be 'rerank', 'fixed' or 'auto', got {self.item_mode!r}"
            )


@dataclass(frozen=True)
class TrainingConfig:
    label_days: int = 3  # label window [ds - label_days, ds); training features as of its start
    label_windows: int = 1  # also learn from the windows before it, each as of its own start
    max_users: int = 50_000  # users sampled (by hash) into the engagement training set
    min_impressions: int = 2_000  # logged item impressions needed to train on them
    validation_users: int = 2_000  # held-out users whose pages choose w
    min_positives: int = 30  # an objective with fewer positives in the window is not trained
    # auto: logged impressions when there are min_impressions of them, else candidates
    source: str = "auto"  # auto | impressions | candidates

    def __post_init__(self) -> None:
        if self.source not in ("auto", "impressions", "candidates"):
            raise ConfigError(
                f"training.source must be auto, impressions or candidates, got {self.source!r}"
            )
        if self.label_days < 1:
            raise ConfigError(f"training.label_days must be >= 1, got {self.label_days}")
        if self.label_windows < 1:
            raise ConfigError(f"training.label_windows must be >= 1, got {self.label_windows}")
        if self.max_users < 10 or self.validation_users < 1:
            raise ConfigError("training.max_users must be >= 10 and validation_users >= 1")


@dataclass(frozen=True)
class EngagementConfig:
    backend: str = "xgboost"  # xgboost (one machine) | xgboost_spark (xgboost.spark on Spark)
    weight_click: float = 1.0  # objectives combined at ranking time: sum of weight * P
    weight_add_to_cart: float = 3.0
    weight_purchase: float = 10.0
    n_estimators: int = 100
    max_depth: int = 6
    learning_rate: float = 0.1
    negative_rate: float = 0.2  # share of negatives kept (each weighs 1 / rate)
    calibration_share: float = 0.2
    evaluation_share: float = 0.15
    inverse_propensity: bool = False  # weight engaged impressions by 1 / examination propensity
    # where clicks are logged, the purchase head learns eBay's purchase-intent soft label: a
    # clicked item gets decay ** ((t_p - t_c) / (epsilon * T)) from the session's first purchase
    # after the click (features.intent_*, features.session_gap_minutes), a purchased item 1
    intent_labels: bool = False
    n_jobs: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        if self.backend not in ("xgboost", "xgboost_spark"):
            raise ConfigError(
                f"engagement.backend must be 'xgboost' or 'xgboost_spark', got {self.backend!r}"
            )
        if not isinstance(self.intent_labels, bool):
            raise ConfigError(
                f"engagement.intent_labels must be true or false, got {self.intent_labels!r}"
            )
        ws = (self.weight_click, self.weight_add_to_cart, self.weight_purchase)
        if min(ws) < 0 or sum(ws) <= 0:
            raise ConfigError("engagement weights must be >= 0 and not all 0")

    def weights(self) -> dict[str, float]:
        return {
            "click": self.weight_click,
            "add_to_cart": self.weight_add_to_cart,
            "purchase": self.weight_purchase,
        }


@dataclass(frozen=True)
class GateConfig:
    model_name: str = "homepage-ranker"  # MLflow registered model
    auc_drop: float = 0.01  # the challenger may lose at most this much AUC per objective
    ndcg_drop: float = 0.01  # ... this much held-out NDCG
    ece_rise: float = 0.01  # ... and gain at most this much calibration error per objective
    # a criterion fails only when this central interval of the paired bootstrap (users
    # resampled) of challenger - champion lies entirely beyond the tolerance as well
    interval_level: float = 0.95
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    alert_command: str = ""  # run (with the rejection on stdin) when the gate rejects

    def __post_init__(self) -> None:
        if min(self.auc_drop, self.ndcg_drop, self.ece_rise) < 0:
            raise ConfigError("gate tolerances must be >= 0")
        if not 0 < self.interval_level < 1:
            raise ConfigError(
                f"gate.interval_level must lie in (0, 1), got {self.interval_level!r}"
            )
        if self.bootstrap_resamples < 2:
            raise ConfigError(
                f"gate.bootstrap_resamples must be >= 2, got {self.bootstrap_resamples!r}"
            )


@dataclass(frozen=True)
class PageConfig:
    slots: int = 10  # Z carousels per page
    items_per_carousel: int = 10  # M items per carousel
    candidate_items: int = 30  # items kept per carousel candidate before page de-duplication
    min_items: int = 4  # a carousel with fewer items left is dropped from the page
    category_carousels: int = 6  # affinity category carousels per user
    buy_again_carousels: int = (
        5  # "buy it again" candidate rows (the k-th starts at item (k-1)*M + 1)
    )
    best_seller_carousels: int = 2  # "best sellers" candidate rows (30-day engagement, same blocks)
    for_you_carousels: int = 0  # "picked for you" rows ranked by engagement (rerank mode only)
    for_you_history: int = 200  # "picked for you" also weighs this many of the most-bought items
    for_you_pool: int = 100  # ... and this many items of highest MF affinity r̂
    for_you_popular: int = 0  # ... and this many best sellers (30-day engagement, in stock)
    slot_order: str = "beam"  # beam: slots in the beam plan's order | value: see README
    for_you_explore_weight: float = 0.0  # weight of explore recall in the "picked for you" order
    curated_file: str = (
        ""  # YAML of curated carousels used when the lake has none (default conf/curated.yaml)
    )
    category_pool: int = 100  # most popular in-stock items per category a carousel draws from
    brand_carousels: int = 1  # "your top brands" carousels per user
    new_categories: int = 3  # top categories "new in your categories" draws from
    candidate_carousels: int = 48  # each user's best candidates by carousel score the plan takes
    beam_width: int = 3  # slot assignment beam (1 = greedy)
    beam_start: int = 1  # slots above this one are filled greedily
    carousel_lambda: float = 0.8  # MMR lambda for carousels on the page (1 = no diversity)
    item_lambda: float = 0.8  # MMR lambda for items inside a carousel
    similarity_weights: tuple[float, ...] = (0.25, 0.25, 0.5)  # category, brand, MF embedding
    brand_run: int = 3  # after this many same-brand items pull another brand forward (0 = off)
    no_image_penalty: float = 0.3  # relevance x (1 - penalty) for items without an image
    non_repeat_categories: tuple[str, ...] = ()  # category ids (or category_path prefixes)
    non_repeat_days: int = 60  # "bought recently" for non-repeat categories
    repeat_penalty: float = 0.5  # relevance x (1 - penalty) for those items (not in buy again)
    explore_epsilon: float = 0.05  # epsilon-greedy new items from position explore_from
    explore_from: int = 4
    thompson_share: float = 0.05  # users whose carousel order is Thompson-sampled
    thompson_draws: int = 256  # Monte Carlo draws behind each logged slot propensity
    seed: int = 0  # exploration seed (mixed with the ds)
    threads: int = 0  # rank's worker threads (0 = cores + 1)

    def __post_init__(self) -> None:
        if self.beam_width < 1 or self.beam_start < 1 or self.explore_from < 1:
            raise ConfigError("page.beam_width, page.beam_start, page.explore_from must be >= 1")
        for k in (
            "carousel_lambda",
            "item_lambda",
            "no_image_penalty",
            "repeat_penalty",
            "explore_epsilon",
            "thompson_share",
        ):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"page.{k} must be in [0, 1], got {getattr(self, k)}")
        sw = self.similarity_weights
        if len(sw) != 3 or min(sw) < 0 or abs(sum(sw) - 1.0) > 1e-6:
            raise ConfigError(
                f"page.similarity_weights must be 3 non-negative numbers summing to 1, got {sw}"
            )
        if self.slots < 1 or self.items_per_carousel < 1:
            raise ConfigError("page.slots and page.items_per_carousel must be >= 1")
        if not self.slots <= self.candidate_carousels <= PLAN_CANDIDATES_LIMIT:
            raise ConfigError(
                f"page.candidate_carousels must be in [page.slots, {PLAN_CANDIDATES_LIMIT}] "
                f"(the beam plan's limit), got {self.candidate_carousels} with page.slots = "
                f"{self.slots}: set it between the two"
            )
        if self.candidate_items < self.items_per_carousel:
            raise ConfigError("page.candidate_items must be >= page.items_per_carousel")
        if not 1 <= self.min_items <= self.items_per_carousel:
            raise ConfigError("page.min_items must be in [1, page.items_per_carousel]")
        if self.slot_order not in ("beam", "value"):
            raise ConfigError(f"page.slot_order must be 'beam' or 'value', got {self.slot_order!r}")
        if self.for_you_carousels < 0 or self.for_you_explore_weight < 0:
            raise ConfigError(
                "page.for_you_carousels and page.for_you_explore_weight must be >= 0, got "
                f"{self.for_you_carousels} and {self.for_you_explore_weight}"
            )
        pools = {
            "history": self.for_you_history,
            "pool": self.for_you_pool,
            "popular": self.for_you_popular,
        }
        bad = {k: v for k, v in pools.items() if v < 0}
        if bad:
            raise ConfigError(
                "page.for_you_history, page.for_you_pool and page.for_you_popular must be >= 0, "
                f"got {', '.join(f'for_you_{k}={v}' for k, v in bad.items())}"
            )
        if self.buy_again_carousels < 1 or self.best_seller_carousels < 0:
            raise ConfigError(
                "page.buy_again_carousels must be >= 1 and page.best_seller_carousels >= 0, got "
                f"{self.buy_again_carousels} and {self.best_seller_carousels}"
            )


@dataclass(frozen=True)
class ExportConfig:
    keep_last: int = 7  # exports kept on disk after a publish
    map_size_gb: float = 8.0  # LMDB map size (virtual; the file only grows as needed)


@dataclass(frozen=True)
class RefreshConfig:
    every_minutes: int = 15  # the homepage_refresh schedule and the watermark grid
    allowed_lateness_minutes: int = 60  # a window re-reads this far back for late events
    keep_last: int = 4  # published deltas of the current day kept on disk
    # Spark Connect server (sc://host:port, `homepage spark-connect`) the ingest and priors
    # steps use; empty: each process starts its own Spark driver
    spark_remote: str = ""
    # resident refresh worker (http://host:port, `homepage refresh-server`) the steps run on;
    # empty: each step runs in the process that asks for it (the DAG's task)
    worker_url: str = ""

    def __post_init__(self) -> None:
        if self.spark_remote and not self.spark_remote.startswith("sc://"):
            raise ConfigError(
                "refresh.spark_remote must be empty or a Spark Connect URL like "
                f"sc://localhost:15002, got {self.spark_remote!r}"
            )
        if self.worker_url and not self.worker_url.startswith(("http://", "https://")):
            raise ConfigError(
                "refresh.worker_url must be empty or a refresh worker's URL like "
                f"http://localhost:15003, got {self.worker_url!r}"
            )
        if not 1 <= self.every_minutes <= 1440 or 1440 % self.every_minutes:
            raise ConfigError(
                "refresh.every_minutes must divide a day (1, 2, 3, 5, 10, 15, 30, 60, ...), "
                f"got {self.every_minutes}"
            )
        if self.allowed_lateness_minutes < 0 or self.keep_last < 1:
            raise ConfigError(
                "refresh.allowed_lateness_minutes must be >= 0 and refresh.keep_last >= 1"
            )


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    reload_interval_s: float = 2.0
    max_connections: int = 1024  # open connections per worker; more get 503


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: str = ""  # empty: sqlite under <lake>/_mlflow
    experiment: str = "homepage"


@dataclass(frozen=True)
class EvalConfig:
    test_days: int = 7  # test window [split, split + test_days) of `homepage evaluate`
    relevant_events: tuple[str, ...] = ("purchase", "add_to_cart")  # what counts as relevant
    recall_k: tuple[int, ...] = (10, 30)  # item recall@k in reading order
    new_days: int = 30  # "new" items: first seen within this many days before the split
    popularity_days: int = 30  # window of the popularity and static baselines
    resamples: int = 1000  # bootstrap resamples of every interval
    max_users: int = 20_000  # evaluated users (a hash sample beyond this)
    ab_days: int = 3  # simulated A/B test days (generated lakes only)
    seed: int = 0
