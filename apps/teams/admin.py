"""Admin for tenants: organizations, teams, people, memberships, customers, access groups (all tenant-scoped)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.password_validation import validate_password

from apps.teams import access, services
from apps.teams.admin_base import ModelListField, TenantScopedAdmin, reaches_any
from apps.teams.limits import LIMIT_FIELDS, SESSION_CAPS
from apps.teams.models import Customer, Membership, ModelAccessGroup, Organization, Role, Team, User
from apps.teams.scoping import DELETE, may, tenancy_for
from apps.teams.selectors import teams_administered_by

LIMITS_FIELDSET = ("Limits and budget", {"fields": (*LIMIT_FIELDS, "budget_duration")})


@admin.register(Organization)
class OrganizationAdmin(TenantScopedAdmin):
    list_display = ("name", "time_zone", "max_budget", "budget_duration", "blocked", "created_at")
    list_filter = ("blocked",)
    search_fields = ("name",)
    fieldsets = ((None, {"fields": ("name", "time_zone", "allowed_models", "blocked")}), LIMITS_FIELDSET)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "allowed_models":
            return ModelListField(label="Allowed models")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_add_permission(self, request) -> bool:
        return may(request.user, "organization.create")

    def get_readonly_fields(self, request, obj=None):
        if obj is None or may(request.user, "organization.set_ceiling", obj):
            return ()
        return ("allowed_models", "blocked", *LIMIT_FIELDS, "budget_duration")  # an org admin can't raise its ceiling

    def service_save(self, request, form, change):
        fields = services.ORG_SETTABLE
        if change:
            return services.organization_update(
                actor=self.actor(request), organization=self.original(form), **self.changed_values(form, fields)
            )
        values = self.form_values(form, [f for f in fields if f != "name"])
        return services.organization_create(actor=self.actor(request), name=form.cleaned_data["name"], **values)


@admin.register(Team)
class TeamAdmin(TenantScopedAdmin):
    list_display = ("name", "organization", "rpm_limit", "tpm_limit", "max_budget", "budget_duration", "blocked")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter), "blocked")
    search_fields = ("name", "organization__name")
    list_select_related = ("organization",)
    fieldsets = (
        (None, {"fields": ("organization", "name", "allowed_models", "blocked")}),
        LIMITS_FIELDSET,
        (
            "Per-model and per-session",
            {"fields": ("model_limits", "session_max_budget", "session_max_iterations", "budget_clamp_max_tokens")},
        ),
        ("Tracing", {"fields": ("trace_content",)}),
        ("Response cache", {"fields": ("cache_ttl_seconds",)}),
    )
    CEILING = ("allowed_models", "blocked", *LIMIT_FIELDS, "budget_duration", "model_limits", *SESSION_CAPS)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "allowed_models":
            return ModelListField(label="Allowed models")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_add_permission(self, request) -> bool:
        return reaches_any(Organization, request.user, "team.create")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if may(request.user, "team.set_ceiling", obj):
            return ("organization",)
        return ("organization", *self.CEILING)  # a team admin renames; the org sets the ceiling

    def service_save(self, request, form, change):
        fields = services.TEAM_SETTABLE
        if change:
            return services.team_update(
                actor=self.actor(request), team=self.original(form), **self.changed_values(form, fields)
            )
        values = self.form_values(form, [f for f in fields if f != "name"])
        return services.team_create(
            actor=self.actor(request),
            organization=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            **values,
        )


class MembershipForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ("user", "team", "organization", "role")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "organization" in self.fields:
            self.fields["organization"].required = False
            self.fields["organization"].help_text = "Only for an organization-wide role; otherwise the team's."

    def clean(self):
        cleaned = super().clean()
        adding = "team" in self.fields
        if adding and not cleaned.get("team") and not cleaned.get("organization"):
            raise forms.ValidationError("Pick a team, or an organization for an organization-wide role.")
        return cleaned


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    form = MembershipForm
    list_display = ("user", "organization", "team", "role", "created_at")
    list_filter = (
        ("organization", admin.RelatedOnlyFieldListFilter),
        ("team", admin.RelatedOnlyFieldListFilter),
        "role",
    )
    search_fields = ("user__username", "user__email", "team__name")
    list_select_related = ("user", "organization", "team")
    actions = ("offboard_people",)
    # A member sees their own membership; only admins of its team (or organization) change or remove it.
    change_action = "membership.change"
    delete_action = "membership.change"

    @admin.action(description="Offboard: remove these people from the whole organization (their keys are blocked)")
    def offboard_people(self, request, queryset):
        actor = self.actor(request)
        pairs = {(m.user, m.organization) for m in queryset.select_related("user", "organization")}
        self.run_per_object(
            request,
            sorted(pairs, key=lambda pair: (pair[1].pk, pair[0].pk)),
            "Offboard",
            lambda pair: services.user_offboard(actor=actor, user=pair[0], organization=pair[1]),
        )

    def get_readonly_fields(self, request, obj=None):
        return ("user", "team", "organization") if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "team":
            kwargs["queryset"] = teams_administered_by(request.user)
        elif db_field.name == "user":
            kwargs["queryset"] = User.objects.restrict(request.user).order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_add_permission(self, request) -> bool:
        return reaches_any(Team, request.user, "membership.create")

    def service_save(self, request, form, change):
        if change:
            return services.membership_update(
                actor=self.actor(request), membership=self.original(form), role=form.cleaned_data["role"]
            )
        team = form.cleaned_data.get("team")
        return services.membership_create(
            actor=self.actor(request),
            user=form.cleaned_data["user"],
            organization=team.organization if team else form.cleaned_data["organization"],
            team=team,
            role=form.cleaned_data["role"],
        )

    def service_delete(self, request, obj) -> None:
        services.membership_delete(actor=self.actor(request), membership=obj)


class UserAddForm(forms.ModelForm):
    """A new person: a password, and (for tenant admins) the team they join, so they stay visible to the creator."""

    password1 = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label="Password (again)", widget=forms.PasswordInput, strip=False)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    class Meta:
        model = User
        fields = ("username", "email", "first_name", "last_name")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password1") != cleaned.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif cleaned.get("password1"):
            try:
                validate_password(cleaned["password1"], User(username=cleaned.get("username", "")))
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


@admin.register(User)
class UserAdmin(TenantScopedAdmin):
    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_superuser", "last_login")
    list_filter = ("is_active", "is_superuser")
    search_fields = ("username", "email", "first_name", "last_name")
    ordering = ("username",)
    # Tenant admins see the people in their teams but don't edit them (one person, several tenants).
    change_action = "user.update"
    fieldsets = (
        (None, {"fields": ("username", "email", "first_name", "last_name", "is_active")}),
        LIMITS_FIELDSET,
        ("Status", {"fields": ("is_staff", "is_superuser", "last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"fields": ("username", "password1", "password2", "email", "first_name", "last_name")}),)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            extra = ("team", "role")
            return ((None, {"fields": (*self.add_fieldsets[0][1]["fields"], *extra)}),)
        return self.fieldsets

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = UserAddForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change=change, **kwargs)

    def init_form(self, form, request, obj) -> None:
        if obj is None:
            form.fields["team"].queryset = teams_administered_by(request.user)
            form.fields["team"].required = not tenancy_for(request.user).is_superuser

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if may(request.user, "user.set_limits"):
            return ("is_staff", "is_superuser", "last_login", "date_joined", "username")
        readonly = ["username", "is_active", *LIMIT_FIELDS, "budget_duration", "is_staff", "is_superuser"]
        readonly += ["last_login", "date_joined"]
        if not may(request.user, "user.update", obj):
            readonly += ["email", "first_name", "last_name"]
        return readonly

    def has_add_permission(self, request) -> bool:
        return request.user.is_staff and may(request.user, "user.create")

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            return request.user.is_staff and request.user.is_active  # everyone may edit themself
        return super().has_change_permission(request, obj)

    def service_save(self, request, form, change):
        actor = self.actor(request)
        if change:
            return services.user_update(
                actor=actor, user=self.original(form), **self.changed_values(form, services.USER_SETTABLE)
            )
        values = {k: form.cleaned_data[k] for k in ("email", "first_name", "last_name") if form.cleaned_data.get(k)}
        return services.user_create_with_membership(
            actor=actor,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password1"],
            team=form.cleaned_data.get("team"),
            role=form.cleaned_data["role"],
            **values,
        )


@admin.register(Customer)
class CustomerAdmin(TenantScopedAdmin):
    list_display = ("external_id", "organization", "max_budget", "budget_duration", "blocked", "created_at")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter), "blocked")
    search_fields = ("external_id",)
    fieldsets = ((None, {"fields": ("organization", "external_id", "blocked")}), LIMITS_FIELDSET)

    def get_readonly_fields(self, request, obj=None):
        return ("organization", "external_id") if obj is not None else ()

    def service_save(self, request, form, change):
        fields = (*LIMIT_FIELDS, "budget_duration", "blocked")
        if change:
            values = self.changed_values(form, fields)
            original = self.original(form)
            organization, external_id = original.organization, original.external_id
        else:
            values = self.form_values(form, fields)
            organization, external_id = form.cleaned_data["organization"], form.cleaned_data["external_id"]
        return services.customer_upsert(
            actor=self.actor(request), organization=organization, external_id=external_id, **values
        )


@admin.register(ModelAccessGroup)
class ModelAccessGroupAdmin(TenantScopedAdmin):
    """Named sets of models: an organization's admins edit its own, superusers the shared ones."""

    delete_action = DELETE
    list_display = ("name", "organization", "member_list", "description")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name", "description")
    list_select_related = ("organization",)
    fields = ("organization", "name", "members", "description")
    service_error_aliases = {"models": "members"}

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "members":
            return ModelListField(
                label="Models", help_text="Comma-separated model names or patterns (claude-*, openai/*)."
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="models")
    def member_list(self, obj) -> str:
        return ", ".join(obj.members or [])

    def get_readonly_fields(self, request, obj=None):
        return ("organization",) if obj is not None else ()

    def service_save(self, request, form, change):
        if change:
            values = self.changed_values(form, access.ACCESS_GROUP_SETTABLE)
            return access.access_group_update(actor=self.actor(request), group=self.original(form), **values)
        values = self.form_values(form, access.ACCESS_GROUP_SETTABLE)
        return access.access_group_create(
            actor=self.actor(request), organization=form.cleaned_data.get("organization"), **values
        )

    def service_delete(self, request, obj) -> None:
        access.access_group_delete(actor=self.actor(request), group=obj)
