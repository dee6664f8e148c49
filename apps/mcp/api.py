"""REST endpoints for MCP servers and grants (/api/v1/mcp/servers/, /api/v1/mcp/grants/).

``headers`` go in, are encrypted, and never come back out: responses say "set" or "not set".
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status

from apps.keys.models import VirtualKey
from apps.mcp import services
from apps.mcp.models import McpGrant, McpServer, Transport
from apps.teams.api_base import StrictInputSerializer, TenantViewSet, scoped_fk
from apps.teams.models import Organization, Team

PRICE = {"max_digits": 14, "decimal_places": 6, "min_value": 0, "required": False, "allow_null": True}


class McpServerSerializer(serializers.ModelSerializer):
    headers = serializers.SerializerMethodField(help_text='"set" or "not set"; the headers are never returned.')

    class Meta:
        model = McpServer
        fields = ("id", "organization", *services.SERVER_SETTABLE, "headers", "created_at", "updated_at")
        read_only_fields = fields

    def get_headers(self, obj) -> str:
        return "set" if obj.has_headers else "not set"


class McpServerUpdateInput(StrictInputSerializer):
    name = serializers.CharField(max_length=64, required=False)
    transport = serializers.ChoiceField(choices=Transport.choices, required=False)
    url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    command = serializers.CharField(max_length=500, required=False, allow_blank=True)
    args = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False)
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        write_only=True,
        required=False,
        allow_null=True,
        help_text="Write-only. Omit (or null) to keep the stored headers; {} removes them.",
    )
    price_per_call = serializers.DecimalField(**PRICE)
    tool_prices = serializers.DictField(required=False)
    timeout_seconds = serializers.FloatField(required=False)
    enabled = serializers.BooleanField(required=False)


class McpServerInput(McpServerUpdateInput):
    name = serializers.CharField(max_length=64)
    organization = scoped_fk(Organization)


class McpServerViewSet(TenantViewSet):
    model = McpServer
    serializer_class = McpServerSerializer

    @extend_schema(request=McpServerInput, responses={201: McpServerSerializer})
    def create(self, request):
        values = self.validated(McpServerInput)
        server = services.mcp_server_create(actor=self.actor(), organization=values.pop("organization"), **values)
        return self.respond(server, status.HTTP_201_CREATED)

    @extend_schema(request=McpServerUpdateInput, responses=McpServerSerializer)
    def partial_update(self, request, pk=None):
        server = self.get_object()
        values = self.validated(McpServerUpdateInput, partial=True)
        return self.respond(services.mcp_server_update(actor=self.actor(), server=server, **values))

    def destroy(self, request, pk=None):
        services.mcp_server_delete(actor=self.actor(), server=self.get_object())
        return self.no_content()


class McpGrantSerializer(serializers.ModelSerializer):
    class Meta:
        model = McpGrant
        fields = ("id", "organization", "server", "team", "key", *services.GRANT_SETTABLE, "created_at", "updated_at")
        read_only_fields = fields


class McpGrantUpdateInput(StrictInputSerializer):
    all_tools = serializers.BooleanField(required=False)
    tools = serializers.ListField(child=serializers.CharField(), required=False)
    tool_calls_per_minute = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_parallel_tool_calls = serializers.IntegerField(min_value=0, required=False, allow_null=True)


class McpGrantInput(McpGrantUpdateInput):
    server = scoped_fk(McpServer)
    team = scoped_fk(Team, required=False, allow_null=True)
    key = scoped_fk(VirtualKey, required=False, allow_null=True)


class McpGrantViewSet(TenantViewSet):
    model = McpGrant
    serializer_class = McpGrantSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        server = self.query_id("server")
        return queryset.filter(server_id=server) if server is not None else queryset

    @extend_schema(request=McpGrantInput, responses={201: McpGrantSerializer})
    def create(self, request):
        values = self.validated(McpGrantInput)
        grant = services.mcp_grant_create(actor=self.actor(), **values)
        return self.respond(grant, status.HTTP_201_CREATED)

    @extend_schema(request=McpGrantUpdateInput, responses=McpGrantSerializer)
    def partial_update(self, request, pk=None):
        grant = self.get_object()
        values = self.validated(McpGrantUpdateInput, partial=True)
        return self.respond(services.mcp_grant_update(actor=self.actor(), grant=grant, **values))

    def destroy(self, request, pk=None):
        services.mcp_grant_delete(actor=self.actor(), grant=self.get_object())
        return self.no_content()
