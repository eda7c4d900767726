"""Plan catalog and rating: hand-computed invoices, catalog validation, and properties.

Which property holds for which schedule (exact, unrounded amounts f(q) of billable quantity q):
- flat:      additive, f(a + b) = f(a) + f(b); hence monotonic.
- graduated: monotonic; the step f(q+1) - f(q) is the rate of the tier unit q+1 falls in (plus
             that tier's flat fee when q+1 is its first unit); with one tier it equals flat; with
             non-increasing rates and no flat fees it is subadditive, f(a + b) <= f(a) + f(b), and
             never cheaper than volume pricing on the same tiers.
- volume:    NOT additive and NOT monotonic (crossing a tier edge can lower the bill); it is
             q x (rate of the tier q falls in) + that tier's flat fee.
- package:   monotonic and subadditive; always a whole number of packages.
Rounding half-up is monotonic, so monotonicity survives it; additivity holds only before it.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.catalog import (
    MODELS, Catalog, CatalogError, Charge, Currency, Entitlement, Flat, Graduated, Package, Plan, Tier,
    UnknownTier, Volume, load_catalog, parse_catalog,
)
from pricing.rating import billable_quantity, exact_amount, rate, round_amount

USD = Currency("usd", 2)
JPY = Currency("jpy", 0)
D = Decimal


def charge(schedule, *, name="c", meter="tool_calls", model="activity_variable", included=0,
           included_per=None) -> Charge:
    return Charge(name, model, meter, schedule, f"meter_{name}", included, included_per)


def plan(*charges: Charge, minimum="0", currency=USD) -> Plan:
    return Plan("test", currency, charges, D(minimum))


def line_amount(schedule, quantity: int, currency=USD) -> Decimal:
    return rate(plan(charge(schedule), currency=currency), {"tool_calls": quantity}).total


TIERED = (Tier(1000, D("0.10")), Tier(5000, D("0.08"), D("5")), Tier(None, D("0.05"), D("10")))


# --- schedules, by hand --------------------------------------------------------------------

def test_flat_per_million_tokens():
    per_million = Flat(D("3.00"), per=1_000_000)
    assert line_amount(per_million, 1_500_000) == D("4.50")
    assert line_amount(per_million, 1) == D("0.00")  # 0.000003 rounds to nothing
    assert exact_amount(per_million, 1) == D("0.000003")
    assert line_amount(per_million, 2_000) == D("0.01")  # 0.006 -> 0.01


@pytest.mark.parametrize("quantity, expected", [
    (0, "0.00"),
    (999, "99.90"),
    (1000, "100.00"),          # exactly at the edge: all in tier 1, no tier-2 fee
    (1001, "105.08"),          # 100 + 1 x 0.08 + tier-2 flat fee 5
    (5000, "425.00"),          # 100 + 4000 x 0.08 + 5
    (5001, "435.05"),          # 425 + 1 x 0.05 + tier-3 flat fee 10
])
def test_graduated_at_and_around_tier_edges(quantity, expected):
    assert line_amount(Graduated(TIERED), quantity) == D(expected)


@pytest.mark.parametrize("quantity, expected", [
    (0, "0.00"),               # no units, no tier fee
    (1, "0.10"),
    (1000, "100.00"),          # 1000 x 0.10
    (1001, "85.08"),           # every unit at tier 2: 1001 x 0.08 + its flat fee 5
    (5000, "405.00"),          # 5000 x 0.08 + 5
    (5001, "260.05"),          # 5001 x 0.05 + 10
])
def test_volume_prices_every_unit_at_the_reached_tier(quantity, expected):
    assert line_amount(Volume(TIERED), quantity) == D(expected)


def test_volume_is_not_monotonic_across_an_edge():
    volume = Volume((Tier(1000, D("1.00")), Tier(None, D("0.50"))))
    assert line_amount(volume, 1000) == D("1000.00")
    assert line_amount(volume, 1001) == D("500.50")


@pytest.mark.parametrize("quantity, expected", [
    (0, "0.00"), (1, "2.00"), (1000, "2.00"), (1001, "4.00"), (2500, "6.00"),
])
def test_package_rounds_partial_packages_up(quantity, expected):
    assert line_amount(Package(1000, D("2.00")), quantity) == D(expected)


# --- included quantities, entitlement, minimum ----------------------------------------------

def test_included_quantity_is_free_and_never_negative():
    c = charge(Flat(D("0.01")), included=100)
    r = rate(plan(c), {"tool_calls": 50})
    assert (r.lines[0].quantity, r.lines[0].billable_quantity, r.lines[0].amount) == (50, 0, D("0.00"))
    r = rate(plan(c), {"tool_calls": 150})
    assert (r.lines[0].billable_quantity, r.lines[0].amount) == (50, D("0.50"))


def test_per_agent_entitlement():
    overage = charge(Flat(D("0.04")), name="invocation_overage", model="activity_fixed",
                     meter="agent_invocations", included=500,
                     included_per=Entitlement("active_agents", 2000))
    fee = charge(Flat(D("99.00")), name="agents", model="activity_fixed", meter="active_agents")
    r = rate(plan(fee, overage), {"active_agents": 3, "agent_invocations": 7000})
    # 3 agents x 99 = 297; included 500 + 3 x 2000 = 6500, so 500 billable x 0.04 = 20
    assert [(line.charge, line.quantity, line.billable_quantity, line.amount) for line in r.lines] == [
        ("agents", 3, 3, D("297.00")),
        ("invocation_overage", 7000, 500, D("20.00")),
    ]
    assert r.total == D("317.00")
    r = rate(plan(fee, overage), {"active_agents": 4, "agent_invocations": 7000})
    assert r.lines[1].billable_quantity == 0 and r.lines[1].amount == D("0.00")


def test_minimum_tops_up_to_the_floor():
    p = plan(charge(Flat(D("1.20"))), minimum="500.00")
    r = rate(p, {"tool_calls": 100})
    assert (r.subtotal, r.minimum_adjustment, r.total) == (D("120.00"), D("380.00"), D("500.00"))
    r = rate(p, {"tool_calls": 500})
    assert (r.subtotal, r.minimum_adjustment, r.total) == (D("600.00"), D("0"), D("600.00"))
    r = rate(p, {})
    assert (r.subtotal, r.minimum_adjustment, r.total) == (D("0"), D("500.00"), D("500.00"))


# --- rounding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("unit_price, expected", [
    ("0.005", "0.01"),          # exactly half a cent rounds up
    ("0.025", "0.03"),          # half-up, not banker's (which gives 0.02)
    ("0.0049999", "0.00"),
    ("0.0150", "0.02"),
])
def test_half_up_at_exactly_half_a_cent(unit_price, expected):
    assert line_amount(Flat(D(unit_price)), 1) == D(expected)


def test_each_line_is_rounded_and_lines_add_up_to_the_total():
    half_cent = Flat(D("0.005"))
    p = plan(charge(half_cent, name="a"), charge(half_cent, name="b", meter="llm_calls"),
             charge(half_cent, name="c", meter="agent_invocations"))
    r = rate(p, {"tool_calls": 1, "llm_calls": 1, "agent_invocations": 1})
    assert [line.amount for line in r.lines] == [D("0.01")] * 3
    assert r.subtotal == r.total == D("0.03") == sum(line.amount for line in r.lines)  # exact sum: 0.015


def test_currency_with_no_minor_units():
    assert JPY.quantum == D("1")
    assert line_amount(Flat(D("0.5")), 1, currency=JPY) == D("1")   # 0.5 yen rounds up
    assert line_amount(Flat(D("0.5")), 3, currency=JPY) == D("2")   # 1.5 -> 2
    assert line_amount(Flat(D("0.4")), 1, currency=JPY) == D("0")
    r = rate(plan(charge(Flat(D("3"))), minimum="1000", currency=JPY), {"tool_calls": 10})
    assert (r.currency, r.subtotal, r.minimum_adjustment, r.total) == ("jpy", D("30"), D("970"), D("1000"))
    assert round_amount(D("12.5"), JPY) == D("13")


def test_rate_refuses_bad_usage():
    p = plan(charge(Flat(D("1"))))
    with pytest.raises(ValueError, match="unknown meter 'tool_call'"):
        rate(p, {"tool_call": 1})
    with pytest.raises(ValueError, match="must not be negative"):
        rate(p, {"tool_calls": -1})
    with pytest.raises(ValueError, match="expected an int quantity, got float"):
        rate(p, {"tool_calls": 1.0})


# --- the shipped catalog --------------------------------------------------------------------

def test_shipped_catalog_loads_with_every_tier_and_model():
    catalog = load_catalog()
    assert catalog.currency == USD
    assert catalog.tiers == ("basic", "premium", "enterprise")
    for tier in catalog.tiers:
        assert catalog.plan_for(tier).name == tier
        plans = catalog.model_plans(tier)
        assert list(plans) == list(MODELS)
        for model, reference in plans.items():
            assert reference.charges and {c.model for c in reference.charges} == {model}


def test_shipped_premium_plan_by_hand():
    premium = load_catalog().plan_for("premium")
    usage = {"active_agents": 12, "agent_invocations": 30_000, "input_tokens": 150_000_000,
             "output_tokens": 12_345_678}
    r = rate(premium, usage)
    assert {line.charge: line.amount for line in r.lines} == {
        "agents": D("1188.00"),                 # 12 x 99
        "invocation_overage": D("240.00"),      # (30,000 - 12 x 2,000) x 0.04
        "input_tokens": D("650.00"),            # 100M x 4.50/1M + 50M x 4.00/1M
        "output_tokens": D("277.78"),           # 12,345,678 x 22.50/1M = 277.777755
    }
    assert r.total == D("2355.78") and r.minimum_adjustment == 0


def test_unknown_tier():
    catalog = load_catalog()
    with pytest.raises(UnknownTier, match="no plan for tier 'gold'"):
        catalog.plan_for("gold")
    with pytest.raises(UnknownTier):
        catalog.model_plans("gold")


# --- catalog validation -----------------------------------------------------------------------

def _charge_dict(**overrides):
    body = {"name": "tokens", "model": "activity_variable", "meter": "input_tokens", "schedule": "flat",
            "unit_price": "3.00", "per": 1_000_000, "stripe_meter": "meterline_input_tokens"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def _reference(model: str, meter: str) -> dict:
    return {"charges": [{"name": "x", "model": model, "meter": meter, "schedule": "flat",
                         "unit_price": "1.00", "stripe_meter": f"m_{meter}"}]}


def _catalog(**charge_overrides) -> dict:
    return {
        "currency": "usd",
        "plans": {"premium": {"minimum": "10.00", "charges": [_charge_dict(**charge_overrides)]}},
        "models": {"premium": {
            "activity_fixed": _reference("activity_fixed", "active_agents"),
            "activity_variable": _reference("activity_variable", "input_tokens"),
            "outcome_fixed": _reference("outcome_fixed", "workflows_completed"),
            "outcome_variable": _reference("outcome_variable", "agent_outcomes_succeeded"),
        }},
    }


def test_valid_base_catalog_parses():
    catalog = parse_catalog(_catalog())
    assert isinstance(catalog, Catalog)
    assert catalog.plan_for("premium").charges[0].schedule == Flat(D("3.00"), 1_000_000)


GOLDEN = 'plan \'premium\', charge \'tokens\': field \'unit_price\': expected a decimal string like "0.002", got float 0.002'


def test_float_price_from_real_toml_is_refused(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(
        'currency = "usd"\n[plans.premium]\n[[plans.premium.charges]]\nname = "tokens"\n'
        'model = "activity_variable"\nmeter = "input_tokens"\nschedule = "flat"\nunit_price = 0.002\n'
        'stripe_meter = "meterline_input_tokens"\n'
    )
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == GOLDEN


def test_invalid_toml_is_a_catalog_error(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text("currency = \n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(path)


@pytest.mark.parametrize("overrides, message", [
    ({"unit_price": 2}, "charge 'tokens': field 'unit_price': expected a decimal string like \"0.002\", got int 2"),
    ({"unit_price": "-1.00"}, "charge 'tokens': field 'unit_price': must not be negative"),
    ({"unit_price": "1,00"}, "charge 'tokens': field 'unit_price': expected a decimal string"),
    ({"unit_price": "NaN"}, "charge 'tokens': field 'unit_price': expected a decimal string"),
    ({"unit_price": None}, "charge 'tokens': field 'unit_price': missing"),
    ({"model": "per_seat"}, "charge 'tokens': field 'model': expected one of activity_fixed"),
    ({"schedule": "stairstep"}, "charge 'tokens': field 'schedule': expected one of flat, graduated"),
    ({"meter": "tokens"}, "charge 'tokens': field 'meter': expected one of input_tokens"),
    ({"model": "outcome_variable"}, "charge 'tokens': field 'meter': a outcome_variable charge rates agent_outcomes_succeeded"),
    ({"stripe_meter": None}, "charge 'tokens': field 'stripe_meter': missing"),
    ({"stripe_meter": "two words"}, "charge 'tokens': field 'stripe_meter': expected a Stripe meter event_name"),
    ({"unit_prise": "1.00"}, "charge 'tokens': field 'unit_prise': unknown field"),
    ({"per": 1024}, "charge 'tokens': field 'per': expected a power of ten"),
    ({"per": 1e6}, "charge 'tokens': field 'per': expected an integer, got float"),
    ({"included": 1.5}, "charge 'tokens': field 'included': expected an integer, got float 1.5"),
    ({"included": True}, "charge 'tokens': field 'included': expected an integer, got bool"),
    ({"included": -1}, "charge 'tokens': field 'included': must not be negative"),
    ({"included_per": {"meter": "input_tokens", "quantity": 1}},
     "charge 'tokens': field 'included_per.meter': must differ from the charge's own meter"),
    ({"included_per": {"meter": "active_agents", "quantity": 0.5}},
     "charge 'tokens': field 'included_per.quantity': expected an integer, got float"),
    ({"included_per": {"meter": "agents", "quantity": 1}},
     "charge 'tokens': field 'included_per.meter': expected one of"),
    ({"schedule": "graduated", "unit_price": None, "tiers": [{"up_to": 100, "unit_price": "1"},
                                                              {"up_to": 100, "unit_price": "1"},
                                                              {"unit_price": "1"}]},
     "charge 'tokens': field 'tiers[1].up_to': tiers must be strictly increasing, got 100 after 100"),
    ({"schedule": "volume", "unit_price": None, "tiers": [{"up_to": 100, "unit_price": "1"},
                                                           {"up_to": 200, "unit_price": "1"}]},
     "charge 'tokens': field 'tiers[1].up_to': the last tier must have no up_to"),
    ({"schedule": "graduated", "unit_price": None, "tiers": [{"unit_price": "1"}, {"unit_price": "1"}]},
     "charge 'tokens': field 'tiers[0].up_to': missing"),
    ({"schedule": "graduated", "unit_price": None, "tiers": []},
     "charge 'tokens': field 'tiers': expected a non-empty array"),
    ({"schedule": "graduated", "unit_price": None, "tiers": [{"unit_price": "1", "flat_fee": -5}]},
     "charge 'tokens': field 'tiers[0].flat_fee': expected a decimal string like \"0.002\", got int -5"),
    ({"schedule": "graduated", "unit_price": None, "tiers": [{"unit_price": 0.1}]},
     "charge 'tokens': field 'tiers[0].unit_price': expected a decimal string like \"0.002\", got float 0.1"),
    ({"schedule": "package", "unit_price": None, "per": None, "package_size": 0, "package_price": "1"},
     "charge 'tokens': field 'package_size': expected a positive integer, got 0"),
    ({"schedule": "package", "unit_price": None, "package_size": 10, "package_price": "1"},
     "charge 'tokens': field 'per': unknown field"),
])
def test_invalid_charge_is_refused_naming_plan_charge_and_field(overrides, message):
    with pytest.raises(CatalogError) as info:
        parse_catalog(_catalog(**overrides))
    assert str(info.value).startswith("plan 'premium', ")
    assert message in str(info.value)


def _mutated(mutate) -> dict:
    data = copy.deepcopy(_catalog())
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(currency="xyz"), "catalog: field 'currency': expected one of usd"),
    (lambda d: d.pop("currency"), "catalog: field 'currency': missing"),
    (lambda d: d.update(plans={}), "catalog: field 'plans': expected at least one plan"),
    (lambda d: d.update(tax="0.2"), "catalog: field 'tax': unknown field"),
    (lambda d: d["plans"]["premium"].update(minimum=500), "plan 'premium': field 'minimum': expected a decimal string"),
    (lambda d: d["plans"]["premium"].update(minimum="9.999"), "plan 'premium': field 'minimum': usd has 2 decimal places"),
    (lambda d: d["plans"]["premium"].update(charges=[]), "plan 'premium': field 'charges': expected at least one"),
    (lambda d: d["plans"]["premium"]["charges"][0].pop("name"), "plan 'premium', charge #1: field 'name'"),
    (lambda d: d["plans"]["premium"]["charges"].append(_charge_dict(stripe_meter="other")),
     "plan 'premium', charge 'tokens': field 'name': 'tokens' is used twice"),
    (lambda d: d["plans"]["premium"]["charges"].append(_charge_dict(name="more")),
     "plan 'premium', charge 'more': field 'stripe_meter': 'meterline_input_tokens' is used twice"),
    (lambda d: d["models"].update(gold=d["models"]["premium"]), "catalog: table 'models.gold': unknown tier 'gold'"),
    (lambda d: d["models"]["premium"].pop("outcome_fixed"),
     "catalog: table 'models.premium': missing reference plan(s) for outcome_fixed"),
    (lambda d: d["models"]["premium"].update(per_seat={}), "catalog: table 'models.premium': field 'per_seat'"),
    (lambda d: d["models"]["premium"].update(outcome_fixed=_reference("activity_variable", "tool_calls")),
     "plan 'models.premium.outcome_fixed', charge 'x': field 'model': a outcome_fixed reference plan holds only"),
])
def test_invalid_catalog_is_refused(mutate, message):
    with pytest.raises(CatalogError) as info:
        parse_catalog(_mutated(mutate))
    assert message in str(info.value)


def test_minimum_in_yen_must_be_whole():
    data = _mutated(lambda d: d.update(currency="JPY"))
    data["plans"]["premium"]["minimum"] = "1000.5"
    with pytest.raises(CatalogError, match="plan 'premium': field 'minimum': jpy has 0 decimal places"):
        parse_catalog(data)


# --- properties -------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
quantities = st.integers(min_value=0, max_value=10**12)
pers = st.sampled_from([1, 1000, 1_000_000])


@st.composite
def tier_lists(draw, fees=True, min_size=1):
    edges = sorted(draw(st.sets(st.integers(1, 10**9), min_size=min_size - 1, max_size=4)))
    fee = prices if fees else st.just(D(0))
    return tuple(Tier(up_to, draw(prices), draw(fee)) for up_to in [*edges, None])


schedules = st.one_of(
    st.builds(Flat, prices, pers),
    st.builds(Graduated, tier_lists(), pers),
    st.builds(Volume, tier_lists(), pers),
    st.builds(Package, st.integers(1, 10**6), prices),
)


@given(st.lists(schedules, min_size=1, max_size=4), st.lists(quantities, min_size=4, max_size=4),
       st.integers(0, 10**6), prices)
@settings(max_examples=300)
def test_rating_is_never_negative_and_adds_up(scheds, qs, included, minimum):
    meters = ("tool_calls", "llm_calls", "agent_invocations", "input_tokens")
    charges = [charge(s, name=f"c{i}", meter=meters[i], included=included) for i, s in enumerate(scheds)]
    usage = dict(zip(meters, qs))
    r = rate(plan(*charges, minimum=str(minimum.quantize(D("0.01")))), usage)
    assert all(line.amount >= 0 for line in r.lines)
    assert all(0 <= line.billable_quantity <= line.quantity for line in r.lines)
    assert r.subtotal == sum(line.amount for line in r.lines)
    assert r.minimum_adjustment >= 0 and r.total == r.subtotal + r.minimum_adjustment >= minimum.quantize(D("0.01"))
    for c, line in zip(charges, r.lines):
        assert abs(line.amount - exact_amount(c.schedule, line.billable_quantity)) <= D("0.005")


@given(st.builds(Flat, prices, pers), quantities, quantities)
def test_flat_is_additive(flat, a, b):
    assert exact_amount(flat, a + b) == exact_amount(flat, a) + exact_amount(flat, b)


@given(st.builds(Flat, prices, pers), quantities, st.integers(0, 10**6))
def test_included_quantity_only_shifts_the_billable_quantity(flat, q, included):
    c = charge(flat, included=included)
    assert billable_quantity(c, {"tool_calls": q}) == max(0, q - included)


@given(st.builds(Graduated, tier_lists(), pers), quantities, quantities)
def test_graduated_is_monotonic_before_and_after_rounding(graduated, a, b):
    low, high = sorted((a, b))
    assert exact_amount(graduated, low) <= exact_amount(graduated, high)
    assert line_amount(graduated, low) <= line_amount(graduated, high)


@given(st.builds(Graduated, tier_lists(), pers), st.integers(0, 10**9))
def test_graduated_step_is_the_rate_of_the_tier_the_next_unit_falls_in(graduated, q):
    unit = q + 1
    index = next(i for i, t in enumerate(graduated.tiers) if t.up_to is None or unit <= t.up_to)
    tier = graduated.tiers[index]
    first_unit_of_tier = unit == (1 if index == 0 else graduated.tiers[index - 1].up_to + 1)
    step = tier.unit_price / graduated.per + (tier.flat_fee if first_unit_of_tier else 0)
    assert exact_amount(graduated, unit) - exact_amount(graduated, q) == step


@given(prices, pers, quantities)
def test_graduated_with_one_tier_is_flat(price, per, q):
    assert exact_amount(Graduated((Tier(None, price),), per), q) == exact_amount(Flat(price, per), q)


@given(tier_lists(fees=False), pers, quantities, quantities)
def test_graduated_with_falling_rates_is_subadditive_and_never_below_volume(tiers, per, a, b):
    falling = tuple(Tier(t.up_to, p) for t, p in zip(tiers, sorted((t.unit_price for t in tiers), reverse=True)))
    graduated, volume = Graduated(falling, per), Volume(falling, per)
    assert exact_amount(graduated, a + b) <= exact_amount(graduated, a) + exact_amount(graduated, b)
    assert exact_amount(volume, a) <= exact_amount(graduated, a)


@given(st.builds(Volume, tier_lists(), pers), quantities)
def test_volume_prices_all_units_at_the_reached_tier(volume, q):
    tier = next(t for t in volume.tiers if t.up_to is None or q <= t.up_to)
    expected = q * tier.unit_price / volume.per + tier.flat_fee if q else D(0)
    assert exact_amount(volume, q) == expected


@given(st.builds(Package, st.integers(1, 10**6), prices), quantities, quantities)
def test_package_is_monotonic_subadditive_and_whole_packages(package, a, b):
    low, high = sorted((a, b))
    assert exact_amount(package, low) <= exact_amount(package, high)
    assert exact_amount(package, a + b) <= exact_amount(package, a) + exact_amount(package, b)
    packages = -(-a // package.size)
    assert exact_amount(package, a) == packages * package.price


@given(st.integers(0, 1000), st.integers(0, 10**7), st.integers(0, 10**5))
def test_entitlement_billable_falls_as_agents_grow(agents, invocations, per_agent):
    c = charge(Flat(D("0.04")), meter="agent_invocations", model="activity_fixed",
               included_per=Entitlement("active_agents", per_agent))
    fewer = billable_quantity(c, {"active_agents": agents, "agent_invocations": invocations})
    more = billable_quantity(c, {"active_agents": agents + 1, "agent_invocations": invocations})
    assert 0 <= more <= fewer == max(0, invocations - agents * per_agent)
