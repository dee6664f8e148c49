from django.apps import AppConfig


class ProvisioningConfig(AppConfig):
    """Config as code (gateway_apply / gateway_export) and the LiteLLM import: the console layer, above every app."""

    name = "apps.provisioning"
    label = "provisioning"
    verbose_name = "Provisioning"
