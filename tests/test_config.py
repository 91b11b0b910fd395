import pytest

from jobs.config import ConfigError, load_config, parse_overrides


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
        (["mf.factors"], "override 'mf.factors' must look like key=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    assert message in str(err.value)


def test_parse_overrides_nests_keys():
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
