"""The provisioning REST API (/api/v1/): one router, each app registers its viewsets."""

from rest_framework.routers import DefaultRouter

from apps.guardrails.api import GuardrailPolicyViewSet
from apps.keys.api import ApiTokenViewSet, KeyViewSet
from apps.mcp.api import McpGrantViewSet, McpServerViewSet
from apps.proxy.api import DeploymentViewSet, ModelPriceViewSet
from apps.spend.api import SpendLogViewSet, SpendSummaryViewSet
from apps.teams.api import (
    AccessGroupViewSet,
    CustomerViewSet,
    MembershipViewSet,
    OrganizationViewSet,
    TeamViewSet,
    UserViewSet,
)

router = DefaultRouter()
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("teams", TeamViewSet, basename="team")
router.register("members", MembershipViewSet, basename="member")
router.register("users", UserViewSet, basename="user")
router.register("customers", CustomerViewSet, basename="customer")
router.register("keys", KeyViewSet, basename="key")
router.register("tokens", ApiTokenViewSet, basename="api-token")
router.register("access-groups", AccessGroupViewSet, basename="access-group")
router.register("guardrails", GuardrailPolicyViewSet, basename="guardrail-policy")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("models", ModelPriceViewSet, basename="model")
router.register("mcp/servers", McpServerViewSet, basename="mcp-server")
router.register("mcp/grants", McpGrantViewSet, basename="mcp-grant")
router.register("spend/logs", SpendLogViewSet, basename="spend-log")
router.register("spend/summary", SpendSummaryViewSet, basename="spend-summary")

urlpatterns = router.urls
