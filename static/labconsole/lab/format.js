// Words and numbers for the lab page, without the DOM: numbers in the page's language,
// event times, names from graph ids, and text cut to fit a width. The caller measures
// text (`textWidth(text, font)`), so these run anywhere.

// Integers and rates in a language's digits and separators ("–" for nothing).
export function numberFormats(lang) {
  const numberFormat = new Intl.NumberFormat(lang);
  const fmtInt = (n) => (n == null || Number.isNaN(+n) ? "–" : numberFormat.format(Math.round(+n)));
  const fmtRate = (r) => {
    r = +r || 0;
    const digits = r > 0 && r < 10 ? 1 : 0;
    return r.toLocaleString(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  };
  // Milliseconds: one decimal below 10, whole above ("0.4", "12", "1,250").
  const fmtMs = (ms) => {
    ms = +ms || 0;
    const digits = ms < 10 ? 1 : 0;
    return ms.toLocaleString(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  };
  return { fmtInt, fmtRate, fmtMs };
}

// "q:orders" -> "orders" (the default exchange's id "x:" gives "").
export const nameOf = (id) => id.slice(id.indexOf(":") + 1);

// Event times may come as epoch seconds, epoch milliseconds or seconds since the lab began.
export function fmtTime(t) {
  if (t == null) return "";
  t = +t;
  if (t < 1e8) return `+${t.toFixed(3)}s`;
  const d = new Date(t > 1e11 ? t : t * 1000);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// The longest start of `text` that, with "…", fits maxWidth (SVG text does not ellipsize).
export function fitText(text, font, maxWidth, textWidth) {
  text = String(text ?? "");
  if (textWidth(text, font) <= maxWidth) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (textWidth(text.slice(0, mid) + "…", font) <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

