"""Provider credentials are encrypted at rest and survive a key rotation."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from apps.monitoring.models import AlertChannel
from apps.monitoring.services import alert_channel_save
from apps.proxy.crypto import decrypt
from apps.proxy.models import ModelDeployment
from apps.sinks.models import LogSink
from apps.teams.audit import Actor
from tests.factories import DeploymentFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


def test_credentials_are_stored_encrypted_and_decrypt_back(settings):
    settings.GATEWAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    deployment = DeploymentFactory()
    deployment.set_credentials("sk-provider-secret-123")
    deployment.save()
    stored = ModelDeployment.objects.values_list("credentials_encrypted", flat=True).get(pk=deployment.pk)
    assert "sk-provider-secret-123" not in stored
    assert ModelDeployment.objects.get(pk=deployment.pk).get_credentials() == "sk-provider-secret-123"


def test_rotation_re_encrypts_with_the_newest_key_so_the_old_one_can_go(settings, capsys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_ENCRYPTION_KEYS = [old]
    deployment = DeploymentFactory()
    deployment.set_credentials("sk-provider-secret-456")
    deployment.save()
    DeploymentFactory(model_name="no-credentials")
    sink = LogSink(organization=OrganizationFactory(), kind="http", name="hook", url="https://hooks.example.com/")
    sink.set_secret("whsec-sink-secret")
    sink.save()

    settings.GATEWAY_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_credentials")
    assert "1 deployment(s) and 1 log sink(s)" in capsys.readouterr().out

    settings.GATEWAY_ENCRYPTION_KEYS = [new]
    assert ModelDeployment.objects.get(pk=deployment.pk).get_credentials() == "sk-provider-secret-456"
    assert LogSink.objects.get(pk=sink.pk).get_secret() == "whsec-sink-secret"


def test_rotation_without_the_old_key_fails_loudly_and_changes_nothing(settings):
    settings.GATEWAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    deployment = DeploymentFactory()
    deployment.set_credentials("sk-provider-secret-789")
    deployment.save()
    before = ModelDeployment.objects.get(pk=deployment.pk).credentials_encrypted
    settings.GATEWAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match=f"deployment {deployment.pk}"):
        call_command("rotate_credentials")
    assert ModelDeployment.objects.get(pk=deployment.pk).credentials_encrypted == before


def test_rotation_covers_alert_channel_urls(settings, capsys, olga, acme):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_ENCRYPTION_KEYS = [old]
    channel = alert_channel_save(
        actor=Actor(olga), url="https://hooks.slack.test/T0/B0/xyz", name="ops", kind="slack", organization=acme
    )
    settings.GATEWAY_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_credentials")
    assert "1 alert channel(s)" in capsys.readouterr().out
    settings.GATEWAY_ENCRYPTION_KEYS = [new]
    assert decrypt(AlertChannel.objects.get(pk=channel.pk).url_encrypted) == "https://hooks.slack.test/T0/B0/xyz"
