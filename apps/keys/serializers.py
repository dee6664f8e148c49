"""API shapes for virtual keys and API tokens. Secrets appear only in the create/rotate answers."""

from __future__ import annotations

from rest_framework import serializers

from apps.keys.models import ApiToken, VirtualKey
from apps.teams.api_base import StrictInputSerializer, scoped_fk
from apps.teams.limits import LIMIT_FIELDS
from apps.teams.models import Team, User
from apps.teams.serializers import CACHE_TTL_HELP, CACHE_TTL_MAX, MONEY, LimitsInput, ModelNamesField


class KeySerializer(serializers.ModelSerializer):
    models = serializers.JSONField(source="allowed_models", read_only=True)
    status = serializers.CharField(read_only=True)

    class Meta:
        model = VirtualKey
        fields = (
            "id",
            "alias",
            "prefix",
            "status",
            "organization",
            "team",
            "user",
            "models",
            *LIMIT_FIELDS,
            "budget_duration",
            "model_limits",
            "metadata",
            "priority",
            "session_max_budget",
            "session_max_iterations",
            "budget_clamp_max_tokens",
            "cache_ttl_seconds",
            "expires_at",
            "blocked",
            "revoked_at",
            "last_used_at",
            "created_at",
        )
        read_only_fields = fields


class IssuedKeySerializer(KeySerializer):
    """The create/rotate answer: the key plus its secret, this once."""

    key = serializers.CharField(read_only=True, help_text="The secret. Shown only in this response.")

    class Meta(KeySerializer.Meta):
        fields = ("key", *KeySerializer.Meta.fields)
        read_only_fields = fields


class KeyUpdateInput(LimitsInput):
    """What may change on an existing key. ``team`` and ``user`` are not here: a key never moves."""

    alias = serializers.CharField(max_length=200, required=False, allow_blank=True)
    models = ModelNamesField(source="allowed_models", required=False)
    model_limits = serializers.DictField(child=serializers.DictField(), required=False)
    metadata = serializers.DictField(required=False)
    priority = serializers.IntegerField(min_value=0, max_value=32767, required=False)
    session_max_budget = serializers.DecimalField(**MONEY)
    session_max_iterations = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    budget_clamp_max_tokens = serializers.BooleanField(required=False)
    cache_ttl_seconds = serializers.IntegerField(
        min_value=0, max_value=CACHE_TTL_MAX, required=False, allow_null=True, help_text=CACHE_TTL_HELP
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class KeyInput(KeyUpdateInput):
    team = scoped_fk(Team)
    user = scoped_fk(User, required=False, allow_null=True)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ("id", "name", "prefix", "user", "created_at", "last_used_at", "expires_at")
        read_only_fields = fields


class IssuedApiTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret. Shown only in this response.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ("token", *ApiTokenSerializer.Meta.fields)
        read_only_fields = fields


class ApiTokenInput(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    user = scoped_fk(User, required=False, help_text="Superusers only; default: yourself.")
