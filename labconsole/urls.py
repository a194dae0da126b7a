from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # set_language (the switch in the header) and the words lab.js and theme.js show, in
    # the reader's language (locale/*/LC_MESSAGES/djangojs.po).
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("", include("exercises.urls")),
]

handler400 = "labconsole.errors.bad_request"
handler403 = "labconsole.errors.permission_denied"
handler404 = "labconsole.errors.page_not_found"
handler500 = "labconsole.errors.server_error"
