"""Slot assignment (beam search, family rule, MMR), page assembly, Thompson sampling and
epsilon-greedy exploration, on small cases with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from oracles.policy import brute_force_plan

from models.ranking.candidates import PAD
from models.ranking.exploration import explore_new_items, user_uniforms
from models.ranking.policy import (
    MAX_PLAN_CANDIDATES,
    ThompsonInputs,
    assemble,
    beam_plan,
    page_value,
    user_table,
)

EXAM = np.array([1.0, 0.8, 0.6])


def test_beam_search_finds_the_optimum_greedy_misses():
    # families A, B, B: greedy takes A (0.9) first, then B, and the other B cannot follow B
    q = np.array([[0.9, 0.8, 0.79]])
    fam = np.array([[0, 1, 1]])
    greedy, g_val = beam_plan(q, fam, EXAM, slots=3, width=1)
    beam, b_val = beam_plan(q, fam, EXAM, slots=3, width=3)
    best, best_val = brute_force_plan(q[0], fam[0], EXAM, slots=3)
    assert greedy[0].tolist() == [0, 1, -1]
    assert beam[0].tolist() == list(best) == [1, 0, 2]
    assert b_val[0] == pytest.approx(best_val)
    assert g_val[0] == pytest.approx(1 - 0.1 * (1 - 0.8 * 0.8))
    assert g_val[0] < b_val[0]
    assert page_value(q[:, [1, 0, 2]], EXAM)[0] == pytest.approx(best_val)


def test_starting_the_beam_at_a_later_slot_fixes_the_top_greedily():
    q = np.array([[0.9, 0.8, 0.79]])
    fam = np.array([[0, 1, 1]])
    plan, _ = beam_plan(q, fam, EXAM, slots=3, width=3, start=2)
    assert plan[0, 0] == 0  # slot 1 greedy


@pytest.mark.parametrize("seed", range(25))
def test_a_beam_wide_enough_to_keep_every_state_is_exact(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    q = rng.random((1, c))
    fam = rng.integers(0, 3, size=(1, c))
    exam = np.sort(rng.random(4))[::-1]
    plan, val = beam_plan(q, fam, exam, slots=4, width=200)
    _, best = brute_force_plan(q[0], fam[0], exam, slots=4)
    assert val[0] == pytest.approx(best)
    p = plan[0][plan[0] >= 0]
    assert len(set(p.tolist())) == len(p)
    assert all(fam[0, p[i]] != fam[0, p[i + 1]] for i in range(len(p) - 1))


def test_beam_is_vectorised_over_users_with_missing_candidates():
    q = np.array([[0.9, 0.8, 0.79], [0.5, np.nan, np.nan]])
    fam = np.array([[0, 1, 1], [2, -1, -1]])
    plan, val = beam_plan(q, fam, EXAM, slots=3, width=3)
    assert plan[0].tolist() == [1, 0, 2]
    assert plan[1].tolist() == [0, -1, -1]
    assert val[1] == pytest.approx(0.5)


def test_carousel_mmr_pushes_a_near_duplicate_down():
    q = np.array([[0.5, 0.49, 0.3]])
    fam = np.array([[0, 1, 2]])
    sim = np.array([[[1.0, 0.95, 0.0], [0.95, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    plain, _ = beam_plan(q, fam, EXAM, slots=3, width=3, sim=sim, lam=1.0)
    diverse, _ = beam_plan(q, fam, EXAM, slots=3, width=3, sim=sim, lam=0.3)
    assert plain[0].tolist() == [0, 1, 2]
    assert diverse[0].tolist() == [0, 2, 1]


def test_bad_policy_parameters_are_refused():
    q, fam = np.array([[0.5]]), np.array([[0]])
    with pytest.raises(ValueError, match="beam width"):
        beam_plan(q, fam, EXAM, slots=2, width=0)
    with pytest.raises(ValueError, match="lambda"):
        beam_plan(q, fam, EXAM, slots=2, lam=1.5)
    with pytest.raises(ValueError, match="examination"):
        beam_plan(q, fam, np.array([1.0, 2.0]), slots=2)


def test_the_beam_takes_up_to_its_limit_of_candidates_and_names_the_way_out():
    # candidate k has q = k / 100 and a family of its own: the plan is the highest q first
    c = MAX_PLAN_CANDIDATES
    q = np.arange(1, c + 2)[None, :] / 100.0
    fam = np.arange(c + 1)[None, :]
    plan, _ = beam_plan(q[:, :c], fam[:, :c], EXAM, slots=3)
    assert plan.tolist() == [[c - 1, c - 2, c - 3]]
    with pytest.raises(
        ValueError, match=f"at most {c} candidate.*got {c + 1}.*candidate_carousels"
    ):
        beam_plan(q, fam, EXAM, slots=3)


def test_user_table_pads_per_user():
    t = user_table(np.array([0, 0, 2, 2, 2]), 3)
    assert t.tolist() == [[0, 1, -1], [-1, -1, -1], [2, 3, 4]]
    with pytest.raises(ValueError, match="sorted"):
        user_table(np.array([1, 0]), 2)


N = np.nan


def _pools(rows):
    width = max(len(r) for r in rows)
    out = np.full((1, len(rows), width), PAD)
    for j, r in enumerate(rows):
        out[0, j, : len(r)] = r
    return out


def test_assembly_dedups_fills_from_the_pool_and_drops_short_carousels():
    pools = _pools([[1, 2, 3, 4, 5], [1, 2, 6, 7, 8], [2, 3, 4, 9], [10, 11, 12]])
    fam = np.array([[0, 1, 2, 3]])
    prio = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = assemble(pools, fam, prio, slots=4, per_carousel=3, min_items=3)
    assert out.column[0].tolist() == [0, 1, 3, -1]
    assert out.items[0, 0].tolist() == [1, 2, 3]
    assert out.items[0, 1].tolist() == [6, 7, 8]  # filled from deeper in its pool
    # carousel 2 has only 4, 9 left (< 3): dropped; the page is exhausted at 3 slots
    assert out.items[0, 2].tolist() == [10, 11, 12]
    assert out.exhausted[0] and out.n_slots[0] == 3
    assert np.all(out.slot_propensity[0, :3] == 1.0)


def test_value_assembly_takes_the_carousel_whose_unshown_items_are_worth_most():
    # carousel 0 (family 0) shows 1, 2 worth 0.9 + 0.8; then carousel 1 (family 1) repeats 1,
    # 2, so what it would show is 6 (0.1) and 7 (0.1): carousel 2 (0.5 + 0.4) wins slot 2,
    # although the priorities (a beam plan) say 0, 1, 2
    pools = _pools([[1, 2, 3], [1, 2, 6, 7], [4, 5], [8, 9]])
    fam = np.array([[0, 1, 2, 0]])
    prio = np.array([[0.0, 1.0, 2.0, 3.0]])
    values = np.array(
        [[[0.9, 0.8, 0.2, N], [0.9, 0.8, 0.1, 0.1], [0.5, 0.4, N, N], [0.3, 0.3, N, N]]]
    )
    out = assemble(pools, fam, prio, slots=4, per_carousel=2, min_items=1, values=values)
    assert out.column[0].tolist() == [0, 2, 3, 1]
    assert out.items[0, 1].tolist() == [4, 5]
    assert out.items[0, 3].tolist() == [6, 7]  # de-duplicated: filled from deeper in its pool
    # equal values: the priority decides; without values the priority order is kept
    flat = np.where(np.isnan(values), np.nan, 1.0)
    tie = assemble(
        pools[:, 2:],
        fam[:, 2:],
        prio[:, 2:] * -1,
        slots=2,
        per_carousel=2,
        min_items=1,
        values=flat[:, 2:],
    )
    assert tie.column[0].tolist() == [1, 0]
    plain = assemble(pools, fam, prio, slots=4, per_carousel=2, min_items=1)
    assert plain.column[0].tolist() == [0, 1, 2, 3]


def test_assembly_never_puts_one_family_in_adjacent_slots():
    pools = _pools([[1, 2], [3, 4], [5, 6], [7, 8]])
    fam = np.array([[0, 0, 1, 1]])
    prio = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = assemble(pools, fam, prio, slots=4, per_carousel=2, min_items=1)
    assert out.column[0].tolist() == [0, 2, 1, 3]


def test_thompson_sampling_logs_the_probability_of_each_choice():
    n, c = 400, 3
    pools = np.tile(np.arange(c * 2).reshape(1, c, 2), (n, 1, 1))
    fam = np.tile(np.arange(c), (n, 1))
    prio = np.tile(np.arange(c, dtype=float), (n, 1))
    a = np.tile([30.0, 20.0, 10.0], (n, 1))
    b = np.tile([70.0, 80.0, 90.0], (n, 1))
    ts = ThompsonInputs(
        users=np.arange(n) % 2 == 0,
        a=a,
        b=b,
        slope=np.ones((n, c)),
        intercept=np.zeros((n, c)),
        draws=512,
        seed=3,
    )
    out = assemble(pools, fam, prio, slots=2, per_carousel=2, min_items=1, thompson=ts)
    det = ~ts.users
    assert np.all(out.column[det, 0] == 0) and np.all(out.slot_propensity[det] == 1.0)
    tsu = ts.users
    first = out.column[tsu, 0]
    assert set(np.unique(first)) >= {0, 1}  # the sampled order varies
    # the logged probability of the top slot matches how often each carousel won it
    for k in (0, 1):
        logged = out.slot_propensity[tsu, 0][first == k].mean()
        assert logged == pytest.approx((first == k).mean(), abs=0.08)
    assert np.all((out.slot_propensity[tsu] > 0) & (out.slot_propensity[tsu] <= 1))


def test_thompson_sampling_over_slot_values_samples_the_value_not_phi():
    n, c = 600, 3
    pools = np.tile(np.arange(c * 2).reshape(1, c, 2), (n, 1, 1))
    fam = np.tile(np.arange(c), (n, 1))
    prio = np.tile(np.arange(c, dtype=float)[::-1], (n, 1))  # φ's order is the reverse
    values = np.tile(np.array([[3.0, 3.0], [2.0, 2.0], [0.5, 0.5]]), (n, 1, 1))
    a, b = np.full((n, c), 20.0), np.full((n, c), 80.0)  # the same uncertain rate everywhere

    def ts(slope: float) -> ThompsonInputs:
        return ThompsonInputs(
            users=np.ones(n, dtype=bool),
            a=a,
            b=b,
            slope=np.full((n, c), slope),
            intercept=np.tile([0.0, 0.0, 5.0], (n, 1)),  # φ would always pick candidate 2
            draws=512,
            seed=3,
            value_scale=np.full((n, c), 5.0),  # 1 / λ̄ with λ̄ = 0.2
        )

    out = assemble(
        pools, fam, prio, slots=3, per_carousel=2, min_items=1, thompson=ts(1.0), values=values
    )
    first = out.column[:, 0]
    # a value 1.5 times larger wins most draws, not always; 0.5 against 3 almost never
    assert 0.7 < (first == 0).mean() < 0.995 and (first == 2).mean() < 0.01
    logged = out.slot_propensity[first == 0, 0].mean()
    assert logged == pytest.approx((first == 0).mean(), abs=0.05)
    # φ's pieces play no part
    again = assemble(
        pools, fam, prio, slots=3, per_carousel=2, min_items=1, thompson=ts(9.0), values=values
    )
    assert np.array_equal(out.column, again.column)
    assert np.array_equal(out.slot_propensity, again.slot_propensity)
    # without value_scale, the draws rank φ as before (candidate 2 by its intercept)
    phi = assemble(
        pools,
        fam,
        prio,
        slots=3,
        per_carousel=2,
        min_items=1,
        thompson=replace(ts(1.0), value_scale=None),
        values=values,
    )
    assert np.all(phi.column[:, 0] == 2)


def test_exploration_inserts_new_items_from_position_k_with_propensities():
    n, z, m = 2000, 2, 5
    items = np.tile(np.arange(z * m).reshape(1, z, m), (n, 1, 1))
    movable = np.ones((n, z), dtype=bool)
    movable[:, 1] = False
    pool = np.tile(np.array([[100, 101, 102, 3]]), (n, 1))  # 3 is already on the page
    weight = np.tile(np.array([[3.0, 1.0, 0.0, 5.0]]), (n, 1))
    out, prop, explored = explore_new_items(
        items, movable, pool, weight, epsilon=0.2, start=3, user_keys=np.arange(n), seed=5
    )
    assert not explored[:, :, :2].any() and not explored[:, 1].any()
    assert np.all(out[:, 1] == items[:, 1]) and np.all(prop[:, :, :2] == 1.0)
    assert explored[:, 0, 2:].mean() == pytest.approx(0.2, abs=0.03)
    got = out[explored]
    assert set(np.unique(got)) <= {100, 101, 102}  # never the item already shown
    # drawn ∝ weight: 100 three times as often as 101 on the first draw at position 3
    first = out[:, 0, 2][explored[:, 0, 2]]
    assert (first == 100).mean() == pytest.approx(0.75, abs=0.08)
    assert np.allclose(prop[:, 0, 2][explored[:, 0, 2] & (out[:, 0, 2] == 100)], 0.2 * 0.75)
    organic = ~explored[:, 0, 2:]
    assert np.allclose(prop[:, 0, 2:][organic], 0.8)
    # organic items keep their order and shift right; nothing appears twice on a page
    for u in range(50):
        page = out[u][out[u] != PAD]
        assert len(set(page.tolist())) == len(page)
        org = [i for i, e in zip(out[u, 0], explored[u, 0], strict=True) if not e]
        assert org == sorted(org)


def test_no_exploration_when_epsilon_is_zero():
    items = np.arange(6).reshape(1, 1, 6)
    out, prop, explored = explore_new_items(
        items,
        np.ones((1, 1), bool),
        np.array([[9]]),
        np.array([[1.0]]),
        epsilon=0.0,
        start=1,
        user_keys=np.zeros(1, np.uint64),
    )
    assert np.array_equal(out, items) and np.all(prop == 1.0) and not explored.any()


def test_user_uniforms_are_uniform_and_depend_only_on_key_seed_and_stream():
    u = user_uniforms(np.arange(20_000, dtype=np.uint64), 7, 1, (5,))
    assert u.shape == (20_000, 5) and u.min() > 0 and u.max() < 1
    assert u.mean() == pytest.approx(0.5, abs=0.01) and u.std() == pytest.approx(12**-0.5, abs=0.01)
    # neighbouring keys and columns are uncorrelated
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    again = user_uniforms(np.array([19_999, 3], dtype=np.uint64), 7, 1, (5,))
    assert np.array_equal(again, u[[19_999, 3]])  # a row does not depend on the batch
    assert not np.array_equal(user_uniforms(np.arange(3), 8, 1, (5,)), u[:3])  # seed
    assert not np.array_equal(user_uniforms(np.arange(3), 7, 2, (5,)), u[:3])  # stream


def test_a_users_exploration_and_thompson_draws_do_not_depend_on_the_batch():
    n, z, m = 64, 2, 5
    items = np.tile(np.arange(z * m).reshape(1, z, m), (n, 1, 1))
    movable = np.ones((n, z), dtype=bool)
    pool = np.tile(np.array([[100, 101, 102, 103]]), (n, 1))
    weight = np.tile(np.array([[3.0, 1.0, 2.0, 1.0]]), (n, 1))
    keys = np.arange(1000, 1000 + n, dtype=np.uint64)
    full = explore_new_items(
        items, movable, pool, weight, epsilon=0.3, start=2, user_keys=keys, seed=11
    )
    sub = [5, 40, 17]
    part = explore_new_items(
        items[sub],
        movable[sub],
        pool[sub],
        weight[sub],
        epsilon=0.3,
        start=2,
        user_keys=keys[sub],
        seed=11,
    )
    for a, b in zip(full, part, strict=True):
        assert np.array_equal(a[sub], b)
    c = 3
    pools = np.tile(np.arange(c * 2).reshape(1, c, 2), (n, 1, 1))
    fam = np.tile(np.arange(c), (n, 1))
    prio = np.tile(np.arange(c, dtype=float), (n, 1))
    rng = np.random.default_rng(1)
    a, b = rng.uniform(1, 9, (n, c)), rng.uniform(1, 9, (n, c))

    def ts(rows):
        return ThompsonInputs(
            users=np.ones(len(rows), dtype=bool),
            a=a[rows],
            b=b[rows],
            slope=np.ones((len(rows), c)),
            intercept=np.zeros((len(rows), c)),
            draws=64,
            seed=3,
            keys=keys[rows],
        )

    every = np.arange(n)
    whole = assemble(pools, fam, prio, slots=3, per_carousel=2, min_items=1, thompson=ts(every))
    alone = assemble(
        pools[sub], fam[sub], prio[sub], slots=3, per_carousel=2, min_items=1, thompson=ts(sub)
    )
    assert np.array_equal(whole.column[sub], alone.column)
    assert np.array_equal(whole.slot_propensity[sub], alone.slot_propensity)
