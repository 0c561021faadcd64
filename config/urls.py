from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api.throttling import login_throttled
from config.api.views import (
    ASYNCAPI_FILE,
    ORDER_EXPORT_REQUESTED_V1_FILE,
    AsyncApiView,
    OrderExportRequestedSchemaView,
    health,
    metrics,
)
from kafka_bridge.console.browser.views import record_value_download, topic_list_page, topic_records_page
from kafka_bridge.console.status_page import kafka_status_page

urlpatterns = [
    path("admin/kafka-status/", admin.site.admin_view(kafka_status_page), name="kafka-status"),
    path("admin/kafka/topics/", admin.site.admin_view(topic_list_page), name="kafka-topics"),
    path("admin/kafka/topics/<str:name>/", admin.site.admin_view(topic_records_page), name="kafka-topic-records"),
    path(
        "admin/kafka/topics/<str:name>/<int:partition>/<int:offset>/value",
        admin.site.admin_view(record_value_download),
        name="kafka-record-value",
    ),
    # The login pages, throttled, ahead of the routes they come from (admin/ and
    # rest_framework.urls): reversing "admin:login" and "rest_framework:login" still gives these
    # paths, which now resolve here.
    path("admin/login/", login_throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # The event contracts, under their file names in one folder (contracts/).
    path("api/schema/events/", AsyncApiView.as_view(), name="schema-events"),
    path(f"api/schema/events/{ASYNCAPI_FILE}", AsyncApiView.as_view(), name="schema-events-asyncapi"),
    path(
        f"api/schema/events/{ORDER_EXPORT_REQUESTED_V1_FILE}",
        OrderExportRequestedSchemaView.as_view(),
        name="schema-events-order-export-requested-v1",
    ),
    path(
        "api/auth/login/",
        login_throttled(auth_views.LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    path("api/auth/", include("rest_framework.urls")),
    path("api/health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
    path("api/", include("orders.urls")),
]

handler400 = "config.api.errors.bad_request"
handler404 = "config.api.errors.page_not_found"
handler500 = "config.api.errors.server_error"
