"""REST endpoints for virtual keys and API tokens. The secret is in the 201 (or rotate) answer and nowhere else."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action

from apps.keys import schema as _schema  # noqa: F401  (registers the auth schemes)
from apps.keys import serializers as s
from apps.keys import services
from apps.keys.models import ApiToken, VirtualKey
from apps.keys.selectors import KEY_STATUSES, keys_allowing_model, keys_with_status
from apps.teams.api_base import TenantViewSet

KEY_FILTERS = [
    OpenApiParameter("team", int, description="Only keys of this team."),
    OpenApiParameter("user", int, description="Only keys owned by this user."),
    OpenApiParameter("status", str, enum=list(KEY_STATUSES)),
    OpenApiParameter("model", str, description="Only keys that may use this model."),
]


class KeyViewSet(TenantViewSet):
    model = VirtualKey
    serializer_class = s.KeySerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        for name in ("team", "user"):
            value = self.query_id(name)
            if value is not None:
                queryset = queryset.filter(**{f"{name}_id": value})
        queryset = keys_with_status(queryset, self.query_text("status"))
        return keys_allowing_model(queryset, self.query_text("model"))

    @extend_schema(parameters=KEY_FILTERS)
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.KeyInput, responses={201: s.IssuedKeySerializer})
    def create(self, request):
        values = self.validated(s.KeyInput)
        issued = services.key_create(
            actor=self.actor(), team=values.pop("team"), user=values.pop("user", None), **values
        )
        return self.respond(issued.key, status.HTTP_201_CREATED, key=issued.secret)

    @extend_schema(request=s.KeyUpdateInput, responses=s.KeySerializer)
    def partial_update(self, request, pk=None):
        key = self.get_object()
        values = self.validated(s.KeyUpdateInput, partial=True)
        return self.respond(services.key_update(actor=self.actor(), key=key, **values))

    @extend_schema(request=None, responses=s.KeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        return self.respond(services.key_revoke(actor=self.actor(), key=self.get_object()))

    @extend_schema(request=None, responses=s.IssuedKeySerializer)
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        issued = services.key_rotate(actor=self.actor(), key=self.get_object())
        return self.respond(issued.key, key=issued.secret)

    @extend_schema(request=None, responses=s.KeySerializer)
    @action(detail=True, methods=["post"])
    def block(self, request, pk=None):
        return self.respond(services.key_set_blocked(actor=self.actor(), key=self.get_object(), blocked=True))

    @extend_schema(request=None, responses=s.KeySerializer)
    @action(detail=True, methods=["post"])
    def unblock(self, request, pk=None):
        return self.respond(services.key_set_blocked(actor=self.actor(), key=self.get_object(), blocked=False))


class ApiTokenViewSet(TenantViewSet):
    """Your own API tokens (superusers: everyone's). Delete one to revoke it."""

    model = ApiToken
    serializer_class = s.ApiTokenSerializer
    http_method_names = ["get", "post", "delete", "head", "options"]

    @extend_schema(request=s.ApiTokenInput, responses={201: s.IssuedApiTokenSerializer})
    def create(self, request):
        values = self.validated(s.ApiTokenInput)
        owner = values.pop("user", None) or request.user
        if not getattr(owner, "pk", None):
            raise ValidationError({"user": "the master key has no user of its own: name the token's user."})
        token, secret = services.api_token_create(actor=self.actor(), user=owner, **values)
        return self.respond(token, status.HTTP_201_CREATED, token=secret)

    def destroy(self, request, pk=None):
        services.api_token_delete(actor=self.actor(), token=self.get_object())
        return self.no_content()
