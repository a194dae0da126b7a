// A sandbox's "People here" (docs/sandboxes.md): every open page of the sandbox says
// `hello` when its socket connects, `here` with each ping (every 20 s) and in answer to
// another page's hello or goodbye, and `left` when it closes; main.js hands each such
// message on as a "lab:presence" event. A page not heard from for the card's
// data-expire-seconds (sandboxes.PRESENCE_SECONDS: a browser that crashed, a lost network)
// drops off the list.
(() => {
  const list = document.getElementById("people-list");
  if (!list) return;
  const EXPIRE_MS = Number(document.getElementById("sandbox-people").dataset.expireSeconds) * 1000;
  const you = list.dataset.you;
  const pages = new Map(); // socket -> {user, name, at}

  function render() {
    const now = Date.now();
    const people = new Map();
    for (const [socket, p] of pages) {
      if (now - p.at > EXPIRE_MS) pages.delete(socket);
      else people.set(p.user, p.name);
    }
    const self = list.querySelector("[data-self]");
    for (const li of [...list.children]) if (li !== self) li.remove();
    const me = document.getElementById("sandbox-people").dataset.me;
    for (const [user, name] of [...people].sort((a, b) => a[1].localeCompare(b[1]))) {
      if (String(user) === me) continue; // the first line is you, on every page of yours
      const li = document.createElement("li");
      li.dataset.user = String(user);
      li.textContent = name;
      list.appendChild(li);
    }
    self.title = you;
  }

  document.addEventListener("lab:presence", (e) => {
    const m = e.detail;
    if (m.event === "left") pages.delete(m.socket);
    else pages.set(m.socket, { user: m.user, name: m.name, at: Date.now() });
    render();
  });
  setInterval(render, 5000);

  // Access ends at the next request (an invitation revoked, a team left): the page says so
  // once, in place of the Limits card, whose poll would otherwise fail every few seconds.
  document.body.addEventListener("htmx:responseError", (e) => {
    if (e.detail.xhr.status !== 403) return;
    const limits = document.getElementById("sandbox-limits");
    if (!limits) return;
    const notice = document.createElement("p");
    notice.id = "sandbox-refused";
    notice.className = "result result-error";
    notice.setAttribute("role", "alert");
    notice.textContent = gettext(
      "You no longer have access to this sandbox (its invitation was revoked, or you left its team): nothing you do here is made. Ask its team for a new link."
    );
    limits.replaceWith(notice);
  });
})();
