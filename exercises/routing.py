from django.urls import path

from .class_consumers import ClassDashboardConsumer
from .consumers import LabConsumer

websocket_urlpatterns = [
    path("ws/labs/<str:lab_id>/", LabConsumer.as_asgi()),
    path("ws/classes/<int:class_id>/", ClassDashboardConsumer.as_asgi()),
]
