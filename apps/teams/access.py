"""Model access groups and wildcards: what a list of "models" on a key, team or organization means.

An entry of ``allowed_models`` is, in this order:

- a pattern when it holds one of ``* ? [`` (``fnmatch`` syntax, case-sensitive): "claude-*", "openai/*";
- else the name of an access group the organization sees (its own, else a shared one of that name),
  which stands for the group's members (names or patterns; a member naming another group is a model
  name, not a nested group, so groups cannot loop);
- else a model name, taken literally (it may be an alias, or a model deployed later).

A pattern is matched against the names the registry knows for the organization (the catalog, built
by ``apps.proxy.selectors.model_catalog``): every public model name and alias it can call, each also
known as ``<provider>/<name>`` for every provider among the deployments serving it. So "openai/*"
allows exactly the public names that at least one OpenAI deployment the organization can see serves.

All of it happens when a key's context is built (``apps.proxy.auth`` on a cache miss): the result is a
frozen set of concrete names, so the hot path's ``allows_model`` stays one set lookup. Anything that
changes the answer (a group, a deployment, an alias, an allow-list) publishes an invalidation, and every
worker rebuilds its contexts. Levels intersect (key within team within organization): a key's list can
only narrow what its team and organization allow, whatever groups or patterns it names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from apps.common.invalidation import publish_invalidation
from apps.teams.audit import Actor, audit_record
from apps.teams.models import ModelAccessGroup, Organization
from apps.teams.scoping import CHANGE, DELETE, require

PATTERN_CHARS = frozenset("*?[")
ACCESS_GROUP_SETTABLE = ("name", "members", "description")
REFUSAL = "You may not manage these access groups."

Groups = Mapping[str, Sequence[str]]
# Public name -> the names a pattern may match it by (itself and "<provider>/<name>" per serving provider).
Catalog = Mapping[str, Iterable[str]]


def is_pattern(entry: str) -> bool:
    return not PATTERN_CHARS.isdisjoint(entry)


def expand(entries: Iterable[str], groups: Groups) -> tuple[frozenset[str], tuple[str, ...]]:
    """The literal names and the patterns ``entries`` stand for, access groups replaced by their members."""
    names: set[str] = set()
    patterns: list[str] = []
    for entry in entries:
        for item in groups.get(entry, (entry,)) if not is_pattern(entry) else (entry,):
            if is_pattern(item):
                patterns.append(item)
            else:
                names.add(item)
    return frozenset(names), tuple(dict.fromkeys(patterns))


def compile_patterns(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regular expression matching any of ``patterns`` (fnmatch syntax), None for no patterns."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def uses_patterns(levels: Iterable[Sequence[str]], groups: Groups) -> bool:
    """Whether resolving ``levels`` needs the catalog (some entry is, or names a group holding, a pattern)."""
    return any(expand(entries, groups)[1] for entries in levels if entries)


def resolve(entries: Sequence[str], groups: Groups, catalog: Catalog) -> frozenset[str]:
    """The concrete model names one level's list allows: its literal names plus every catalog name a pattern matches."""
    names, patterns = expand(entries, groups)
    if "*" in patterns:
        return names | frozenset(catalog)  # every name: no need to match each one
    matcher = compile_patterns(patterns)
    if matcher is None:
        return names
    matched = {name for name, known_as in catalog.items() if any(map(matcher.match, known_as))}
    return names | matched


def effective(levels: Iterable[Sequence[str] | None], groups: Groups, catalog: Catalog) -> frozenset[str] | None:
    """Intersection of the non-empty lists along key -> team -> organization; None means any model."""
    allowed: frozenset[str] | None = None
    for entries in levels:
        if entries:
            current = resolve(entries, groups, catalog)
            allowed = current if allowed is None else allowed & current
    return allowed


def outside(child: Sequence[str], parent: Sequence[str], groups: Groups) -> list[str]:
    """Model names ``child`` lists that ``parent`` does not allow, for a clear error when a list is written.

    Decidable only when the parent lists concrete names: against a parent pattern a name's providers
    matter, which only the registry knows, so that case (and a child's own patterns, which can only
    narrow) is left to the intersection made when contexts are built, which always holds.
    """
    if not parent:
        return []
    parent_names, parent_patterns = expand(parent, groups)
    if parent_patterns:
        return []
    child_names, _ = expand(child or [], groups)
    return sorted(child_names - parent_names)


