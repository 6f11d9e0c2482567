// units.js: sizes in words for people, one style for the package's messages and for pages built on it (the demo).

/**
 * A byte count as people read it: binary units (1 KB = 1024 B), one decimal below 10 and none above ("9.5 MB",
 * "977 KB", "12 GB"); '–' for a size that is not known (null, undefined, NaN, infinite).
 * @param {number | null | undefined} n bytes
 * @returns {string}
 */
export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (Math.abs(n) < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(Math.abs(v) < 10 ? 1 : 0)} ${units[i]}`;
}
