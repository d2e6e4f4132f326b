// DagView front end: the SVG arrives once per drawn structure; statuses only switch CSS
// classes on <g class="pp-node" data-node="..."> groups, and folded sweep groups
// (<g class="pp-group" data-group="...">) take the status Python worked out for them. A click
// on a node sets `selected`, on a folded group adds it to `expanded`. The picture scrolls in
// its box and zooms: the toolbar, Ctrl + wheel, a pinch (trackpad or touch). No keys: in a
// notebook they belong to its shortcuts (0 0 restarts the kernel).

const STATUS_PREFIX = "status-";
const PX_PER_UNIT = 4 / 3; // the SVG's user units are points
const ZOOM_STEP = 1.25;
const ZOOM_MIN = 0.2;
const ZOOM_MAX = 4;
const FILE_NAME = "pipeline-dag.svg";
const WIDEST_ASK = 800; // px: the most width the view asks of a row it shares; wider scrolls
const SVG_NS = "http://www.w3.org/2000/svg";
const TICK_MS = 500; // how often a running node's seconds are redrawn

function slug(status) {
  return String(status).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "unknown";
}

// same text as phys_pipeline.views.node_title
function titleText(id, label, status, reason) {
  const head = !label || label === id ? id : `${id} (${label})`;
  const lines = [head, `status: ${status}`];
  if (reason) lines.push(`why: ${reason}`);
  return lines.join("\n");
}

function setStatus(g, status) {
  const wanted = STATUS_PREFIX + slug(status);
  if (g.classList.contains(wanted)) return;
  for (const cls of [...g.classList]) {
    if (cls.startsWith(STATUS_PREFIX)) g.classList.remove(cls);
  }
  g.classList.add(wanted);
}

function setTitle(g, text) {
  const title = g.querySelector("title");
  if (title) title.textContent = text;
}

function button(className, text, help, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.title = help;
  b.setAttribute("aria-label", help);
  b.addEventListener("click", onClick);
  return b;
}

