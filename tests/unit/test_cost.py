import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from batchspot.cost import Given, what_if
from batchspot.cost.attempts import Attempt
from batchspot.cost.prices import (
    AttemptCost,
    OnDemandPrices,
    effective_price,
    offline_table,
    price_attempts,
)
from batchspot.cost.report import render_table, saving, totals, write_chart

T0 = datetime(2017, 3, 1, 12, 0, tzinfo=UTC)


def writeup_attempt() -> Attempt:
    return Attempt("job:0", 1, T0, T0 + timedelta(seconds=625), instance_type="c4.4xlarge")


def test_reproduces_the_original_write_up_figures():
    cost = AttemptCost(writeup_attempt(), spot_per_hour=0.2526, ondemand_per_hour=0.7960)
    assert f"{cost.ondemand:.4f}" == "0.1382"
    assert f"{cost.spot:.4f}" == "0.0439"
    assert f"{saving(cost.spot, cost.ondemand):.0%}" == "68%"


def test_offline_table_has_the_write_up_on_demand_price_and_its_provenance():
    table = offline_table()
    assert table["regions"]["us-east-1"]["c4.4xlarge"] == 0.796
    assert table["source"] and table["as_of"]


def test_table_totals_leave_out_unpriced_attempts_and_say_so():
    unknown = Attempt("job:1", 1, T0, T0 + timedelta(seconds=100))
    costs = [AttemptCost(writeup_attempt(), 0.2526, 0.796), AttemptCost(unknown, None, None)]
    assert totals(costs)[2] == 1
    text = render_table(costs, "offline table")
    assert "1 of 2 attempts priced: On-Demand 0.1382 $ vs Spot 0.0439 $, 68% saved" in text
    assert "unpriced attempts" in text


def test_effective_price_weights_each_price_by_the_time_it_held():
    history = [(T0 - timedelta(hours=1), 0.30), (T0 + timedelta(seconds=600), 0.10)]
    # 600 s at 0.30 then 300 s at 0.10
    price = effective_price(history, T0, T0 + timedelta(seconds=900))
    assert price == pytest.approx((600 * 0.30 + 300 * 0.10) / 900)


def test_effective_price_of_an_instant_is_the_price_in_effect_then():
    history = [
        (T0 - timedelta(hours=2), 0.5),
        (T0 - timedelta(hours=1), 0.2),
        (T0 + timedelta(hours=1), 0.9),
    ]
    assert effective_price(history, T0, T0) == 0.2
    assert effective_price([], T0, T0) is None


def no_ec2():
    pytest.fail("the EC2 client was made though the Spot price was given")


def test_given_spot_price_is_used_for_every_attempt():
    attempts = [writeup_attempt(), writeup_attempt()]
    costs = price_attempts(no_ec2, lambda _: 0.796, attempts, 0.2526)
    assert [(c.spot_per_hour, c.ondemand_per_hour) for c in costs] == [(0.2526, 0.796)] * 2


class NoCalls:
    """A client that fails the test on any AWS call (making one is free: no request)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, operation: str):
        pytest.fail(f"the what-if called {self.service}.{operation}")


def test_a_what_if_with_its_spot_price_makes_no_aws_call():
    report = what_if(
        lambda service, **_: NoCalls(service),
        seconds=625,
        region=None,
        given=Given(instance_type="c4.4xlarge", spot_per_hour=0.2526),
    )
    assert report.render().splitlines()[-1] == (
        "1 of 1 attempts priced: On-Demand 0.1382 $ vs Spot 0.0439 $, 68% saved "
        "(On-Demand prices: offline table)"
    )


def _pricing_client():
    return boto3.client(
        "pricing",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )


def test_on_demand_price_is_read_from_the_price_list_api():
    pricing = _pricing_client()
    product = {
        "product": {"attributes": {"instanceType": "c4.4xlarge"}},
        "terms": {
            "OnDemand": {
                "T1": {
                    "priceDimensions": {
                        "D1": {"unit": "Hrs", "pricePerUnit": {"USD": "0.7960000000"}}
                    }
                }
            }
        },
    }
    with Stubber(pricing) as stub:
        stub.add_response("get_products", {"PriceList": [json.dumps(product)]})
        prices = OnDemandPrices(pricing, "us-east-1")
        assert prices("c4.4xlarge") == 0.796
        assert prices("c4.4xlarge") == 0.796  # remembered: the stub holds one answer only
    assert prices.source == "pricing-api"


def test_unreachable_price_list_api_falls_back_to_the_offline_table_and_is_not_asked_again():
    pricing = _pricing_client()
    with Stubber(pricing) as stub:
        stub.add_client_error("get_products", "500", http_status_code=500)
        prices = OnDemandPrices(pricing, "us-east-1")
        assert prices("c4.4xlarge") == 0.796
        assert prices("m5.large") == 0.096  # a second API call would fail the stub
    assert prices.source == "offline table"
    assert prices("x9.huge") is None


def test_chart_is_a_png(tmp_path):
    path = write_chart([AttemptCost(writeup_attempt(), 0.2526, 0.796)], tmp_path / "cost.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
