from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.provisioning.views import config_schema
from apps.proxy.self_service import api as key_self_service_api
from apps.ratelimit.views import metrics_view
from apps.sso.views import sso_logout
from gateway_project import health


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask for /favicon.ico whatever the page says: point them at the static (hashed, cached) icon."""
    return HttpResponseRedirect(static("gateway/favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    # The gateway's own admin pages (live traffic, deployment health) before the admin's catch-all.
    path("admin/gateway/", include("apps.console.dashboard_urls")),
    # Single sign-on (apps/sso), and the admin's logout, which also ends the provider's session.
    path("admin/sso/", include("apps.sso.urls")),
    path("admin/logout/", sso_logout, name="sso-logout"),
    path("admin/", admin.site.urls),
    # The config file format (gateway_apply), for editors: before the REST router, which would 404 it.
    path("api/v1/config/schema.json", config_schema, name="config-schema"),
    path("api/v1/", include("gateway_project.api_urls")),
    # LiteLLM's management routes (/key/generate, /team/new...), translated onto the same services.
    path("", include("apps.provisioning.litellm_urls")),
    # The key holder's self-service API (django-ninja); asgi.py sends /v1/key/* here, the rest of /v1 to the proxy.
    path("v1/key/", key_self_service_api.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # django-prometheus plus the gateway's own metrics (apps/ratelimit/metrics.py); METRICS_TOKEN guards it.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
