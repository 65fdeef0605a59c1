// Times in the viewer's own time zone, with a relative hint ("in 4 min", "3 hr ago") that stays
// current while the page is open.

const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const absoluteSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });

const UNITS = [
  ['year', 365 * 24 * 3600],
  ['month', 30 * 24 * 3600],
  ['week', 7 * 24 * 3600],
  ['day', 24 * 3600],
  ['hour', 3600],
  ['minute', 60],
  ['second', 1],
];

export function zoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'your local time zone';
}

export function parse(value) {
  if (!value) return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "in 4 min", "3 hr ago", "now". */
export function relative(value, now = Date.now()) {
  const d = parse(value);
  if (!d) return '';
  const seconds = Math.round((d.getTime() - now) / 1000);
  if (Math.abs(seconds) < 10) return 'now';
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === 'second') {
      return relativeFormat.format(Math.round(seconds / size), unit);
    }
  }
  return '';
}

export function formatAbsolute(value, { seconds = false, date = false } = {}) {
  const d = parse(value);
  if (!d) return '';
  if (date) return dateOnly.format(d);
  return (seconds ? absoluteSeconds : absolute).format(d);
}

/** A <time> element: local date and time, the relative hint, the exact instant as a tooltip. */
export function timeEl(value, { empty = '—', seconds = false, date = false } = {}) {
  const d = parse(value);
  if (!d) {
    const span = document.createElement('span');
    span.className = 'muted';
    span.textContent = empty;
    return span;
  }
  const el = document.createElement('time');
  el.dateTime = d.toISOString();
  el.title = `${absoluteSeconds.format(d)} (${zoneName()})`;
  el.dataset.rel = '1';
  el.dataset.fmt = date ? 'date' : seconds ? 'seconds' : 'minutes';
  render(el, d);
  return el;
}

function render(el, d) {
  const fmt = el.dataset.fmt;
  const abs = formatAbsolute(d, { seconds: fmt === 'seconds', date: fmt === 'date' });
  el.textContent = '';
  el.append(abs);
  const hint = document.createElement('span');
  hint.className = 'rel';
  hint.textContent = relative(d);
  el.append(' ', hint);
}

let ticking = false;

/** Keeps every relative hint on the page current. */
export function startRelativeClock() {
  if (ticking) return;
  ticking = true;
  setInterval(() => {
    for (const el of document.querySelectorAll('time[data-rel]')) {
      const d = parse(el.dateTime);
      if (d) render(el, d);
    }
  }, 30000);
}

/** A value for <input type="datetime-local"> in the viewer's zone. */
export function toLocalInput(value) {
  const d = parse(value);
  if (!d) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The instant a datetime-local input means, as an RFC 3339 UTC string. */
export function fromLocalInput(text) {
  if (!text) return '';
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
