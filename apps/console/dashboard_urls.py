"""Admin pages of the gateway itself, mounted under /admin/gateway/ (before the admin's catch-all)."""

from django.contrib import admin
from django.urls import path

from apps.console import dashboard_views as views

urlpatterns = [
    path("live/", admin.site.admin_view(views.live_traffic), name="gateway-live"),
    path("deployments/", admin.site.admin_view(views.deployment_groups), name="gateway-deployments"),
    path(
        "deployments/test/<int:pk>/",
        admin.site.admin_view(views.deployment_test),
        name="gateway-deployment-test",
    ),
    path(
        "deployments/group/<path:model_name>/",
        admin.site.admin_view(views.deployment_group),
        name="gateway-deployment-group",
    ),
]
