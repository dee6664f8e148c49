"""LiteLLM's management routes (``/key/generate``, ``/team/new``...), so pipelines that provision through LiteLLM
keep working when pointed at the gateway.

Only a translation: LiteLLM's request and response field names on the way in and out, the gateway's
services underneath (the same tenancy checks and audit as ``/api/v1/``), the same authentication
(master key, API tokens). Ids are the gateway's, as strings: ``team_id`` is a team's id, ``user_id`` a
user's id (or username), ``token`` a key's id. Where LiteLLM accepts something the gateway has no
place for, the answer is a 400 naming the field, never a silent drop. Errors come in LiteLLM's body
(``apps/provisioning/litellm_errors.py``).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from decimal import Decimal

from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from apps.keys import services as key_services
from apps.keys.hashing import custom_secret_problem, keyed_hash
from apps.keys.models import VirtualKey
from apps.provisioning.document import path_label
from apps.provisioning.fields import DECIMAL_FIELDS
from apps.provisioning.litellm import litellm_model_entry
from apps.provisioning.litellm_errors import litellm_route
from apps.proxy import services as proxy_services
from apps.proxy.models import ModelDeployment
from apps.spend.models import MonthlySpend, SpendLog
from apps.teams import services as team_services
from apps.teams.access import access_group_add_model
from apps.teams.audit import actor_from_request
from apps.teams.models import Organization, Team, User
from apps.teams.scoping import CHANGE, VIEW

logger = logging.getLogger(__name__)

LIMITS = ("max_budget", "soft_budget", "tpm_limit", "rpm_limit", "max_parallel_requests", "budget_duration")
# The JSON type each LiteLLM field must have (ids may be numbers or text); limits are checked in _limits.
_ID = (str, int)
SHAPES = {
    "key": _ID,
    "team_id": _ID,
    "user_id": _ID,
    "organization_id": _ID,
    "key_alias": str,
    "team_alias": str,
    "user_alias": str,
    "user_email": str,
    "user_role": str,
    "duration": str,
    "models": list,
    "keys": list,
    "team_ids": list,
    "metadata": dict,
    "blocked": bool,
    "member": (dict, list),
    "members_with_roles": list,
    "model_name": str,
    "litellm_params": dict,
    "model_info": dict,
}
DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
ROLES_IN = {"admin": "admin", "user": "member", "member": "member", "viewer": "viewer", "owner": "owner"}
ROLES_OUT = {"admin": "admin", "owner": "admin", "member": "user", "viewer": "user"}


# In /api/schema/ as free-form JSON (LiteLLM's own docs describe the fields); tagged so they stand apart.
_documented = extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT, tags=["litellm-compatible"])


def _actor(request):
    return actor_from_request(request, "api")


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["the body must be a JSON object."]})
    bad = sorted(name for name, value in request.data.items() if _has_nul(value))
    if bad:  # Postgres text can't hold NUL: a 400 here, not a database error later
        raise exceptions.ValidationError({name: ["must not contain NUL bytes."] for name in bad})
    wrong = {}
    for name, value in request.data.items():
        expected = SHAPES.get(name)
        if value is None or expected is None:
            continue
        if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
            wrong[name] = ["has the wrong type."]
        elif isinstance(value, list) and name in ("models", "keys", "team_ids"):
            if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
                wrong[name] = ["must be a list of names or ids."]
        elif isinstance(value, str) and len(value) > 255:
            wrong[name] = ["is too long."]
    if wrong:
        raise exceptions.ValidationError(wrong)
    return request.data


def _query(request, name: str) -> str | None:
    value = request.query_params.get(name)
    if not value:
        return None
    if "\x00" in value or len(value) > 255:
        raise exceptions.ValidationError({name: ["must be text of at most 255 characters."]})
    return value


def _refuse_unknown(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise exceptions.ValidationError({name: ["not supported by this gateway."] for name in unknown})


def _limits(body: dict) -> dict:
    """LiteLLM's limit fields, type-checked here: a blank or a word where a number belongs is a 400."""
    values = {}
    for name in LIMITS:
        if name not in body:
            continue
        value = body[name]
        if name == "budget_duration":
            if value is not None and not isinstance(value, str):
                raise exceptions.ValidationError({name: ["must be a duration such as 1d or 1mo."]})
            values[name] = value or ""
        elif value is None:
            values[name] = None
        elif name in ("max_budget", "soft_budget"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise exceptions.ValidationError({name: ["must be a number."]})
            try:
                number = Decimal(str(value))
            except ArithmeticError:
                raise exceptions.ValidationError({name: ["must be a number."]}) from None
            if not number.is_finite() or number < 0:
                raise exceptions.ValidationError({name: ["must be a non-negative number."]})
            values[name] = number
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise exceptions.ValidationError({name: ["must be a whole number, 0 or more."]})
            values[name] = value
    return values


def _expiry(duration) -> object:
    if duration in (None, ""):
        return None
    match = DURATION.match(str(duration))
    if not match:
        raise exceptions.ValidationError({"duration": ['like "30s", "15m", "12h" or "30d".']})
    amount, unit = int(match.group(1)), match.group(2)
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return timezone.now() + timedelta(seconds=seconds)


def _id(value, name: str) -> int:
    text = str(value) if value is not None else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise exceptions.ValidationError({name: ["must be an id of this gateway."]})
    return int(text)


def _team(request, team_id, action: str = VIEW) -> Team:
    team = Team.objects.restrict(request.user, action).filter(pk=_id(team_id, "team_id")).first()
    if team is None:
        raise exceptions.NotFound(f"team {team_id} not found.")
    return team


def _user(request, user_id) -> User:
    users = User.objects.restrict(request.user, VIEW)
    text = str(user_id or "")
    user = users.filter(pk=int(text)).first() if text.isascii() and text.isdigit() and len(text) < 18 else None
    user = user or users.filter(username=text).first()
    if user is None:
        raise exceptions.NotFound(f"user {user_id} not found.")
    return user


def _key(request, reference) -> VirtualKey:
    """A key by its secret (``sk-...``) or its token (the gateway's id), within what the caller may see."""
    if not isinstance(reference, str | int) or not str(reference):
        raise exceptions.ValidationError({"key": ["required: the key (sk-...) or its token."]})
    keys = VirtualKey.objects.restrict(request.user, VIEW).select_related("team", "user")
    text = str(reference)
    key = keys.filter(pk=int(text)).first() if text.isascii() and text.isdigit() and len(text) < 18 else None
    key = key or keys.filter(key_hash=keyed_hash(text)).first()
    if key is None:
        raise exceptions.NotFound("key not found.")
    return key


def _num(value):
    return float(value) if isinstance(value, Decimal) else value


def _key_out(key: VirtualKey) -> dict:
    # From the monthly aggregates (a few rows per key), not a sum over the key's every ledger row.
    spend = MonthlySpend.objects.filter(key_id=key.pk).aggregate(total=Sum("cost"))["total"] or Decimal(0)
    return {
        "token": str(key.pk),
        "key_name": key.prefix + "...",
        "key_alias": key.alias or None,
        "models": key.allowed_models,
        "max_budget": _num(key.max_budget),
        "soft_budget": _num(key.soft_budget),
        "budget_duration": key.budget_duration or None,
        "tpm_limit": key.tpm_limit,
        "rpm_limit": key.rpm_limit,
        "max_parallel_requests": key.max_parallel_requests,
        "metadata": key.metadata,
        "team_id": str(key.team_id),
        "user_id": str(key.user_id) if key.user_id else None,
        "expires": key.expires_at.isoformat() if key.expires_at else None,
        "blocked": key.blocked or key.revoked_at is not None,
        "spend": float(spend),
        "created_at": key.created_at.isoformat(),
    }


KEY_FIELDS = {"key_alias", "models", "metadata", "duration", *LIMITS}


def _key_values(body: dict) -> dict:
    values = _limits(body)
    if "key_alias" in body:
        values["alias"] = body["key_alias"] or ""
    if "models" in body:
        values["allowed_models"] = body["models"] or []
    if "metadata" in body:
        values["metadata"] = body["metadata"] or {}
    if "duration" in body:
        values["expires_at"] = _expiry(body["duration"])
    return values


@_documented
@litellm_route(["POST"])
def key_generate(request):
    body = _body(request)
    _refuse_unknown(body, KEY_FIELDS | {"team_id", "user_id", "key"})
    if not body.get("team_id"):
        raise exceptions.ValidationError({"team_id": ["required: every key of this gateway belongs to a team."]})
    secret = body.get("key")
    if secret is not None:  # LiteLLM's custom key: kept as the caller wrote it, stored as a keyed hash
        problem = custom_secret_problem(secret)
        if problem:
            raise exceptions.ValidationError({"key": [problem]})
    team = _team(request, body["team_id"])
    user = _user(request, body["user_id"]) if body.get("user_id") else None
    issued = key_services.key_create(actor=_actor(request), team=team, user=user, secret=secret, **_key_values(body))
    return Response({**_key_out(issued.key), "key": issued.secret})


@_documented
@litellm_route(["POST"])
def key_update(request):
    body = _body(request)
    _refuse_unknown(body, KEY_FIELDS | {"key"})
    key = _key(request, body.get("key"))
    key = key_services.key_update(actor=_actor(request), key=key, **_key_values(body))
    return Response(_key_out(key))


@_documented
@litellm_route(["POST"])
def key_delete(request):
    """LiteLLM deletes keys; here they are revoked (the ledger keeps naming them), with the same effect on /v1."""
    body = _body(request)
    _refuse_unknown(body, {"keys"})
    references = body.get("keys")
    if not isinstance(references, list) or not references:
        raise exceptions.ValidationError({"keys": ["a list of keys (sk-...) or tokens."]})
    keys = [_key(request, reference) for reference in references]
    for key in keys:
        key_services.key_revoke(actor=_actor(request), key=key)
    return Response({"deleted_keys": references})


@_documented
@litellm_route(["POST"])
def key_regenerate(request):
    body = _body(request)
    _refuse_unknown(body, {"key"})
    key = _key(request, body.get("key"))
    issued = key_services.key_rotate(actor=_actor(request), key=key)
    return Response({**_key_out(issued.key), "key": issued.secret})


@_documented
@litellm_route(["GET"])
def key_info(request):
    key = _key(request, _query(request, "key"))
    return Response({"key": str(key.pk), "info": _key_out(key)})


@_documented
@litellm_route(["GET"])
def key_list(request):
    keys = VirtualKey.objects.restrict(request.user, VIEW).filter(revoked_at__isnull=True).order_by("-created_at")
    if _query(request, "team_id"):
        keys = keys.filter(team_id=_id(_query(request, "team_id"), "team_id"))
    if _query(request, "user_id"):
        keys = keys.filter(user=_user(request, _query(request, "user_id")))
    page, size = _page(request)
    total = keys.count()
    rows = list(keys[(page - 1) * size : page * size])
    full = request.query_params.get("return_full_object") in ("true", "True", "1")
    return Response(
        {
            "keys": [_key_out(k) for k in rows] if full else [str(k.pk) for k in rows],
            "total_count": total,
            "current_page": page,
            "total_pages": max(1, -(-total // size)),
        }
    )


def _page(request) -> tuple[int, int]:
    try:
        page = max(1, int(_query(request, "page") or 1))
        size = min(100, max(1, int(_query(request, "size") or 10)))
    except ValueError:
        raise exceptions.ValidationError({"page": ["page and size must be whole numbers."]}) from None
    return page, size


# -- teams -----------------------------------------------------------------------------------------------

TEAM_FIELDS = {"team_alias", "models", "metadata", "blocked", *LIMITS}


def _team_values(body: dict) -> dict:
    values = _limits(body)
    if "team_alias" in body:
        values["name"] = body["team_alias"]
    if "models" in body:
        values["allowed_models"] = body["models"] or []
    if "blocked" in body:
        values["blocked"] = bool(body["blocked"])
    if body.get("metadata"):
        raise exceptions.ValidationError({"metadata": ["teams carry no metadata here."]})
    return values


def _team_out(team: Team) -> dict:
    members = team.memberships.select_related("user")
    return {
        "team_id": str(team.pk),
        "team_alias": team.name,
        "organization_id": str(team.organization_id),
        "models": team.allowed_models,
        "max_budget": _num(team.max_budget),
        "budget_duration": team.budget_duration or None,
        "tpm_limit": team.tpm_limit,
        "rpm_limit": team.rpm_limit,
        "max_parallel_requests": team.max_parallel_requests,
        "blocked": team.blocked,
        "members_with_roles": [
            {"user_id": str(m.user_id), "user_email": m.user.email or None, "role": ROLES_OUT.get(m.role, "user")}
            for m in members
        ],
    }


def _organization_for(request, body: dict) -> Organization:
    """LiteLLM teams may stand alone; here each belongs to an organization: the named one, or the only one."""
    orgs = Organization.objects.restrict(request.user, CHANGE)
    if body.get("organization_id"):
        org = orgs.filter(pk=_id(body["organization_id"], "organization_id")).first()
        if org is None:
            raise exceptions.NotFound(f"organization {body['organization_id']} not found.")
        return org
    if orgs.count() == 1:
        return orgs.get()
    raise exceptions.ValidationError({"organization_id": ["required: name the organization the team belongs to."]})


def _add_members(request, team: Team, members) -> None:
    for member in members if isinstance(members, list) else [members]:
        if not isinstance(member, dict) or not (member.get("user_id") or member.get("user_email")):
            raise exceptions.ValidationError({"member": ["each member needs user_id (or user_email) and role."]})
        role = ROLES_IN.get(str(member.get("role", "user")))
        if role is None:
            raise exceptions.ValidationError({"role": ["admin or user."]})
        if member.get("user_id"):
            user = _user(request, member["user_id"])
        else:
            user = User.objects.restrict(request.user, VIEW).filter(email=member["user_email"]).first()
            if user is None:
                raise exceptions.NotFound(f"user {member['user_email']} not found.")
        team_services.membership_create(
            actor=_actor(request), user=user, organization=team.organization, team=team, role=role
        )


@_documented
@litellm_route(["POST"])
def team_new(request):
    body = _body(request)
    _refuse_unknown(body, TEAM_FIELDS | {"organization_id", "members_with_roles"})
    values = _team_values(body)
    name = values.pop("name", None)
    if not name:
        raise exceptions.ValidationError({"team_alias": ["required: the team's name."]})
    team = team_services.team_create(
        actor=_actor(request), organization=_organization_for(request, body), name=name, **values
    )
    if body.get("members_with_roles"):
        _add_members(request, team, body["members_with_roles"])
    return Response(_team_out(team))


@_documented
@litellm_route(["POST"])
def team_update(request):
    body = _body(request)
    _refuse_unknown(body, TEAM_FIELDS | {"team_id"})
    team = _team(request, body.get("team_id"))
    team = team_services.team_update(actor=_actor(request), team=team, **_team_values(body))
    return Response(_team_out(team))


@_documented
@litellm_route(["POST"])
def team_delete(request):
    body = _body(request)
    _refuse_unknown(body, {"team_ids"})
    team_ids = body.get("team_ids")
    if not isinstance(team_ids, list) or not team_ids:
        raise exceptions.ValidationError({"team_ids": ["a list of team ids."]})
    for team in [_team(request, team_id) for team_id in team_ids]:
        team_services.team_delete(actor=_actor(request), team=team)
    return Response({"deleted_teams": team_ids})


@_documented
@litellm_route(["GET"])
def team_info(request):
    team = _team(request, _query(request, "team_id"))
    keys = VirtualKey.objects.restrict(request.user, VIEW).filter(team=team, revoked_at__isnull=True)
    return Response({"team_id": str(team.pk), "team_info": _team_out(team), "keys": [_key_out(k) for k in keys]})


@_documented
@litellm_route(["GET"])
def team_list(request):
    return Response([_team_out(team) for team in Team.objects.restrict(request.user, VIEW).order_by("id")])


@_documented
@litellm_route(["POST"])
def team_member_add(request):
    body = _body(request)
    _refuse_unknown(body, {"team_id", "member"})
    team = _team(request, body.get("team_id"))
    _add_members(request, team, body.get("member"))
    return Response(_team_out(team))


# -- users, customers ------------------------------------------------------------------------------------


def _user_out(user: User) -> dict:
    return {
        "user_id": str(user.pk),
        "user_email": user.email or None,
        "user_alias": user.username,
        "max_budget": _num(user.max_budget),
        "budget_duration": user.budget_duration or None,
        "tpm_limit": user.tpm_limit,
        "rpm_limit": user.rpm_limit,
        "max_parallel_requests": user.max_parallel_requests,
    }


@_documented
@litellm_route(["POST"])
def user_new(request):
    """A person (and, with ``team_id``, their membership and a first key, as LiteLLM's /user/new returns one)."""
    body = _body(request)
    _refuse_unknown(body, {"user_id", "user_email", "user_alias", "user_role", "team_id", "models", *LIMITS})
    username = body.get("user_alias") or body.get("user_id") or body.get("user_email")
    if not username:
        raise exceptions.ValidationError({"user_id": ["user_id, user_alias or user_email is required."]})
    team = _team(request, body["team_id"]) if body.get("team_id") else None
    values = _limits(body)
    if body.get("user_email"):
        values["email"] = body["user_email"]
    actor = _actor(request)
    user = team_services.user_create_with_membership(
        actor=actor,
        username=str(username),
        team=team,
        role=ROLES_IN.get(str(body.get("user_role", "user")).replace("internal_", ""), "member"),
        **{k: v for k, v in values.items() if k != "soft_budget"},
    )
    answer = _user_out(user)
    if team is not None:
        issued = key_services.key_create(
            actor=actor, team=team, user=user, **({"allowed_models": body["models"]} if body.get("models") else {})
        )
        answer.update(key=issued.secret, token=str(issued.key.pk))
    return Response(answer)


@_documented
@litellm_route(["GET"])
def user_info(request):
    user = _user(request, _query(request, "user_id"))
    keys = VirtualKey.objects.restrict(request.user, VIEW).filter(user=user, revoked_at__isnull=True)
    teams = Team.objects.restrict(request.user, VIEW).filter(memberships__user=user).distinct()
    return Response(
        {
            "user_id": str(user.pk),
            "user_info": _user_out(user),
            "keys": [_key_out(k) for k in keys],
            "teams": [_team_out(t) for t in teams],
        }
    )


@_documented
@litellm_route(["POST"])
def customer_new(request):
    body = _body(request)
    _refuse_unknown(body, {"user_id", "organization_id", "blocked", *LIMITS})
    if not body.get("user_id"):
        raise exceptions.ValidationError({"user_id": ["required: the end user's id, as clients send it."]})
    values = _limits(body)
    if "blocked" in body:
        values["blocked"] = bool(body["blocked"])
    org = _organization_for(request, body)
    customer = team_services.customer_upsert(
        actor=_actor(request), organization=org, external_id=str(body["user_id"]), **values
    )
    return Response(
        {
            "user_id": customer.external_id,
            "organization_id": str(org.pk),
            "blocked": customer.blocked,
            "max_budget": _num(customer.max_budget),
            "budget_duration": customer.budget_duration or None,
            "tpm_limit": customer.tpm_limit,
            "rpm_limit": customer.rpm_limit,
        }
    )


# -- models ---------------------------------------------------------------------------------------------

LITELLM_PREFIX = {"openai_compatible": "openai"}


@_documented
@litellm_route(["POST"])
def model_new(request):
    """A deployment from LiteLLM's model_list entry shape; what has no equivalent is a 400 naming it."""
    body = dict(_body(request))
    _refuse_unknown(body, {"model_name", "litellm_params", "model_info"})
    params = dict(body.get("litellm_params") or {}) if isinstance(body.get("litellm_params"), dict) else None
    if params is None:
        raise exceptions.ValidationError({"litellm_params": ["required: an object with model."]})
    api_key = params.pop("api_key", None)
    aws = [params.pop(name, None) for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")]
    if api_key is None and aws[0] and aws[1]:
        api_key = ":".join(str(part) for part in aws if part)  # Bedrock's one credential: ID:SECRET[:TOKEN]
    if api_key is not None and not isinstance(api_key, str):
        raise exceptions.ValidationError({"litellm_params.api_key": ["must be text."]})
    info = body.get("model_info") if isinstance(body.get("model_info"), dict) else {}
    groups = info.get("access_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
        raise exceptions.ValidationError({"model_info.access_groups": ["must be a list of group names."]})
    info = {k: v for k, v in info.items() if k != "access_groups"}
    organization = None
    if info.get("organization_id") is not None:
        info = {k: v for k, v in info.items() if k != "organization_id"}
        orgs = Organization.objects.restrict(request.user, CHANGE)
        organization = orgs.filter(pk=_id(body["model_info"]["organization_id"], "organization_id")).first()
        if organization is None:
            raise exceptions.NotFound("organization not found.")
    deployment, dropped = litellm_model_entry({**body, "litellm_params": params, "model_info": info})
    if dropped or deployment is None:
        raise exceptions.ValidationError({path_label(path): [why] for path, why in dropped})
    values = {k: v for k, v in deployment.items() if k not in ("api_key", "name")}
    for price in DECIMAL_FIELDS & set(values):
        values[price] = _price(price, values[price])
    for name in {"rpm_limit", "tpm_limit", "max_parallel_requests", "weight", "priority"} & set(values):
        number = values[name]
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise exceptions.ValidationError({name: ["must be a whole number, 0 or more."]})
    timeout = values.get("timeout_seconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0):
        raise exceptions.ValidationError({"timeout_seconds": ["must be a number of seconds."]})
    for name in ("model_name", "model", "api_base", "api_version", "region"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise exceptions.ValidationError({name: ["must be text."]})
    name = deployment["name"] if info.get("id") else ""
    actor = _actor(request)
    with transaction.atomic():  # a group the caller may not change leaves no deployment behind either
        created = proxy_services.deployment_create(
            actor=actor, organization=organization, api_key=api_key or None, name=name, **values
        )
        for group in dict.fromkeys(g.strip() for g in groups):
            access_group_add_model(actor=actor, organization=organization, name=group, model_name=created.model_name)
    return Response(_model_out(created))


def _price(name: str, value) -> Decimal | None:
    """A JSON number as the decimal it reads as (0.000001, not the float's 0.00000099999...)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise exceptions.ValidationError({name: ["must be a number."]})
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise exceptions.ValidationError({name: ["must be a number."]}) from None
    if not number.is_finite() or number < 0:
        raise exceptions.ValidationError({name: ["must be a non-negative number."]})
    return number


def _model_out(deployment) -> dict:
    prefix = LITELLM_PREFIX.get(deployment.provider, deployment.provider)
    return {
        "model_name": deployment.model_name,
        "litellm_params": {
            "model": f"{prefix}/{deployment.model}",
            "api_base": deployment.api_base or None,
            "api_version": deployment.api_version or None,
            "aws_region_name": deployment.region or None,
            "rpm": deployment.rpm_limit,
            "tpm": deployment.tpm_limit,
        },
        "model_info": {
            "id": str(deployment.pk),
            "input_cost_per_token": _num(deployment.input_cost_per_token),
            "output_cost_per_token": _num(deployment.output_cost_per_token),
            "organization_id": str(deployment.organization_id) if deployment.organization_id else None,
            "db_model": True,
        },
    }


@_documented
@litellm_route(["GET"])
def model_info(request):
    """The deployments the caller may see (never their keys), in LiteLLM's shape."""
    deployments = ModelDeployment.objects.restrict(request.user, VIEW).order_by("model_name", "id")
    return Response({"data": [_model_out(d) for d in deployments]})


# -- spend and health ------------------------------------------------------------------------------------


@_documented
@litellm_route(["GET"])
def spend_logs(request):
    rows = SpendLog.objects.restrict(request.user, VIEW).order_by("-created_at", "-id")
    if _query(request, "api_key"):
        rows = rows.filter(key=_key(request, _query(request, "api_key")))
    if _query(request, "user_id"):
        rows = rows.filter(user=_user(request, _query(request, "user_id")))
    if _query(request, "request_id"):
        rows = rows.filter(request_id=_query(request, "request_id")[:64])
    return Response(
        [
            {
                "request_id": row.request_id,
                "api_key": str(row.key_id) if row.key_id else None,
                "model": row.model,
                "spend": float(row.cost),
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "total_tokens": row.total_tokens,
                "user": str(row.user_id) if row.user_id else None,
                "team_id": str(row.team_id) if row.team_id else None,
                "end_user": row.customer_id or None,
                "status": "success" if row.status < 400 else "failure",
                "startTime": row.created_at.isoformat(),
                "endTime": row.created_at.isoformat(),
            }
            for row in rows[:1000]
        ]
    )


def health_liveliness(request):
    return HttpResponse('"I\'m alive!"', content_type="application/json")


def health_readiness(request):
    """Whether the database answers (LiteLLM's shape); the gateway's own probe is /health/ready."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        logger.warning("readiness: the database does not answer")
        return JsonResponse({"status": "unhealthy", "db": "disconnected"}, status=503)
    return JsonResponse({"status": "healthy", "db": "connected"})
