import pytest

from apps.common.redis_target import RedisTarget


@pytest.mark.django_db
def test_live_and_ready_answer_when_dependencies_are_up(client, settings):
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    if settings.REDIS_URL:
        assert ready.json()["checks"]["redis"] == "ok"


@pytest.mark.django_db
def test_ready_is_503_when_redis_is_down(client, settings):
    settings.REDIS_TARGET = RedisTarget.from_url("redis://127.0.0.1:1/0")
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] != "ok"
    assert ready.json()["status"] == "unavailable"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_probes_answer_a_host_that_is_not_allowed(client, settings, path):
    """Kubelet and load balancers probe by pod IP; the image's HEALTHCHECK by 127.0.0.1."""
    settings.ALLOWED_HOSTS = ["gw.example.com"]
    assert client.get(path, HTTP_HOST="10.1.2.3:4000").status_code == 200
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:4000").status_code == 400
    assert client.get(f"{path}/", HTTP_HOST="10.1.2.3:4000").status_code == 400
