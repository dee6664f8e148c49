"""The provisioning REST API (/api/v1/): one router, each app registers its viewsets."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