function render({ model, el }) {
  el.classList.add("pp-dag-view");
  const toolbar = document.createElement("div");
  toolbar.className = "pp-dag-toolbar";
  const box = document.createElement("div");
  box.className = "pp-dag-box";
  box.title = "Ctrl + wheel or pinch to zoom";
  const chips = document.createElement("span");
  chips.className = "pp-dag-expanded";
  let zoom = 1;
  let anchor = null; // where an unfolded group was clicked, kept in view when it redraws

  const svgOf = () => box.querySelector("svg.pp-dag");
  const level = button("pp-zoom-reset", "100%", "zoom to 100%", () => zoomTo(1));
  toolbar.append(
    button("pp-zoom-out", "\u2212", "zoom out", () => zoomTo(zoom / ZOOM_STEP)),
    level,
    button("pp-zoom-in", "+", "zoom in", () => zoomTo(zoom * ZOOM_STEP)),
    button("pp-zoom-fit", "fit", "zoom to fit the whole DAG", fit),
    button("pp-download", "\u2913 SVG", "download the DAG as an SVG file", download),
    chips,
  );
  el.append(toolbar, box);

  function natural(svg) {
    const view = svg.viewBox.baseVal;
    return [view.width * PX_PER_UNIT, view.height * PX_PER_UNIT];
  }

  function applyZoom() {
    const svg = svgOf();
    if (svg) {
      const [width, height] = natural(svg);
      svg.style.width = `${width * zoom}px`;
      svg.style.height = `${height * zoom}px`;
    }
    level.textContent = `${Math.round(zoom * 100)}%`;
    box.dataset.zoom = String(zoom);
  }

  // zoom to `next`, keeping the picture's point under (clientX, clientY) where it is
  function zoomTo(next, clientX, clientY) {
    next = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, next));
    const frame = box.getBoundingClientRect();
    const dx = (clientX ?? frame.left + box.clientWidth / 2) - frame.left;
    const dy = (clientY ?? frame.top + box.clientHeight / 2) - frame.top;
    const x = (box.scrollLeft + dx) / zoom;
    const y = (box.scrollTop + dy) / zoom;
    zoom = next;
    applyZoom();
    box.scrollLeft = x * zoom - dx;
    box.scrollTop = y * zoom - dy;
  }

  // the whole picture in view (never above 100%: a small DAG already fits)
  function fit() {
    const svg = svgOf();
    if (!svg) return;
    const [width, height] = natural(svg);
    const tallest = parseFloat(getComputedStyle(box).maxHeight) || box.clientHeight;
    const inner = box.clientWidth - 2;
    zoomTo(Math.min(1, inner / width, (tallest - 2) / height));
    box.scrollLeft = 0;
    box.scrollTop = 0;
  }

  function onWheel(event) {
    if (!event.ctrlKey && !event.metaKey) return; // a plain wheel scrolls, as everywhere
    event.preventDefault();
    zoomTo(zoom * Math.exp(-event.deltaY * 0.002), event.clientX, event.clientY);
  }

  // Safari's trackpad pinch (other browsers send it as Ctrl + wheel)
  let gestureZoom = 1;
  function onGestureStart(event) {
    event.preventDefault();
    gestureZoom = zoom;
  }
  function onGestureChange(event) {
    event.preventDefault();
    zoomTo(gestureZoom * event.scale, event.clientX, event.clientY);
  }

  // two fingers on a touch screen; one finger still scrolls (touch-action in the CSS)
  const touches = new Map();
  let pinch = null;
  function spread() {
    const [a, b] = touches.values();
    return [Math.hypot(a.clientX - b.clientX, a.clientY - b.clientY), a, b];
  }
  function onPointerDown(event) {
    if (event.pointerType !== "touch") return;
    touches.set(event.pointerId, event);
    if (touches.size === 2) pinch = { distance: spread()[0], zoom };
  }
  function onPointerMove(event) {
    if (!touches.has(event.pointerId)) return;
    touches.set(event.pointerId, event);
    if (!pinch || touches.size !== 2) return;
    const [distance, a, b] = spread();
    const [x, y] = [(a.clientX + b.clientX) / 2, (a.clientY + b.clientY) / 2];
    zoomTo((pinch.zoom * distance) / pinch.distance, x, y);
  }
  function onPointerUp(event) {
    touches.delete(event.pointerId);
    if (touches.size < 2) pinch = null;
  }

  function download() {
    const svg = svgOf();
    if (!svg) return;
    const copy = svg.cloneNode(true);
    copy.removeAttribute("style"); // its own width and height: the picture at 100%
    for (const g of copy.querySelectorAll(".pp-selected")) g.classList.remove("pp-selected");
    const text = new XMLSerializer().serializeToString(copy);
    const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = FILE_NAME;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function paintStatuses() {
    const statuses = model.get("statuses") || {};
    const reasons = model.get("reasons") || {};
    for (const g of box.querySelectorAll("g.pp-node")) {
      const id = g.getAttribute("data-node");
      const status = statuses[id];
      if (status === undefined) continue;
      setStatus(g, status);
      setTitle(g, titleText(id, g.getAttribute("data-label"), status, reasons[id]));
    }
  }

  // running nodes: seconds so far (and progress) in place of the stage's name, a progress bar
  // along the bottom of the box
  let runningSince = 0; // performance.now() when `running` last came: its seconds are as of then
  let ticker = null;
  function paintRunning() {
    const running = model.get("running") || {};
    const waited = (performance.now() - runningSince) / 1000;
    for (const g of box.querySelectorAll("g.pp-node")) {
      for (const old of g.querySelectorAll(".pp-running-mark")) old.remove();
      const label = g.querySelector("text.pp-label");
      if (label) label.classList.remove("pp-running-hidden");
      const node = running[g.getAttribute("data-node")];
      const frame = g.querySelector("rect");
      const name = g.querySelector("text.pp-id");
      if (!node || !frame || !name) continue;
      const seconds = document.createElementNS(SVG_NS, "text");
      seconds.setAttribute("class", "pp-running-mark pp-elapsed");
      seconds.setAttribute("x", name.getAttribute("x"));
      const below = parseFloat(name.getAttribute("y")) + 12;
      seconds.setAttribute("y", label ? label.getAttribute("y") : String(below));
      seconds.setAttribute("text-anchor", "middle");
      seconds.setAttribute("font-size", (label || name).getAttribute("font-size"));
      const percent = node.fraction == null ? "" : ` ${Math.round(node.fraction * 100)}%`;
      seconds.textContent = `${(node.elapsed_s + waited).toFixed(1)} s${percent}`;
      if (label) label.classList.add("pp-running-hidden");
      g.append(seconds);
      if (node.fraction != null) {
        const [x, y] = [frame.x.baseVal.value, frame.y.baseVal.value];
        const [w, h] = [frame.width.baseVal.value, frame.height.baseVal.value];
        const bar = document.createElementNS(SVG_NS, "rect");
        bar.setAttribute("class", "pp-running-mark pp-node-progress");
        bar.setAttribute("x", String(x + 2));
        bar.setAttribute("y", String(y + h - 4));
        bar.setAttribute("width", String(Math.max(0, (w - 4) * node.fraction)));
        bar.setAttribute("height", "2.5");
        g.append(bar);
      }
      if (node.message) {
        const title = g.querySelector("title");
        if (title && !title.textContent.includes("\nnow: ")) {
          title.textContent += `\nnow: ${node.message}`;
        }
      }
    }
    const anyRunning = Object.keys(running).length > 0;
    if (anyRunning && ticker === null) ticker = setInterval(paintRunning, TICK_MS);
    if (!anyRunning && ticker !== null) {
      clearInterval(ticker);
      ticker = null;
    }
  }
  function onRunning() {
    runningSince = performance.now();
    paintStatuses(); // tooltips afresh: a message replaces the last one
    paintRunning();
  }

  function paintGroups() {
    const groups = model.get("groups") || {};
    for (const g of box.querySelectorAll("g.pp-group")) {
      const group = groups[g.getAttribute("data-group")];
      if (!group) continue;
      setStatus(g, group.status);
      setTitle(g, `${group.title}\n(click to show the ${group.count} variants)`);
    }
    const expanded = (model.get("expanded") || []).filter((id) => groups[id]);
    chips.replaceChildren(
      ...expanded.map((id) =>
        button(
          "pp-fold",
          `fold ${id} \u00d7${groups[id].count}`,
          `draw the ${groups[id].count} variants of ${id} as one box again`,
          () => {
            model.set("expanded", (model.get("expanded") || []).filter((other) => other !== id));
            model.save_changes();
          },
        ),
      ),
    );
  }

  function paintSelection() {
    const selected = model.get("selected");
    for (const g of box.querySelectorAll("g.pp-node")) {
      g.classList.toggle("pp-selected", g.getAttribute("data-node") === selected);
    }
  }

  // The box's width never follows the zoom (its CSS contains it): it asks for the picture's
  // width at 100%, so a row it shares keeps its shape while one zooms.
  function askWidth() {
    const svg = svgOf();
    const width = svg ? Math.min(natural(svg)[0], WIDEST_ASK) : 0;
    box.style.containIntrinsicInlineSize = `${Math.ceil(width) + 2}px`;
  }

  function draw() {
    box.innerHTML = model.get("svg") || "";
    askWidth();
    applyZoom();
    if (anchor && svgOf()) {
      // the same fraction of the new picture under the same point of the box
      const picture = svgOf().getBoundingClientRect();
      box.scrollLeft = anchor.fx * picture.width - anchor.dx;
      box.scrollTop = anchor.fy * picture.height - anchor.dy;
    }
    anchor = null;
    paintStatuses();
    paintGroups();
    paintSelection();
    paintRunning();
  }

  function onClick(event) {
    const target = event.target;
    if (!target.closest) return;
    const group = target.closest("g.pp-group");
    if (group) {
      const id = group.getAttribute("data-group");
      const picture = svgOf().getBoundingClientRect();
      const frame = box.getBoundingClientRect();
      anchor = {
        fx: (event.clientX - picture.left) / picture.width,
        fy: (event.clientY - picture.top) / picture.height,
        dx: event.clientX - frame.left,
        dy: event.clientY - frame.top,
      };
      model.set("expanded", [...(model.get("expanded") || []).filter((x) => x !== id), id]);
      model.save_changes();
      return;
    }
    const g = target.closest("g.pp-node");
    if (!g) return;
    const id = g.getAttribute("data-node");
    model.set("selected", model.get("selected") === id ? "" : id);
    model.save_changes();
  }

  const events = {
    click: onClick,
    wheel: onWheel,
    gesturestart: onGestureStart,
    gesturechange: onGestureChange,
    pointerdown: onPointerDown,
    pointermove: onPointerMove,
    pointerup: onPointerUp,
    pointercancel: onPointerUp,
  };
  for (const [name, handler] of Object.entries(events)) {
    box.addEventListener(name, handler, { passive: false });
  }
  const listeners = {
    "change:svg": draw,
    "change:statuses": paintStatuses,
    "change:reasons": paintStatuses,
    "change:groups": paintGroups,
    "change:expanded": paintGroups,
    "change:selected": paintSelection,
    "change:running": onRunning,
  };
  for (const [name, listener] of Object.entries(listeners)) model.on(name, listener);
  draw();

  return () => {
    for (const [name, handler] of Object.entries(events)) box.removeEventListener(name, handler);
    for (const [name, listener] of Object.entries(listeners)) model.off(name, listener);
    if (ticker !== null) clearInterval(ticker);
  };
}

export default { render };
