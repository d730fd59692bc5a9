// Numbers, sizes, dates and durations as the studio writes them.

const GiB = 2 ** 30;
const MiB = 2 ** 20;

/** Bytes in binary units, as the terminal shows them (units.size). */
export function size(n) {
  if (n == null || Number.isNaN(n)) return "unknown";
  if (Math.abs(n) >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (Math.abs(n) >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

export const number = (n) => Number(n).toLocaleString("en-US");

/** "3 min ago", or the date for anything older than a week. */
export function when(seconds) {
  if (!seconds) return "";
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  if (ago < 7 * 86400) return `${Math.floor(ago / 86400)} d ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

export const fullDate = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");

/** "42 s", "3 min", "1 h 5 min". */
export function duration(seconds) {
  if (!(seconds >= 0)) return "";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}
