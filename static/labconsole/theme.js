// Theme toggle and toasts, on every page.
//
// Loaded without `defer` in <head>: the stored choice must be on <html> before the first
// paint. The stored theme pins <html data-theme>; without one the system preference
// rules (console.css uses light-dark()). data-effective-theme tells the toggle's icon
// which theme is showing either way.
(() => {
  "use strict";
  const KEY = "labconsole.theme";
  const root = document.documentElement;
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

  let stored = null;
  try {
    stored = localStorage.getItem(KEY);
  } catch {
    // Storage can be off (private mode, policies): the toggle then lasts for the page.
  }
  if (stored === "light" || stored === "dark") root.dataset.theme = stored;

  const effective = () => root.dataset.theme || (systemDark.matches ? "dark" : "light");

  function sync() {
    const theme = effective();
    root.dataset.effectiveTheme = theme;
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.setAttribute("aria-pressed", String(theme === "dark"));
    }
  }

  function toggle() {
    const next = effective() === "dark" ? "light" : "dark";
    root.dataset.theme = next;
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // See above.
    }
    sync();
  }

  sync();
  systemDark.addEventListener("change", sync);
  document.addEventListener("DOMContentLoaded", sync);
  // Delegated: htmx can replace the header (history restore) without a page load.
  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-theme-toggle]")) toggle();
  });

  // A small message in the corner; kind is "info", "ok" or "error".
  function toast(message, kind = "info", ms = 5000) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const el = document.createElement("div");
    el.className = `toast toast-${kind}`;
    el.setAttribute("role", kind === "error" ? "alert" : "status");
    el.textContent = message;
    box.append(el);
    while (box.children.length > 4) box.firstElementChild.remove();
    setTimeout(() => {
      el.classList.add("is-leaving");
      setTimeout(() => el.remove(), 300);
    }, ms);
  }
  window.consoleToast = toast;

  // htmx does not swap 5xx answers, 403 or 404 (see the htmx-config meta in _base.html),
  // and a network failure has no answer at all: say so instead of failing silently.
  // gettext and interpolate come from Django's JavaScript catalogue (/jsi18n/, deferred):
  // these run on events, after it has loaded.
  document.addEventListener("htmx:responseError", (event) => {
    const status = event.detail.xhr.status;
    const what =
      status === 403
        ? gettext("not allowed, or your session expired: reload the page")
        : status === 404
          ? gettext("not found")
          : gettext("server error");
    toast(interpolate(gettext("The request failed (%(status)s): %(what)s."), { status, what }, true), "error");
  });
  // A 400 from our views carries the partial that explains the mistake (a workload's
  // settings, a publish form), to be swapped like any answer. With DEBUG, django-htmx's
  // debug script listens on `document` and would replace the whole page with it: stop
  // the event at <body>. htmx itself carries on.
  document.addEventListener("DOMContentLoaded", () => {
    document.body.addEventListener("htmx:beforeOnLoad", (event) => {
      if (event.detail.xhr.status === 400) event.stopPropagation();
    });
  });
  document.addEventListener("htmx:sendError", () => {
    toast(gettext("The server cannot be reached. Check your connection and try again."), "error");
  });
})();
