"""REST endpoints for model deployments. ``api_key`` goes in, is encrypted, and never comes back out."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from apps.proxy import services
from apps.proxy.models import ModelDeployment, Provider
from apps.proxy.selectors import model_prices
from apps.teams.api_base import StrictInputSerializer, TenantViewSet, scoped_fk
from apps.teams.models import Organization

PRICE = {"max_digits": 20, "decimal_places": 12, "min_value": 0, "required": False, "allow_null": True}


class DeploymentSerializer(serializers.ModelSerializer):
    credentials = serializers.SerializerMethodField(help_text='"set" or "not set"; the key itself is never returned.')

    class Meta:
        model = ModelDeployment
        fields = ("id", *services.DEPLOYMENT_SETTABLE, "credentials", "organization", "created_at", "updated_at")
        read_only_fields = fields

    def get_credentials(self, obj) -> str:
        return "set" if obj.has_credentials else "not set"


class DeploymentUpdateInput(StrictInputSerializer):
    model_name = serializers.CharField(max_length=200, required=False)
    provider = serializers.ChoiceField(choices=Provider.choices, required=False)
    model = serializers.CharField(max_length=200, required=False)
    api_base = serializers.CharField(max_length=500, required=False, allow_blank=True)
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text='Write-only. Omit (or null) to keep the stored key; "" removes it.',
    )
    api_version = serializers.CharField(max_length=40, required=False, allow_blank=True)
    region = serializers.CharField(max_length=40, required=False, allow_blank=True)
    input_cost_per_token = serializers.DecimalField(**PRICE)
    output_cost_per_token = serializers.DecimalField(**PRICE)
    cached_input_cost_per_token = serializers.DecimalField(**PRICE)
    cache_creation_input_token_cost = serializers.DecimalField(**PRICE)
    rpm_limit = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    tpm_limit = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_parallel_requests = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    weight = serializers.IntegerField(min_value=0, required=False)
    priority = serializers.IntegerField(min_value=0, max_value=32767, required=False)
    timeout_seconds = serializers.FloatField(min_value=0, required=False, allow_null=True)
    extra = serializers.DictField(required=False)
    enabled = serializers.BooleanField(required=False)


class DeploymentInput(DeploymentUpdateInput):
    model_name = serializers.CharField(max_length=200)
    provider = serializers.ChoiceField(choices=Provider.choices)
    model = serializers.CharField(max_length=200)
    organization = scoped_fk(Organization, required=False, allow_null=True, help_text="Empty: shared by all.")


class DeploymentViewSet(TenantViewSet):
    model = ModelDeployment
    serializer_class = DeploymentSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        model_name = self.query_text("model_name")
        return queryset.filter(model_name=model_name) if model_name else queryset

    @extend_schema(request=DeploymentInput, responses={201: DeploymentSerializer})
    def create(self, request):
        values = self.validated(DeploymentInput)
        deployment = services.deployment_create(
            actor=self.actor(), organization=values.pop("organization", None), **values
        )
        return self.respond(deployment, status.HTTP_201_CREATED)

    @extend_schema(request=DeploymentUpdateInput, responses=DeploymentSerializer)
    def partial_update(self, request, pk=None):
        deployment = self.get_object()
        values = self.validated(DeploymentUpdateInput, partial=True)
        return self.respond(services.deployment_update(actor=self.actor(), deployment=deployment, **values))

    def destroy(self, request, pk=None):
        services.deployment_delete(actor=self.actor(), deployment=self.get_object())
        return self.no_content()


class ModelPriceSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    input_cost_per_token = serializers.DecimalField(max_digits=20, decimal_places=12, allow_null=True)
    output_cost_per_token = serializers.DecimalField(max_digits=20, decimal_places=12, allow_null=True)
    cached_input_cost_per_token = serializers.DecimalField(max_digits=20, decimal_places=12, allow_null=True)


class ModelPriceViewSet(viewsets.ViewSet):
    """Models your teams' keys can call and what they cost per token (USD, the highest among deployments).

    Everyone in a team may read it; deployments themselves (upstreams, settings) are for admins.
    """

    @extend_schema(responses=ModelPriceSerializer(many=True))
    def list(self, request):
        return Response(ModelPriceSerializer(model_prices(user=request.user), many=True).data)
