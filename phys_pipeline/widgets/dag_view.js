// DagView front end: the SVG arrives once per graph structure; statuses only switch CSS
// classes on <g class="pp-node" data-node="..."> groups. A click sets `selected`.

const STATUS_PREFIX = "status-";

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

function render({ model, el }) {
  el.classList.add("pp-dag-view");
  const box = document.createElement("div");
  box.className = "pp-dag-box";
  el.appendChild(box);

  const groups = () => box.querySelectorAll("g.pp-node");

  function paintStatuses() {
    const statuses = model.get("statuses") || {};
    const reasons = model.get("reasons") || {};
    for (const g of groups()) {
      const id = g.getAttribute("data-node");
      const status = statuses[id];
      if (status === undefined) continue;
      const wanted = STATUS_PREFIX + slug(status);
      if (!g.classList.contains(wanted)) {
        for (const cls of [...g.classList]) {
          if (cls.startsWith(STATUS_PREFIX)) g.classList.remove(cls);
        }
        g.classList.add(wanted);
      }
      const title = g.querySelector("title");
      if (title) title.textContent = titleText(id, g.getAttribute("data-label"), status, reasons[id]);
    }
  }

  function paintSelection() {
    const selected = model.get("selected");
    for (const g of groups()) {
      g.classList.toggle("pp-selected", g.getAttribute("data-node") === selected);
    }
  }

  function draw() {
    box.innerHTML = model.get("svg") || "";
    paintStatuses();
    paintSelection();
  }

  function onClick(event) {
    const g = event.target.closest && event.target.closest("g.pp-node");
    if (!g) return;
    const id = g.getAttribute("data-node");
    model.set("selected", model.get("selected") === id ? "" : id);
    model.save_changes();
  }

  box.addEventListener("click", onClick);
  model.on("change:svg", draw);
  model.on("change:statuses", paintStatuses);
  model.on("change:reasons", paintStatuses);
  model.on("change:selected", paintSelection);
  draw();

  return () => {
    box.removeEventListener("click", onClick);
    model.off("change:svg", draw);
    model.off("change:statuses", paintStatuses);
    model.off("change:reasons", paintStatuses);
    model.off("change:selected", paintSelection);
  };
}

export default { render };
