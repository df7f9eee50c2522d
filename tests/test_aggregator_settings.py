"""The aggregator's settings from its environment: the insurers it asks come from OSAGO_GATEWAYS."""

from __future__ import annotations

import pytest

from aggregator.settings import AggregatorSettings, GatewayEndpoint
from osago_common.env import SettingsError

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}


def test_gateways_keep_their_order_and_take_the_names_they_are_given() -> None:
    settings = AggregatorSettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAYS": "acme:Acme Insurance=10.0.0.1:50051, alfa:Alfa=10.0.0.2:50051"}
    )
    assert settings.gateways == (
        GatewayEndpoint("acme", "Acme Insurance", "10.0.0.1:50051"),
        GatewayEndpoint("alfa", "Alfa", "10.0.0.2:50051"),
    )


def test_an_unnamed_gateway_takes_the_dev_catalogues_name_else_its_id() -> None:
    settings = AggregatorSettings.from_env(DEV_ENV | {"OSAGO_GATEWAYS": "ingos=h:1,acme=h:2"})
    assert [(g.insurer_id, g.insurer_name) for g in settings.gateways] == [
        ("ingos", "Ingosstrakh"),
        ("acme", "acme"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "OSAGO_GATEWAYS is required"),
        ("alfa", "expected id=host:port"),
        ("alfa=h:1,alfa:Alfa=h:2", "listed twice"),
    ],
)
def test_bad_gateway_lists_are_refused_naming_the_variable(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        AggregatorSettings.from_env(DEV_ENV | {"OSAGO_GATEWAYS": spec})


def test_the_gateway_margin_is_the_settings_own_and_read_from_the_environment() -> None:
    gateways = {"OSAGO_GATEWAYS": "alfa=h:1"}
    assert AggregatorSettings.from_env(DEV_ENV | gateways).gateway_margin_s == 0.1
    assert AggregatorSettings.from_env(DEV_ENV | {**gateways, "OSAGO_GATEWAY_MARGIN_S": "0.3"}).gateway_margin_s == 0.3


def test_the_postgres_pool_size_is_read_and_bounded() -> None:
    gateways = DEV_ENV | {"OSAGO_GATEWAYS": "alfa=h:1"}
    assert AggregatorSettings.from_env(gateways).postgres_pool == 20
    assert AggregatorSettings.from_env(gateways | {"OSAGO_POSTGRES_POOL": "64"}).postgres_pool == 64
    for bad in ("0", "1001"):
        with pytest.raises(SettingsError, match="OSAGO_POSTGRES_POOL must be between 1 and 1000"):
            AggregatorSettings.from_env(gateways | {"OSAGO_POSTGRES_POOL": bad})
