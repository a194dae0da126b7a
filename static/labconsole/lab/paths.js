// Edge paths for the lab diagram: pure geometry (no DOM).

// An orthogonal path with its corners rounded.
export function roundedPolyline(points, radius) {
  let d = `M${points[0][0]} ${points[0][1]}`;
  for (let i = 1; i < points.length - 1; i++) {
    const [px, py] = points[i - 1], [x, y] = points[i], [nx, ny] = points[i + 1];
    const r = Math.min(radius, Math.hypot(x - px, y - py) / 2, Math.hypot(nx - x, ny - y) / 2);
    const ux = Math.sign(x - px), uy = Math.sign(y - py), vx = Math.sign(nx - x), vy = Math.sign(ny - y);
    d += ` L${x - ux * r} ${y - uy * r} Q${x} ${y} ${x + vx * r} ${y + vy * r}`;
  }
  const [lx, ly] = points[points.length - 1];
  return `${d} L${lx} ${ly}`;
}

export const centreOf = (n) => ({ x: n.x + n.w / 2, y: n.y + n.h / 2 });

// The point at fraction t (0..1) along a path sampled as points.
export function pointAt(samples, t) {
  const f = Math.max(0, Math.min(1, t)) * (samples.length - 1);
  const i = Math.floor(f), r = f - i;
  const a = samples[i], b = samples[Math.min(i + 1, samples.length - 1)];
  return [a[0] + (b[0] - a[0]) * r, a[1] + (b[1] - a[1]) * r];
}
