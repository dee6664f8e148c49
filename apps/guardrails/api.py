"""REST endpoints for guardrail policies (``/api/v1/guardrails/``): thin, over the same service as the admin."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status

from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.services import guardrail_policy_delete, guardrail_policy_set
from apps.keys.models import VirtualKey
from apps.teams.api_base import StrictInputSerializer, TenantViewSet, scoped_fk
from apps.teams.models import Organization, Team
from apps.teams.scoping import VIEW


class GuardrailPolicySerializer(serializers.ModelSerializer):
    scope = serializers.CharField(read_only=True)

    class Meta:
        model = GuardrailPolicy
        fields = ("id", "scope", "organization", "team", "key", "config", "updated_at")
        read_only_fields = fields


class GuardrailPolicyInput(StrictInputSerializer):
    """One scope (the most specific given wins) and its policy; the service validates the policy."""

    organization = scoped_fk(Organization, action=VIEW, required=False, allow_null=True)
    team = scoped_fk(Team, action=VIEW, required=False, allow_null=True)
    key = scoped_fk(VirtualKey, action=VIEW, required=False, allow_null=True)
    config = serializers.JSONField()


class GuardrailPolicyUpdateInput(StrictInputSerializer):
    config = serializers.JSONField()


class GuardrailPolicyViewSet(TenantViewSet):
    """Guardrail policies of organizations, teams and keys (docs/guardrails.md); a bad policy is a 400."""

    model = GuardrailPolicy
    serializer_class = GuardrailPolicySerializer

    def get_queryset(self):
        return super().get_queryset().order_by("organization_id", "team_id", "key_id")

    @extend_schema(request=GuardrailPolicyInput, responses={201: GuardrailPolicySerializer})
    def create(self, request):
        """Set the policy of one scope (created, or replaced when that scope has one)."""
        values = self.validated(GuardrailPolicyInput)
        policy = guardrail_policy_set(actor=self.actor(), **values)
        return self.respond(policy, status.HTTP_201_CREATED)

    @extend_schema(request=GuardrailPolicyUpdateInput, responses=GuardrailPolicySerializer)
    def partial_update(self, request, pk=None):
        policy = self.get_object()
        values = self.validated(GuardrailPolicyUpdateInput, partial=True)
        policy = guardrail_policy_set(
            actor=self.actor(), organization=policy.organization, team=policy.team, key=policy.key, **values
        )
        return self.respond(policy)

    def destroy(self, request, pk=None):
        guardrail_policy_delete(actor=self.actor(), policy=self.get_object())
        return self.no_content()
