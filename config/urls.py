from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.views import health, metrics
from kafka_bridge.views import kafka_status_page

urlpatterns = [
    path("admin/kafka-status/", admin.site.admin_view(kafka_status_page), name="kafka-status"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
    path("api/", include("orders.urls")),
]

handler404 = "config.api_errors.page_not_found"
handler500 = "config.api_errors.server_error"
