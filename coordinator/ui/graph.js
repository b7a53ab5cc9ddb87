// DAG graphs as SVG: dagre (vendored, MIT) computes a layered layout, this module draws it.
// Nodes are coloured by step status through the `st-<status>` CSS classes.

import dagre from "/ui/vendor/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_H = 34;

function el(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

/** Every step after `name` (its descendants), in no particular order. */
export function descendants(steps, name) {
  const children = new Map();
  for (const s of steps) {
    for (const d of s.depends || []) {
      if (!children.has(d)) children.set(d, []);
      children.get(d).push(s.name);
    }
  }
  const seen = new Set();
  const stack = [name];
  while (stack.length) {
    for (const c of children.get(stack.pop()) || []) {
      if (!seen.has(c)) {
        seen.add(c);
        stack.push(c);
      }
    }
  }
  seen.delete(name);
  return [...seen];
}

/**
 * Draws `steps` ([{name, depends}]) into `container`; `status(name)` gives a step's status,
 * `onClick(name)` is called when a node is clicked. Returns `{update(status), select(name)}`
 * to recolour nodes without laying the graph out again.
 */
export function drawGraph(container, steps, status, onClick) {
  container.textContent = "";
  const g = new dagre.graphlib.Graph();
  const ranksep = steps.length > 60 ? 30 : 40;
  // dagre's default ranker (network-simplex) gives the tightest layout but takes ~0.7 s for
  // 200 steps; tight-tree is ~3x faster and nearly as good.
  const ranker = steps.length > 80 ? "tight-tree" : "network-simplex";
  g.setGraph({ rankdir: steps.length > 40 ? "TB" : "LR", nodesep: 14, ranksep, marginx: 8, marginy: 8, ranker });
  g.setDefaultEdgeLabel(() => ({}));
  const names = new Set(steps.map((s) => s.name));
  for (const s of steps) {
    const w = Math.min(220, Math.max(70, 7.2 * s.name.length + 22));
    g.setNode(s.name, { width: w, height: NODE_H });
  }
  for (const s of steps) for (const d of s.depends || []) if (names.has(d)) g.setEdge(d, s.name);
  dagre.layout(g);
  const { width, height } = g.graph();
  const svg = el("svg", {
    class: "graph",
    viewBox: `0 0 ${Math.max(width, 10)} ${Math.max(height, 10)}`,
    width: Math.max(width, 10),
    height: Math.max(height, 10),
    role: "img",
    "aria-label": "DAG graph",
  });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    const d = pts.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join(" ");
    svg.appendChild(el("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
  }
  const nodes = new Map();
  for (const name of g.nodes()) {
    const n = g.node(name);
    const grp = el("g", { class: "node st-" + (status(name) || "pending"), transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})`, "data-step": name, tabindex: 0 });
    grp.appendChild(el("rect", { width: n.width, height: n.height, rx: 6 }));
    const label = el("text", { x: n.width / 2, y: NODE_H / 2 + 4, "text-anchor": "middle" });
    label.textContent = name.length > 28 ? name.slice(0, 27) + "…" : name;
    const title = el("title");
    title.textContent = name;
    grp.appendChild(title);
    grp.appendChild(label);
    if (onClick) {
      grp.addEventListener("click", () => onClick(name));
      grp.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") onClick(name);
      });
    }
    svg.appendChild(grp);
    nodes.set(name, grp);
  }
  container.appendChild(svg);
  let selected = null;
  return {
    update(statusOf) {
      for (const [name, grp] of nodes) {
        const cls = "node st-" + (statusOf(name) || "pending") + (name === selected ? " selected" : "");
        if (grp.getAttribute("class") !== cls) grp.setAttribute("class", cls);
      }
    },
    select(name) {
      if (selected && nodes.has(selected)) nodes.get(selected).classList.remove("selected");
      selected = name;
      if (name && nodes.has(name)) nodes.get(name).classList.add("selected");
    },
  };
}
