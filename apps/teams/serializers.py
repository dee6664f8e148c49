"""API shapes for tenants. Output serializers describe objects; input serializers name what a caller may set."""

from __future__ import annotations

from rest_framework import serializers

from apps.teams.api_base import StrictInputSerializer, scoped_fk
from apps.teams.limits import LIMIT_FIELDS, BudgetDuration
from apps.teams.models import Customer, Membership, ModelAccessGroup, Organization, Role, Team, User

MONEY = {"max_digits": 14, "decimal_places": 6, "min_value": 0, "required": False, "allow_null": True}
CACHE_TTL_MAX = 31_536_000  # a year: longer is surely a mistake (an answer cached for good)
CACHE_TTL_HELP = "Response cache TTL in seconds for identical requests; null: inherit (a key: its team's), 0: off."


class LimitsInput(StrictInputSerializer):
    """The limit and budget fields every tenant level shares (same names everywhere)."""

    rpm_limit = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    tpm_limit = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_parallel_requests = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_budget = serializers.DecimalField(**MONEY)
    soft_budget = serializers.DecimalField(**MONEY)
    budget_duration = serializers.ChoiceField(choices=[("", "none"), *BudgetDuration.choices], required=False)


class ModelNamesField(serializers.ListField):
    child = serializers.CharField(max_length=200)


# --- organizations -------------------------------------------------------------------------------
class OrganizationSerializer(serializers.ModelSerializer):
    models = serializers.JSONField(source="allowed_models", read_only=True)

    class Meta:
        model = Organization
        fields = ("id", "name", "time_zone", "models", *LIMIT_FIELDS, "budget_duration", "blocked", "created_at")
        read_only_fields = fields


class OrganizationInput(LimitsInput):
    name = serializers.CharField(max_length=200)
    time_zone = serializers.CharField(max_length=64, required=False)
    models = ModelNamesField(source="allowed_models", required=False)
    blocked = serializers.BooleanField(required=False)


# --- teams -----------------------------------------------------------------------------------------
class TeamSerializer(serializers.ModelSerializer):
    models = serializers.JSONField(source="allowed_models", read_only=True)

    class Meta:
        model = Team
        fields = (
            "id",
            "organization",
            "name",
            "models",
            *LIMIT_FIELDS,
            "budget_duration",
            "model_limits",
            "session_max_budget",
            "session_max_iterations",
            "budget_clamp_max_tokens",
            "trace_content",
            "cache_ttl_seconds",
            "blocked",
            "created_at",
        )
        read_only_fields = fields


class TeamUpdateInput(LimitsInput):
    name = serializers.CharField(max_length=200, required=False)
    models = ModelNamesField(source="allowed_models", required=False)
    model_limits = serializers.DictField(child=serializers.DictField(), required=False)
    session_max_budget = serializers.DecimalField(**MONEY)
    session_max_iterations = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    budget_clamp_max_tokens = serializers.BooleanField(required=False)
    trace_content = serializers.BooleanField(required=False)
    cache_ttl_seconds = serializers.IntegerField(
        min_value=0, max_value=CACHE_TTL_MAX, required=False, allow_null=True, help_text=CACHE_TTL_HELP
    )
    blocked = serializers.BooleanField(required=False)


class TeamInput(TeamUpdateInput):
    organization = scoped_fk(Organization)
    name = serializers.CharField(max_length=200)


# --- members -----------------------------------------------------------------------------------------
class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "user", "username", "organization", "team", "role", "created_at")
        read_only_fields = fields


class MembershipInput(StrictInputSerializer):
    user = scoped_fk(User)
    team = scoped_fk(Team, required=False, allow_null=True)
    organization = scoped_fk(Organization, required=False, allow_null=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def validate(self, attrs):
        if not attrs.get("team") and not attrs.get("organization"):
            raise serializers.ValidationError({"team": ["give a team, or an organization for an org-wide role."]})
        return attrs


class MembershipUpdateInput(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


# --- users -----------------------------------------------------------------------------------------------
class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = (
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            *LIMIT_FIELDS,
            "budget_duration",
            "date_joined",
        )
        read_only_fields = fields


class UserUpdateInput(LimitsInput):
    email = serializers.EmailField(required=False, allow_blank=True)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)


class UserInput(UserUpdateInput):
    """A new person; tenant admins name the team (or organization) they join, so the person stays in their tenant."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"input_type": "password"}
    )
    team = scoped_fk(Team, required=False, allow_null=True)
    organization = scoped_fk(Organization, required=False, allow_null=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class OffboardInput(StrictInputSerializer):
    organization = scoped_fk(Organization)


class OffboardingSerializer(serializers.Serializer):
    user = serializers.IntegerField(source="user.pk", read_only=True)
    organization = serializers.IntegerField(source="organization.pk", read_only=True)
    memberships_removed = serializers.IntegerField(read_only=True)
    keys_suspended = serializers.IntegerField(read_only=True, help_text="Keys blocked; an admin may unblock them.")


# --- customers (end users of a tenant's app) ------------------------------------------------------------
class CustomerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ("id", "organization", "external_id", *LIMIT_FIELDS, "budget_duration", "blocked", "created_at")
        read_only_fields = fields


class CustomerUpdateInput(LimitsInput):
    blocked = serializers.BooleanField(required=False)


class CustomerInput(CustomerUpdateInput):
    organization = scoped_fk(Organization)
    external_id = serializers.CharField(max_length=255, help_text="The `user` value the client app sends.")


# --- model access groups ----------------------------------------------------------------------------
class AccessGroupSerializer(serializers.ModelSerializer):
    models = serializers.JSONField(source="members", read_only=True)

    class Meta:
        model = ModelAccessGroup
        fields = ("id", "organization", "name", "models", "description", "created_at", "updated_at")
        read_only_fields = fields


class AccessGroupUpdateInput(StrictInputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    models = ModelNamesField(source="members", required=False, help_text="Model names or patterns (claude-*).")
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class AccessGroupInput(AccessGroupUpdateInput):
    name = serializers.CharField(max_length=200)
    models = ModelNamesField(source="members", help_text="Model names or patterns (claude-*, openai/*).")
    organization = scoped_fk(Organization, required=False, allow_null=True, help_text="Empty: shared by all.")
