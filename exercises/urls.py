from django.urls import path

from . import views

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("exercises/<slug:slug>/", views.exercise, name="exercise"),
    path("exercises/<slug:slug>/start/", views.lab_start, name="lab-start"),
    path("exercises/<slug:slug>/brokers/", views.exercise_brokers, name="exercise-brokers"),
    path(
        "exercises/<slug:slug>/brokers/start/",
        views.exercise_brokers_start,
        name="exercise-brokers-start",
    ),
    path("labs/<str:lab_id>/", views.lab, name="lab"),
    path("labs/<str:lab_id>/workloads/<str:name>/", views.lab_workload, name="lab-workload"),
    path("labs/<str:lab_id>/steps/", views.lab_steps, name="lab-steps"),
    path("labs/<str:lab_id>/steps/<str:step>/", views.lab_step, name="lab-step"),
    path("labs/<str:lab_id>/publish/", views.lab_publish, name="lab-publish"),
    path("labs/<str:lab_id>/topology/", views.lab_topology, name="lab-topology"),
    path("labs/<str:lab_id>/topology/panel/", views.lab_topology_panel, name="lab-topology-panel"),
    path("labs/<str:lab_id>/brokers/", views.lab_brokers, name="lab-brokers"),
    path("labs/<str:lab_id>/brokers/<str:node>/", views.lab_broker_node, name="lab-broker-node"),
    path("labs/<str:lab_id>/reset/", views.lab_reset, name="lab-reset"),
    path("labs/<str:lab_id>/end/", views.lab_end, name="lab-end"),
]
