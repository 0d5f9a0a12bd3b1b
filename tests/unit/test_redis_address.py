"""Where the orchestrator's Redis is: a plain URL or a Sentinel-named master, one string."""

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.runtime.config import RuntimeConfig
from cr_orchestrator.state import redis_address as ra


def test_a_plain_url_stays_plain_and_asks_no_replica():
    address = ra.parse("redis://10.0.0.5:6379/2")
    assert address == ra.PlainAddress("redis://10.0.0.5:6379/2") and address.min_acks == 0


def test_sentinel_url_round_trips_with_its_defaults():
    address = ra.parse("redis-sentinel://10.0.0.5:26379,10.1.0.5/cr")
    assert address == ra.SentinelAddress((("10.0.0.5", 26379), ("10.1.0.5", 26379)), "cr", 0, 1)
    assert ra.parse(address.text) == address


def test_the_environment_names_sentinels_and_master():
    config = RuntimeConfig.from_environ({"CR_REDIS_SENTINELS": "a:26379, b:26380",
                                         "CR_REDIS_MASTER": "mq"})
    assert ra.parse(config.redis_url) == ra.SentinelAddress((("a", 26379), ("b", 26380)), "mq")


@pytest.mark.parametrize("text, says", [
    ("redis-sentinel://a:26379/", "names no master"),
    ("redis-sentinel://a:x/cr", "not HOST:PORT"),
    ("redis-sentinel:///cr", "names no sentinel"),
    ("redis-sentinel://a/cr?acks=-1", "acks must be 0 or more"),
    ("redis-sentinel://a/cr?db=zero", "whole numbers"),
])
def test_malformed_sentinel_urls_name_the_setting(text, says):
    with pytest.raises(ConfigError, match=says) as caught:
        ra.parse(text, what="--redis-url")
    assert "--redis-url" in str(caught.value)


def test_celery_and_redbeat_both_go_through_the_sentinels():
    conf = ra.celery_settings(ra.parse("redis-sentinel://a:1,b:2/cr?db=3"))
    assert conf["broker_url"] == "sentinel://a:1/3;sentinel://b:2/3"
    assert conf["broker_transport_options"]["master_name"] == "cr"
    assert conf["redbeat_redis_url"].startswith("redis-sentinel://")
    assert conf["redbeat_redis_options"]["sentinels"] == [["a", 1], ["b", 2]]
    assert conf["redbeat_redis_options"]["service_name"] == "cr"
