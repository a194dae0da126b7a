from django.urls import path

from . import class_views, views

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
    path("classes/", class_views.class_list, name="classes"),
    path("classes/new/", class_views.class_new, name="class-new"),
    path("classes/<int:class_id>/", class_views.class_detail, name="class"),
    path("classes/<int:class_id>/end/", class_views.class_end, name="class-end"),
    path("classes/<int:class_id>/dashboard/", class_views.class_dashboard, name="class-dashboard"),
    path("classes/<int:class_id>/message/", class_views.class_message, name="class-message"),
    path("classes/<int:class_id>/brokers/", class_views.class_brokers, name="class-brokers"),
    path(
        "classes/<int:class_id>/brokers/start/",
        class_views.class_brokers_start,
        name="class-brokers-start",
    ),
    path(
        "classes/<int:class_id>/brokers/<str:node>/",
        class_views.class_broker_node,
        name="class-broker-node",
    ),
    path(
        "classes/<int:class_id>/labs/<str:lab_id>/reset/",
        class_views.class_lab_reset,
        name="class-lab-reset",
    ),
    path(
        "classes/<int:class_id>/labs/<str:lab_id>/end/",
        class_views.class_lab_end,
        name="class-lab-end",
    ),
    path("classes/<int:class_id>/learn/", class_views.class_learn, name="class-learn"),
    path(
        "classes/<int:class_id>/exercises/<slug:slug>/start/",
        class_views.class_lab_start,
        name="class-lab-start",
    ),
    path("join/", class_views.join, name="class-join"),
    path("join/<str:code>/", class_views.join, name="class-join-code"),
]
