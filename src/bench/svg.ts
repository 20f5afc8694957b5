/**
 * A tiny grouped bar chart in SVG, enough for the benchmark's charts: groups along x, one bar per
 * series in each group, linear or log10 y axis, a legend. No dependencies. Pure.
 */

export interface BarChart {
  readonly title: string;
  readonly unit: string;
  readonly groups: readonly string[];
  readonly series: readonly { readonly name: string; readonly values: readonly (number | null)[] }[];
  readonly log?: boolean;
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k`;
  if (v >= 10) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

export function barChart(c: BarChart): string {
  const W = 760;
  const H = 360;
  const left = 64;
  const right = 16;
  const top = 40;
  const bottom = 70;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const all = c.series.flatMap((s) => s.values.filter((v): v is number => v !== null && v > 0));
  const max = all.length ? Math.max(...all) : 1;
  const min = all.length ? Math.min(...all) : 1;
  const log = c.log === true && all.length > 0;
  const lo = log ? Math.floor(Math.log10(min)) : 0;
  const hi = log ? Math.max(lo + 1, Math.ceil(Math.log10(max))) : max * 1.1;
  const y = (v: number): number => {
    const f = log ? (Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo) : v / hi;
    return top + plotH - f * plotH;
  };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  // Grid and y labels.
  const ticks: number[] = [];
  if (log) for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  else for (let i = 0; i <= 5; i++) ticks.push((hi / 5) * i);
  for (const t of ticks) {
    const yy = y(t).toFixed(1);
    out.push(`<line x1="${left}" x2="${W - right}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 4}" y="${yy}" text-anchor="end" dominant-baseline="middle">${fmt(t)}</text>`);
  }
  out.push(`<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle">${esc(c.unit)}${log ? ' (log)' : ''}</text>`);
  const gw = plotW / Math.max(1, c.groups.length);
  const bw = Math.max(2, (gw * 0.8) / Math.max(1, c.series.length));
  c.groups.forEach((g, gi) => {
    const gx = left + gi * gw + gw * 0.1;
    c.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === null || v === undefined || !(v > 0)) return;
      const x = gx + si * bw;
      const yy = y(v);
      out.push(`<rect x="${x.toFixed(1)}" y="${yy.toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(top + plotH - yy).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} ${g}: ${fmt(v)} ${c.unit}`)}</title></rect>`);
    });
    out.push(`<text x="${(left + gi * gw + gw / 2).toFixed(1)}" y="${top + plotH + 14}" text-anchor="middle">${esc(g)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${W - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  c.series.forEach((s, si) => {
    const lx = left + (si % 4) * 170;
    const ly = H - 34 + Math.floor(si / 4) * 14;
    out.push(`<rect x="${lx}" y="${ly - 8}" width="10" height="10" fill="${COLORS[si % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
