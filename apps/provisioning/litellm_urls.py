"""LiteLLM's management routes at the root, beside /api/v1/ (apps/provisioning/litellm_api.py)."""

from django.urls import path

from apps.provisioning import litellm_api as views

urlpatterns = [
    path("key/generate", views.key_generate, name="litellm-key-generate"),
    path("key/update", views.key_update, name="litellm-key-update"),
    path("key/delete", views.key_delete, name="litellm-key-delete"),
    path("key/regenerate", views.key_regenerate, name="litellm-key-regenerate"),
    path("key/info", views.key_info, name="litellm-key-info"),
    path("key/list", views.key_list, name="litellm-key-list"),
    path("team/new", views.team_new, name="litellm-team-new"),
    path("team/update", views.team_update, name="litellm-team-update"),
    path("team/delete", views.team_delete, name="litellm-team-delete"),
    path("team/info", views.team_info, name="litellm-team-info"),
    path("team/list", views.team_list, name="litellm-team-list"),
    path("team/member_add", views.team_member_add, name="litellm-team-member-add"),
    path("user/new", views.user_new, name="litellm-user-new"),
    path("user/info", views.user_info, name="litellm-user-info"),
    path("customer/new", views.customer_new, name="litellm-customer-new"),
    path("model/new", views.model_new, name="litellm-model-new"),
    path("model/info", views.model_info, name="litellm-model-info"),
    path("spend/logs", views.spend_logs, name="litellm-spend-logs"),
    path("health/liveliness", views.health_liveliness, name="litellm-health-liveliness"),
    path("health/readiness", views.health_readiness, name="litellm-health-readiness"),
]