# --- reads ------------------------------------------------------------------------------------------
def access_groups_for(organization_id: int | None) -> dict[str, tuple[str, ...]]:
    """Group name -> members as an organization's keys see them: shared groups, its own shadowing them."""
    found: dict[str, tuple[str, ...]] = {}
    rows = ModelAccessGroup.objects.filter(Q(organization__isnull=True) | Q(organization_id=organization_id))
    # Shared rows first, so an organization's own group of the same name wins.
    for _org, name, members in sorted(
        rows.values_list("organization_id", "name", "members"), key=lambda row: row[0] is not None
    ):
        found[name] = tuple(str(m) for m in members or ())
    return found


# --- writes -----------------------------------------------------------------------------------------
def _problems(values: dict) -> dict[str, str]:
    problems: dict[str, str] = {}
    name = values.get("name")
    if "name" in values:
        if not isinstance(name, str) or not name.strip():
            problems["name"] = "must be a non-empty name."
        elif is_pattern(name) or any(ch.isspace() or ord(ch) < 32 for ch in name):
            problems["name"] = "may not contain *, ?, [ or whitespace (a group's name is used like a model name)."
    if "members" in values:
        members = values["members"]
        if not isinstance(members, list) or not all(isinstance(m, str) and m.strip() for m in members):
            problems["models"] = "must be a list of model names or patterns."
    return problems


def _validate(values: dict) -> None:
    unknown = set(values) - set(ACCESS_GROUP_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    problems = _problems(values)
    if problems:
        raise ValidationError(problems)


def _changed_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))


def _unique(group: ModelAccessGroup) -> None:
    clash = ModelAccessGroup.objects.filter(organization_id=group.organization_id, name=group.name)
    if group.pk is not None:
        clash = clash.exclude(pk=group.pk)
    if clash.exists():
        raise ValidationError({"name": "an access group of this name already exists here."})


def access_group_create(
    *, actor: Actor, organization: Organization | None, name: str, members: list[str], description: str = ""
) -> ModelAccessGroup:
    """``organization`` None makes a shared group (superusers only), like a shared deployment."""
    group = ModelAccessGroup(organization=organization, name=name, members=members, description=description)
    require(actor.user, "access_group.create", group, message=REFUSAL)
    _validate({"name": name, "members": members, "description": description})
    with transaction.atomic():
        _unique(group)
        group.full_clean(validate_constraints=False)
        group.save()
        audit_record(
            actor=actor,
            action="access_group.create",
            obj=group,
            organization=organization,
            changes={"name": name, "models": members, "description": description},
        )
        _changed_on_commit(f"access_group:{group.pk}")
    return group


def access_group_update(*, actor: Actor, group: ModelAccessGroup, **values) -> ModelAccessGroup:
    require(actor.user, CHANGE, group, message=REFUSAL)
    _validate(values)
    with transaction.atomic():
        for name, value in values.items():
            setattr(group, name, value)
        _unique(group)
        group.full_clean(validate_constraints=False)
        group.save()
        changes = {("models" if k == "members" else k): v for k, v in values.items()}
        audit_record(
            actor=actor, action="access_group.update", obj=group, organization=group.organization, changes=changes
        )
        _changed_on_commit(f"access_group:{group.pk}")
    return group


def access_group_delete(*, actor: Actor, group: ModelAccessGroup) -> None:
    require(actor.user, DELETE, group, message=REFUSAL)
    with transaction.atomic():
        audit_record(actor=actor, action="access_group.delete", obj=group, organization=group.organization)
        group.delete()
        _changed_on_commit("access_group:deleted")


def access_group_add_model(
    *, actor: Actor, organization: Organization | None, name: str, model_name: str
) -> ModelAccessGroup:
    """Put ``model_name`` in the group ``name`` of ``organization`` (created when missing).

    LiteLLM's way round: a deployment tagged ``model_info.access_groups`` joins those groups.
    """
    group = ModelAccessGroup.objects.filter(organization=organization, name=name).first()
    if group is None:
        return access_group_create(actor=actor, organization=organization, name=name, members=[model_name])
    if model_name in group.members:
        return group
    return access_group_update(actor=actor, group=group, members=[*group.members, model_name])
