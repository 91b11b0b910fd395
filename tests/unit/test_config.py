import pytest

from jobs.core.config import ConfigError, load_config, parse_overrides


def test_defaults_load_and_hash_is_stable():
    a, b = load_config(), load_config()
    assert a.page.slots == 10 and a.page.items_per_carousel == 10 and a.mf.factors == 32
    assert a.hash() == b.hash()


def test_overrides_are_typed_and_change_the_hash():
    cfg = load_config(overrides=["mf.factors=64", "scoring.w=0.25", "mf.algorithm=bpr"])
    assert cfg.mf.factors == 64 and cfg.scoring.w == 0.25 and cfg.mf.algorithm == "bpr"
    assert cfg.hash() != load_config().hash()
    assert load_config(overrides={"page.slots": "8"}).page.slots == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["mf.factor=3"], "unknown key(s) in mf: mf.factor"),
        (["nope.x=1"], "unknown key(s) in config: nope"),
        (["mf.factors=many"], "mf.factors must be an integer, got 'many'"),
        (["scoring.w=1.5"], "scoring.w must be in [0, 1], got 1.5"),
        (["mf.algorithm=svd"], "mf.algorithm must be 'als' or 'bpr', got 'svd'"),
        (["page.min_items=50"], "page.min_items must be in [1, page.items_per_carousel]"),
        (["page.for_you_popular=-1"], "must be >= 0, got for_you_popular=-1"),
        (["page.candidate_carousels=64"], "page.candidate_carousels must be in [page.slots, 63]"),
        (["page.candidate_carousels=9"], "(the beam plan's limit), got 9 with page.slots = 10"),
        (["mf.factors"], "override 'mf.factors' must look like key=value"),
        (["engagement.intent_labels=maybe"], "engagement.intent_labels must be true or false"),
        (["refresh.spark_remote=localhost:15002"], "refresh.spark_remote must be empty or a"),
        (["refresh.worker_url=localhost:15003"], "refresh.worker_url must be empty or a"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    assert message in str(err.value)


def test_the_candidate_carousel_limit_is_the_beam_plans():
    from jobs.core.config_sections import PLAN_CANDIDATES_LIMIT
    from models.ranking.policy import MAX_PLAN_CANDIDATES

    assert PLAN_CANDIDATES_LIMIT == MAX_PLAN_CANDIDATES
    from jobs.daily.page_inputs import page_params

    cfg = load_config(overrides=["page.candidate_carousels=20"])
    assert page_params(cfg).candidate_carousels == 20
    assert load_config().page.candidate_carousels == 48


def test_intent_labels_is_a_validated_switch():
    from jobs.core.config_sections import EngagementConfig

    assert load_config().engagement.intent_labels is False
    assert load_config(overrides=["engagement.intent_labels=true"]).engagement.intent_labels
    with pytest.raises(ConfigError, match="engagement.intent_labels must be true or false"):
        EngagementConfig(intent_labels="yes")  # type: ignore[arg-type]


def test_parse_overrides_nests_keys():
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_item_mode_auto_picks_the_better_validation_mode():
    import pandas as pd

    from jobs.daily.carousel_weight import choose_item_mode

    grid = pd.DataFrame(
        {
            "mode": ["fixed", "fixed", "rerank", "rerank"],
            "w": [0.5, 1.0, 0.5, 1.0],
            "page_ndcg": [0.30, 0.40, 0.45, 0.35],
        }
    )
    assert choose_item_mode(grid, "auto", True, 0.7) == "rerank"  # 0.45 > 0.40
    assert choose_item_mode(grid, "auto", False, 1.0) == "fixed"  # at w = 1: 0.40 > 0.35
    assert choose_item_mode(grid, "fixed", True, 0.7) == "fixed"
    assert choose_item_mode(grid, "rerank", True, 0.7) == "rerank"
    tie = grid.assign(page_ndcg=0.4)
    assert choose_item_mode(tie, "auto", True, 0.7) == "fixed"  # a tie: the cheaper mode
    assert choose_item_mode(grid.iloc[:0], "auto", True, 0.7) == "fixed"
    assert choose_item_mode(grid[grid["mode"] == "rerank"], "auto", True, 0.7) == "rerank"
    with pytest.raises(ConfigError, match="'rerank', 'fixed' or 'auto'"):
        load_config(None, ["scoring.item_mode=best"])


def test_item_mode_auto_needs_rerank_better_beyond_chance_on_the_validation_users():
    import numpy as np
    import pandas as pd

    from jobs.daily.carousel_weight import choose_item_mode

    grid = pd.DataFrame({"mode": ["fixed", "rerank"], "w": [1.0, 0.9], "page_ndcg": [0.50, 0.51]})
    users = [f"u{k}" for k in range(40)]
    rng = np.random.default_rng(5)
    fixed = pd.Series(rng.uniform(0.2, 0.8, 40), index=users)

    def choose(rerank: pd.Series) -> tuple[str, dict]:
        evidence: dict = {}
        by_user = {("fixed", 1.0): fixed, ("rerank", 0.9): rerank}
        return choose_item_mode(grid, "auto", True, 0.7, by_user, evidence), evidence

    # a higher mean that is noise (per-user differences of ±0.3 around +0.01): the cheaper mode
    noisy = fixed + 0.01 + rng.choice([-0.3, 0.3], 40)
    mode, evidence = choose(noisy)
    assert mode == "fixed"
    assert evidence["users"] == 40 and evidence["p05"] < 0 < evidence["rerank_minus_fixed"]
    # the same mean gain on every user: rerank
    mode, evidence = choose(fixed + 0.01)
    assert mode == "rerank" and evidence["p05"] > 0
    # only the users scored in both modes are compared
    mode, evidence = choose((fixed + 0.01).iloc[:10])
    assert mode == "rerank" and evidence["users"] == 10
    # without per-user scores: the means decide, as before
    assert choose_item_mode(grid, "auto", True, 0.7) == "rerank"


def test_a_config_file_is_an_overlay_on_default_yaml(tmp_path, monkeypatch):
    base = load_config()
    f = tmp_path / "small.yaml"
    f.write_text("mf:\n  factors: 8\n")
    cfg = load_config(str(f))
    assert cfg.mf.factors == 8
    # everything else comes from conf/default.yaml, not the dataclass defaults
    assert cfg.page == base.page and cfg.scoring == base.scoring and cfg.mf.alpha == base.mf.alpha
    # HOMEPAGE_CONF is the overlay when no file is given, and ignored when one is
    env = tmp_path / "env.yaml"
    env.write_text("mf:\n  factors: 16\n")
    monkeypatch.setenv("HOMEPAGE_CONF", str(env))
    assert load_config().mf.factors == 16
    assert load_config(str(f)).mf.factors == 8
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_cluster_yaml_overlays_default_yaml():
    from jobs.core.config import CONF_DIR

    cfg = load_config(str(CONF_DIR / "cluster.yaml"))
    base = load_config()
    assert cfg.spark.master.startswith("spark://")
    assert cfg.mf.backend == "spark" and cfg.engagement.backend == "xgboost_spark"
    assert cfg.page == base.page and cfg.features == base.features


@pytest.mark.parametrize(
    ("overrides", "kept"),
    [
        ([], 40),  # two "Best sellers" rows: 30 candidate items, the second 10 further on
        (["page.best_seller_carousels=0"], 0),
        (["page.for_you_popular=300"], 40),  # no "Picked for you" rows: nothing weighs them
        (["page.for_you_popular=300", "page.for_you_carousels=10"], 300),
        (["page.for_you_popular=20", "page.for_you_carousels=10"], 40),
    ],
)
def test_the_catalogue_keeps_the_best_sellers_its_rows_and_pool_read(overrides, kept):
    from jobs.daily.catalogue import best_sellers_n

    assert best_sellers_n(load_config(overrides=overrides).page) == kept
