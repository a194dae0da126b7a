"""What every page's header needs to know about the user: its sections depend on it."""

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from . import classes, selectors


def navigation(request: HttpRequest) -> dict:
    """Lazy, so that a page that draws no header (a JSON answer, a partial) asks nothing."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "nav_instructor": SimpleLazyObject(lambda: selectors.user_is_instructor(user)),
        "nav_membership": SimpleLazyObject(lambda: classes.membership_current(user=user)),
    }
