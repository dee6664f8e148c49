import pytest


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
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] != "ok"
    assert ready.json()["status"] == "unavailable"
