"""Spend in the admin: aggregates and budget windows read-only; reports set up by tenant admins.

The ledger itself (``SpendLog``) is the console's request explorer (``apps/console/explorer.py``): its
filters name deployments, which live above this app.

Everything goes through ``.restrict`` (TenantScopedAdmin). A report run's file is served by a
download view on the run's admin page, after the same tenant check, never by a public media URL.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import FileResponse, Http404
from django.urls import path, reverse
from django.utils.html import format_html

from apps.spend.models import BudgetAlert, BudgetWindow, DailySpend, Report, ReportRun
from apps.spend.reports import report_run
from apps.spend.services import report_save
from apps.teams.admin_base import TenantScopedAdmin
from apps.teams.models import Organization
from apps.teams.scoping import CHANGE, DELETE, VIEW, may, require


class ReadOnlyTenantAdmin(TenantScopedAdmin):
    """Derived or append-only data: visible to the tenant, never edited by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)


@admin.register(DailySpend)
class DailySpendAdmin(ReadOnlyTenantAdmin):
    # The team's name carries its organization's, so no organization column: the list fits 1024 px (issue 21).
    list_display = ("day", "team", "key", "user", "customer_id", "model", "requests", "errors", "cost")
    list_filter = ("day",)
    search_fields = ("model", "customer_id")
    date_hierarchy = "day"
    list_select_related = ("organization", "team", "key", "user")
    exclude = ("bucket",)


@admin.register(BudgetWindow)
class BudgetWindowAdmin(ReadOnlyTenantAdmin):
    list_display = ("scope", "scope_id", "window_id", "spent", "requests", "tokens", "window_end", "closed_at")
    list_filter = ("scope", "closed_at")
    search_fields = ("scope_id", "window_id")


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyTenantAdmin):
    list_display = ("created_at", "kind", "scope", "scope_id", "window_id", "spent", "threshold", "emailed")
    list_display += ("webhook_status",)
    list_filter = ("kind", "scope")


class ReportRunInline(admin.TabularInline):
    model = ReportRun
    extra = 0
    can_delete = False
    fields = ("period_start", "period_end", "format", "row_count", "total_cost", "mailed_to", "error", "download")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        # Shown on a report's page, which the user may already see; runs belong to that report.
        return obj is None or may(request.user, VIEW, obj)

    @admin.display(description="file")
    def download(self, run: ReportRun) -> str:
        return download_link(run)


def download_link(run: ReportRun) -> str:
    if not run.file:
        return "-"
    url = reverse("admin:spend_reportrun_download", args=[run.pk])
    return format_html('<a href="{}">download {}</a>', url, run.format.upper())


@admin.register(Report)
class ReportAdmin(TenantScopedAdmin):
    list_display = ("name", "organization", "team", "period", "group_by", "format", "enabled")
    list_filter = ("period", "format", "enabled")
    search_fields = ("name",)
    fields = ("name", "organization", "team", "period", "group_by", "format", "recipients", "enabled")
    inlines = [ReportRunInline]
    actions = ["run_now"]

    delete_action = DELETE

    def service_delete(self, request, obj) -> None:
        require(request.user, DELETE, obj, message="You may not delete this report.")
        obj.delete()

    def service_save(self, request, form, change: bool):
        data = {name: form.cleaned_data.get(name) for name in self.fields}
        return report_save(actor=self.actor(request), report=form.instance if change else None, **data)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "organization":
            # A team admin picks their team's organization (seen, not administered); report_save checks the pair.
            kwargs["queryset"] = Organization.objects.restrict(request.user, VIEW)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    @admin.action(description="Run the selected reports now (last complete period)")
    def run_now(self, request, queryset) -> None:
        def run(report: Report) -> None:
            require(request.user, CHANGE, report)
            report_run(report, force=True)

        self.run_per_object(request, queryset, "Run report", run)


@admin.register(ReportRun)
class ReportRunAdmin(ReadOnlyTenantAdmin):
    list_display = ("report", "period_start", "period_end", "format", "row_count", "total_cost", "download")
    list_filter = ("format",)
    list_select_related = ("report",)
    exclude = ("file",)

    def get_urls(self):
        custom = [
            path(
                "<int:run_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="spend_reportrun_download",
            )
        ]
        return custom + super().get_urls()

    @admin.display(description="file")
    def download(self, run: ReportRun) -> str:
        return download_link(run)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ReportRun._meta.fields if f.name != "file"] + ["download"]

    def download_view(self, request, run_id: int):
        run = self.get_queryset(request).filter(pk=run_id).first()
        if run is None or not run.file:
            raise Http404("No such report file.")
        try:
            handle = run.file.open("rb")
        except FileNotFoundError:
            self.message_user(request, "The report file is missing on disk.", messages.ERROR)
            raise Http404("The report file is missing.") from None
        content_type = "text/csv" if run.format == Report.Format.CSV else "text/html"
        filename = run.file.name.rsplit("/", 1)[-1]
        return FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)
