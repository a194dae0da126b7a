// A sandbox's replay (docs/sandboxes.md "Replay"): "Replay" fetches the history the
// sandbox's monitor keeps (one snapshot a second, in chunks from /labs/<id>/replay/);
// the range picks a second, which main.js draws in place of live (the diagram's counters
// and depths, the workloads' counters, the event log) while frames keep arriving; "Back
// to live" draws live again. gettext and friends are Django's JavaScript catalogue.
const card = document.getElementById("sandbox-replay");
if (card) {
  const $ = (id) => document.getElementById(id);
  const range = $("replay-range"), timeEl = $("replay-time"), banner = $("replay-banner");
  const controls = $("replay-controls"), start = $("replay-start"), live = $("replay-live");
  const status = $("replay-status");
  const clock = new Intl.DateTimeFormat(document.documentElement.lang || undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  let seconds = [];
  let timer = 0;

  const lab = () => window.labConsole;
  const at = (t) => clock.format(new Date(t * 1000));
  const ahead = (s) => (s < 90 ? interpolate(gettext("%s s"), [Math.max(0, Math.round(s))]) : interpolate(gettext("%s min"), [Math.round(s / 60)]));

  async function fetchHistory() {
    // Only what is newer than the seconds already here; the monitor forgets the oldest.
    let after = seconds.length ? seconds[seconds.length - 1].t : 0;
    for (;;) {
      const response = await fetch(`${card.dataset.url}?after=${after}`, { headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || response.statusText);
      seconds.push(...body.seconds);
      if (!body.more || !body.seconds.length) {
        const oldest = seconds.length ? seconds[seconds.length - 1].t - body.keep : 0;
        seconds = seconds.filter((s) => s.t > oldest);
        return;
      }
      after = body.seconds[body.seconds.length - 1].t;
    }
  }

  function say() {
    const second = seconds[+range.value];
    if (!second) return;
    timeEl.textContent = at(second.t);
    const liveT = lab().state.liveT || second.t;
    banner.textContent = interpolate(gettext("Replay: %(time)s (live is %(ahead)s ahead)"), { time: at(second.t), ahead: ahead(liveT - second.t) }, true);
  }

  function show() {
    const second = seconds[+range.value];
    if (!second) return;
    lab().replay.show(second);
    card.dataset.replaying = "true";
    banner.hidden = false;
    say();
    if (!timer) timer = setInterval(say, 1000);
  }

  start.addEventListener("click", async () => {
    start.disabled = true;
    status.textContent = gettext("Loading the history…");
    try {
      await fetchHistory();
    } catch (error) {
      status.textContent = interpolate(gettext("No history: %s"), [error.message]);
      return;
    } finally {
      start.disabled = false;
    }
    if (!seconds.length) {
      status.textContent = gettext("Nothing kept yet: the history starts when the sandbox does.");
      return;
    }
    status.textContent = interpolate(ngettext("%s second kept", "%s seconds kept", seconds.length), [seconds.length]);
    range.max = String(seconds.length - 1);
    range.min = "0";
    range.value = range.max;
    controls.hidden = false;
    show();
  });
  range.addEventListener("input", show);
  live.addEventListener("click", () => {
    clearInterval(timer);
    timer = 0;
    lab().replay.live();
    delete card.dataset.replaying;
    banner.hidden = true;
    controls.hidden = true;
    status.textContent = "";
  });
}
