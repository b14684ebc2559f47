import json

from django.apps import apps
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from posync.webhooks.django_adapter import webhook_urlpatterns
from tests.embed.pos import record_order, webhook_receiver


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    order = json.loads(request.body)
    record_order(order["id"], order["total"])
    return JsonResponse(order, status=201)


sync = apps.get_app_config("pos").sync  # built by PosConfig.ready, before the URLconf is loaded
urlpatterns = [
    path("orders", create_order),
    path("api/v1/webhooks/cloud/", include(webhook_urlpatterns(webhook_receiver(sync)))),
]
