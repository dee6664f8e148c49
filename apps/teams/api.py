"""REST endpoints for tenants and access groups: input serializer -> service -> output serializer."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.teams import access, services
from apps.teams import serializers as s
from apps.teams.api_base import TenantViewSet
from apps.teams.models import Customer, Membership, ModelAccessGroup, Organization, Team, User


class OrganizationViewSet(TenantViewSet):
    model = Organization
    serializer_class = s.OrganizationSerializer

    @extend_schema(request=s.OrganizationInput, responses={201: s.OrganizationSerializer})
    def create(self, request):
        values = self.validated(s.OrganizationInput)
        org = services.organization_create(actor=self.actor(), name=values.pop("name"), **values)
        return self.respond(org, status.HTTP_201_CREATED)

    @extend_schema(request=s.OrganizationInput, responses=s.OrganizationSerializer)
    def partial_update(self, request, pk=None):
        org = self.get_object()
        values = self.validated(s.OrganizationInput, partial=True)
        return self.respond(services.organization_update(actor=self.actor(), organization=org, **values))


class TeamViewSet(TenantViewSet):
    model = Team
    serializer_class = s.TeamSerializer

    def get_queryset(self):
        queryset = super().get_queryset().select_related("organization")
        organization = self.query_id("organization")
        return queryset if organization is None else queryset.filter(organization_id=organization)

    @extend_schema(request=s.TeamInput, responses={201: s.TeamSerializer})
    def create(self, request):
        values = self.validated(s.TeamInput)
        team = services.team_create(
            actor=self.actor(), organization=values.pop("organization"), name=values.pop("name"), **values
        )
        return self.respond(team, status.HTTP_201_CREATED)

    @extend_schema(request=s.TeamUpdateInput, responses=s.TeamSerializer)
    def partial_update(self, request, pk=None):
        team = self.get_object()
        values = self.validated(s.TeamUpdateInput, partial=True)
        return self.respond(services.team_update(actor=self.actor(), team=team, **values))


class MembershipViewSet(TenantViewSet):
    """People's roles in teams (or whole organizations, with no team)."""

    model = Membership
    serializer_class = s.MembershipSerializer

    def get_queryset(self):
        queryset = super().get_queryset().select_related("user", "organization", "team")
        team = self.query_id("team")
        return queryset if team is None else queryset.filter(team_id=team)

    @extend_schema(request=s.MembershipInput, responses={201: s.MembershipSerializer})
    def create(self, request):
        values = self.validated(s.MembershipInput)
        team = values.get("team")
        organization = team.organization if team else values["organization"]
        membership = services.membership_create(
            actor=self.actor(), user=values["user"], organization=organization, team=team, role=values["role"]
        )
        return self.respond(membership, status.HTTP_201_CREATED)

    @extend_schema(request=s.MembershipUpdateInput, responses=s.MembershipSerializer)
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        values = self.validated(s.MembershipUpdateInput, partial=False)
        return self.respond(services.membership_update(actor=self.actor(), membership=membership, **values))

    def destroy(self, request, pk=None):
        services.membership_delete(actor=self.actor(), membership=self.get_object())
        return self.no_content()


class UserViewSet(TenantViewSet):
    model = User
    serializer_class = s.UserSerializer

    def get_queryset(self):
        return super().get_queryset().order_by("username")

    @extend_schema(request=s.UserInput, responses={201: s.UserSerializer})
    def create(self, request):
        values = self.validated(s.UserInput)
        user = services.user_create_with_membership(
            actor=self.actor(), username=values.pop("username"), password=values.pop("password", None), **values
        )
        return self.respond(user, status.HTTP_201_CREATED)

    @extend_schema(request=s.UserUpdateInput, responses=s.UserSerializer)
    def partial_update(self, request, pk=None):
        user = self.get_object()
        values = self.validated(s.UserUpdateInput, partial=True)
        return self.respond(services.user_update(actor=self.actor(), user=user, **values))

    @extend_schema(request=s.OffboardInput, responses=s.OffboardingSerializer)
    @action(detail=True, methods=["post"])
    def offboard(self, request, pk=None):
        """Remove the person from every team (and org-wide role) of ``organization``; their keys there are blocked."""
        user = self.get_object()
        values = self.validated(s.OffboardInput)
        result = services.user_offboard(actor=self.actor(), user=user, organization=values["organization"])
        return Response(s.OffboardingSerializer(result).data)


class CustomerViewSet(TenantViewSet):
    """End users of a tenant's app (the `user` field clients send), with their own limits and budget."""

    model = Customer
    serializer_class = s.CustomerSerializer

    def get_queryset(self):
        queryset = super().get_queryset().order_by("organization_id", "external_id")
        external_id = self.query_text("external_id")
        return queryset.filter(external_id=external_id) if external_id else queryset

    @extend_schema(request=s.CustomerInput, responses={201: s.CustomerSerializer})
    def create(self, request):
        """Create or update the customer with this ``external_id`` in the organization."""
        values = self.validated(s.CustomerInput)
        customer = services.customer_upsert(actor=self.actor(), **values)
        return self.respond(customer, status.HTTP_201_CREATED)

    @extend_schema(request=s.CustomerUpdateInput, responses=s.CustomerSerializer)
    def partial_update(self, request, pk=None):
        customer = self.get_object()
        values = self.validated(s.CustomerUpdateInput, partial=True)
        customer = services.customer_upsert(
            actor=self.actor(), organization=customer.organization, external_id=customer.external_id, **values
        )
        return self.respond(customer)


class AccessGroupViewSet(TenantViewSet):
    """Named sets of models (names or patterns) that keys, teams and organizations list instead of models."""

    model = ModelAccessGroup
    serializer_class = s.AccessGroupSerializer

    def get_queryset(self):
        queryset = super().get_queryset().order_by("organization_id", "name")
        name = self.query_text("name")
        return queryset.filter(name=name) if name else queryset

    @extend_schema(request=s.AccessGroupInput, responses={201: s.AccessGroupSerializer})
    def create(self, request):
        values = self.validated(s.AccessGroupInput)
        group = access.access_group_create(actor=self.actor(), organization=values.pop("organization", None), **values)
        return self.respond(group, status.HTTP_201_CREATED)

    @extend_schema(request=s.AccessGroupUpdateInput, responses=s.AccessGroupSerializer)
    def partial_update(self, request, pk=None):
        group = self.get_object()
        values = self.validated(s.AccessGroupUpdateInput, partial=True)
        return self.respond(access.access_group_update(actor=self.actor(), group=group, **values))

    def destroy(self, request, pk=None):
        access.access_group_delete(actor=self.actor(), group=self.get_object())
        return self.no_content()
