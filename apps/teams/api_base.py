"""Shared pieces of the provisioning API: tenant-scoped viewsets, strict input, service errors as 4xx.

Every viewset reads through ``.restrict(request.user, "view")``, so an object outside the caller's
tenant is a 404. Writes go to services, which raise ``PermissionDenied`` (403: visible but not yours
to change) or ``ValidationError`` (400 with field messages).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.teams.audit import Actor, actor_from_request
from apps.teams.scoping import VIEW

logger = logging.getLogger(__name__)


def api_exception_handler(exc, context):
    """DRF's handler, plus Django's ValidationError as 400 and integrity conflicts as 400 (never a 500)."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, IntegrityError):
        logger.info("API write refused by a database constraint: %s", exc.__class__.__name__)
        exc = exceptions.ValidationError({"non_field_errors": ["conflicts with an existing object."]})
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    return drf_exception_handler(exc, context)


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not declare (or declares read-only): no silent mass assignment."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["this field cannot be set here."] for name in unknown})
        return super().to_internal_value(data)


class ScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key the caller may only point at objects they can see ("does not exist" otherwise)."""

    def __init__(self, model=None, action: str = VIEW, **kwargs):
        self.scoped_model = model
        self.scoped_action = action
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return self.scoped_model._default_manager.restrict(user, self.scoped_action)


def scoped_fk(model, **kwargs) -> ScopedPrimaryKeyRelatedField:
    # DRF asserts a queryset on writable related fields; the real one is built per request in get_queryset.
    return ScopedPrimaryKeyRelatedField(model=model, queryset=model._default_manager.none(), **kwargs)


class TenantViewSet(viewsets.GenericViewSet):
    """Read through the choke point; write through services (subclasses); no PUT (PATCH only)."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    model = None
    input_serializer_class: type[serializers.Serializer] | None = None
    update_serializer_class: type[serializers.Serializer] | None = None

    def get_queryset(self):
        return self.model._default_manager.restrict(self.request.user, VIEW)

    def get_exception_handler(self):
        return api_exception_handler

    def query_id(self, name: str) -> int | None:
        """An id from the query string, or None; anything but plain ASCII digits is a 400, never a 500."""
        value = self.request.query_params.get(name)
        if value is None or value == "":
            return None
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise exceptions.ValidationError({name: "must be an id."})
        return int(value)

    def query_text(self, name: str, *, max_length: int = 255) -> str | None:
        """A text filter from the query string, or None; NUL bytes and overlong values are a 400."""
        value = self.request.query_params.get(name)
        if not value:
            return None
        if "\x00" in value or len(value) > max_length:
            raise exceptions.ValidationError({name: f"must be text of at most {max_length} characters."})
        return value

    def actor(self) -> Actor:
        return actor_from_request(self.request, "api")

    def validated(self, serializer_class, *, partial: bool = False) -> dict:
        serializer = serializer_class(data=self.request.data, partial=partial, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def respond(self, obj, status_code: int = status.HTTP_200_OK, **extra) -> Response:
        data = dict(self.get_serializer(obj).data)
        data.update(extra)
        return Response(data, status=status_code)

    def no_content(self) -> Response:
        return Response(status=status.HTTP_204_NO_CONTENT)

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(self.get_serializer(page, many=True).data)
        return Response(self.get_serializer(queryset, many=True).data)

    def retrieve(self, request, *args, **kwargs):
        return self.respond(self.get_object())
