"""The provisioning REST API (/api/v1/): one router, each app registers its viewsets."""

from rest_framework.routers import DefaultRouter

from apps.spend.api import SpendLogViewSet, SpendSummaryViewSet

router = DefaultRouter()
router.register("spend/logs", SpendLogViewSet, basename="spend-log")
router.register("spend/summary", SpendSummaryViewSet, basename="spend-summary")

urlpatterns = router.urls
