"""The one place that turns the environment into a Redis target: URL or sentinels, and what each library gets."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.common.redis_target import RedisTarget, redis_target, redis_target_from_env, redis_targets_from_env

REDIS_VARS = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_PASSWORD", "REDIS_USERNAME")
REDIS_VARS += ("REDIS_SENTINEL_PASSWORD", "REDIS_DB")


@pytest.fixture
def env(monkeypatch):
    for name in REDIS_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> RedisTarget | None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return redis_target_from_env()

    return set_env


def test_nothing_set_is_no_redis_and_a_url_is_one_server(env):
    assert env() is None
    target = env(REDIS_URL="redis://:s3cret@cache:6380/2")
    assert target.url == "redis://:s3cret@cache:6380/2" and not target.is_sentinel
    assert str(target) == "redis://cache:6380/2"  # logs never carry the password
    assert target.celery_broker() == ("redis://:s3cret@cache:6380/2", {})
    assert target.channel_layer_host() == "redis://:s3cret@cache:6380/2"


def test_sentinels_with_passwords_and_db(env):
    target = env(
        REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2, [::1]:26380",
        REDIS_SENTINEL_MASTER="mymaster",
        REDIS_PASSWORD="p@ss/word",
        REDIS_SENTINEL_PASSWORD="sentinel-secret",
        REDIS_DB="3",
    )
    assert target.is_sentinel
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert target.master == "mymaster" and target.db == 3
    assert "p@ss" not in str(target) and "sentinel-secret" not in repr(target)
    url, options = target.celery_broker()
    assert url.split(";") == [
        "sentinel://:p%40ss%2Fword@10.0.0.1:26379/3",
        "sentinel://:p%40ss%2Fword@10.0.0.2:26379/3",
        "sentinel://:p%40ss%2Fword@::1:26380/3",
    ]
    assert options == {"master_name": "mymaster", "sentinel_kwargs": {"password": "sentinel-secret"}}
    assert target.channel_layer_host() == {
        "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)],
        "master_name": "mymaster",
        "db": 3,
        "password": "p@ss/word",
        "sentinel_kwargs": {"password": "sentinel-secret"},
    }


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"REDIS_SENTINELS": "h:26379"}, "needs REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "without REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://h"}, "not both"),
        ({"REDIS_SENTINELS": "h:abc", "REDIS_SENTINEL_MASTER": "m"}, "not a number"),
        ({"REDIS_SENTINELS": "h:70000", "REDIS_SENTINEL_MASTER": "m"}, "outside 1-65535"),
        ({"REDIS_SENTINELS": ":26379", "REDIS_SENTINEL_MASTER": "m"}, "is not host:port"),
        ({"REDIS_URL": "localhost:6379"}, "must start with redis://"),
        ({"REDIS_SENTINELS": "h", "REDIS_SENTINEL_MASTER": "m", "REDIS_DB": "-1"}, "below the minimum"),
    ],
)
def test_a_wrong_configuration_is_refused_with_what_to_fix(env, values, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        env(**values)


def test_callers_may_hold_a_url_a_target_or_nothing():
    target = RedisTarget(sentinels=(("h", 1),), master="m")
    assert redis_target(target) is target
    assert redis_target("redis://h:1/0") == RedisTarget(url="redis://h:1/0")
    assert redis_target("") is None and redis_target(None) is None


@pytest.fixture
def cluster_env(env, monkeypatch):
    for name in ("REDIS_CLUSTER_NODES", "REDIS_CLUSTER_TLS"):
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return redis_targets_from_env()

    return set_env


def test_a_cluster_serves_the_gateways_clients_and_the_url_the_libraries_without_cluster_support(cluster_env):
    assert cluster_env(REDIS_URL="redis://broker:6379/0") == (RedisTarget(url="redis://broker:6379/0"),) * 2
    target, broker = cluster_env(
        REDIS_CLUSTER_NODES="10.0.0.1:7000, 10.0.0.2, [::1]:7002", REDIS_PASSWORD="s3cret", REDIS_CLUSTER_TLS="true"
    )
    assert target.is_cluster and not target.is_sentinel and target.tls
    assert target.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert str(target) == "cluster via 10.0.0.1:7000,10.0.0.2:6379,::1:7002" and "s3cret" not in repr(target)
    assert broker == RedisTarget(url="redis://broker:6379/0")
    # Celery's broker and the channel layer cannot be pointed at the cluster by mistake.
    with pytest.raises(ImproperlyConfigured, match="cannot use a Redis Cluster"):
        target.celery_broker()
    with pytest.raises(ImproperlyConfigured, match="cannot use a Redis Cluster"):
        target.channel_layer_host()


def test_a_cluster_without_a_server_for_celery_is_refused(cluster_env, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ImproperlyConfigured, match="REDIS_CLUSTER_NODES needs REDIS_URL"):
        cluster_env(REDIS_CLUSTER_NODES="10.0.0.1:7000")
    with pytest.raises(ImproperlyConfigured, match="not a number"):
        cluster_env(REDIS_CLUSTER_NODES="10.0.0.1:x", REDIS_URL="redis://broker")
