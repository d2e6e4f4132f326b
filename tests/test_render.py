"""Static DAG pictures: every node drawn and addressable, recolouring without re-layout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pydantic import Field

from phys_pipeline import views as render
from phys_pipeline.dag import make_plan
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    SweepOrigin,
)
from phys_pipeline.views.svg import SVG_STYLE

SVG = "{http://www.w3.org/2000/svg}"


class GainCfg(StageConfig):
    gain: float = Field(1.0, gt=0, description="amplitude gain")


class GainStage(PipelineStage[SimpleState, GainCfg]):
    """Multiplies the field amplitude; the smallest stage that still looks like physics."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        st.payload = float(st.payload or 1.0) * self.cfg.gain
        return StageResult(state=st, metrics={"energy": st.payload**2})


def amplifier_chain() -> list[NodeSpec]:
    """seed -> preamp -> {booster, monitor}; booster -> compressor."""
    return [
        NodeSpec("seed", [], GainStage(GainCfg()), op_name="Oscillator"),
        NodeSpec("preamp", ["seed"], GainStage(GainCfg(gain=2.0))),
        NodeSpec("booster", ["preamp"], GainStage(GainCfg(gain=5.0))),
        NodeSpec("monitor", ["preamp"], GainStage(GainCfg(gain=0.01))),
        NodeSpec("compressor__N-512", ["booster"], GainStage(GainCfg(gain=0.9))),
    ]


def node_groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-node"): g for g in root.iter(f"{SVG}g") if "pp-node" in g.get("class", "")}


def classes(svg: str) -> dict[str, str]:
    return {nid: g.get("class", "") for nid, g in node_groups(svg).items()}


@pytest.fixture(params=["auto", "layered"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_node_is_drawn_with_an_addressable_group(engine: str) -> None:
    svg = render.nodes_svg(amplifier_chain(), engine=engine)
    groups = node_groups(svg)
    assert set(groups) == {n.id for n in amplifier_chain()}
    for nid, g in groups.items():
        assert g.get("id") == f"node-{render.dom_id(nid)}"
        assert "node" in g.get("class", "").split()
        assert nid in "".join(g.itertext())


def test_edges_are_drawn_once_each(engine: str) -> None:
    root = ET.fromstring(render.nodes_svg(amplifier_chain(), engine=engine))
    edges = {
        (g.get("data-src"), g.get("data-dst"))
        for g in root.iter(f"{SVG}g")
        if "pp-edge" in g.get("class", "")
    }
    assert edges == {(d, n.id) for n in amplifier_chain() for d in n.deps}


def test_dom_ids_are_css_safe_and_distinct() -> None:
    ids = ["b__N-512", "b_5f__5f_N-512", "a.b", "a_2e_b", "grid"]
    escaped = [render.dom_id(i) for i in ids]
    assert len(set(escaped)) == len(ids)
    assert all(e.replace("-", "").replace("_", "").isalnum() for e in escaped)
    assert render.dom_id("grid") == "grid"


def test_statuses_colour_nodes_by_css_class() -> None:
    statuses = {"seed": "hit", "preamp": "ran", "booster": "failed", "monitor": "skipped"}
    found = classes(render.dag_svg(amplifier_chain(), statuses))
    assert "status-hit" in found["seed"]
    assert "status-ran" in found["preamp"]
    assert "status-failed" in found["booster"]
    assert "status-skipped" in found["monitor"]
    assert "status-not-run" in found["compressor__N-512"]  # the default


def test_recolouring_changes_exactly_the_changed_node() -> None:
    nodes = amplifier_chain()
    before = {n.id: "ran" for n in nodes}
    after = {**before, "booster": "stale"}
    old, new = classes(render.dag_svg(nodes, before)), classes(render.dag_svg(nodes, after))
    changed = {nid for nid in old if old[nid] != new[nid]}
    assert changed == {"booster"}
    assert "status-stale" in new["booster"]


def test_string_recolour_matches_a_fresh_render() -> None:
    nodes = amplifier_chain()
    svg = render.dag_svg(nodes, {n.id: "stale" for n in nodes})
    swapped = render.recolour(svg, {"seed": "running", "monitor": "hit"})
    assert classes(swapped) == classes(
        render.dag_svg(
            nodes, {**{n.id: "stale" for n in nodes}, "seed": "running", "monitor": "hit"}
        )
    )


def test_recolouring_a_100_node_dag_reflects_new_statuses() -> None:
    rng = np.random.default_rng(3)
    nodes = [NodeSpec("n0", [], GainStage(GainCfg()))]
    nodes += [
        NodeSpec(f"n{i}", [f"n{int(rng.integers(i))}"], GainStage(GainCfg())) for i in range(1, 100)
    ]
    ran = {n.id: "ran" for n in nodes}
    render.dag_svg(nodes, ran)
    stale = {**ran, **{f"n{i}": "stale" for i in range(50, 60)}}
    found = classes(render.dag_svg(nodes, stale))
    assert {nid for nid, c in found.items() if "status-stale" in c} == {
        f"n{i}" for i in range(50, 60)
    }


def _boxes_and_edges(svg: str) -> tuple[dict, list]:
    """Node id -> (left, top, right, bottom) of its rect; edges as (src, dst, first point of
    the path, tip of the arrowhead), all read back from the SVG."""
    root = ET.fromstring(svg)
    boxes = {}
    for nid, g in node_groups(svg).items():
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        x, y = float(rect.get("x", 0)), float(rect.get("y", 0))
        boxes[nid] = (x, y, x + float(rect.get("width", 0)), y + float(rect.get("height", 0)))
    edges = []
    for g in root.iter(f"{SVG}g"):
        if "pp-edge" not in g.get("class", ""):
            continue
        path, arrow = g.find(f"{SVG}path"), g.find(f"{SVG}polygon")
        assert path is not None and arrow is not None
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
        tip = [float(v) for v in arrow.get("points", "").split()[0].split(",")]
        edges.append((g.get("data-src"), g.get("data-dst"), tuple(numbers[:2]), tuple(tip)))
    return boxes, edges


def _usable_engines() -> list[str]:
    engines = ["layered"]
    try:
        import pygraphviz  # noqa: F401

        engines.append("pygraphviz")
    except ImportError:
        pass
    if shutil.which("dot"):
        engines.append("graphviz")
    return engines


@pytest.mark.parametrize("engine_name", _usable_engines())
def test_edges_leave_and_reach_their_node_boxes(engine_name: str) -> None:
    svg = render.nodes_svg(amplifier_chain(), engine=engine_name)  # type: ignore[arg-type]
    boxes, edges = _boxes_and_edges(svg)
    assert len(edges) == 4
    tol = 3.0
    for src, dst, (x0, y0), (x1, y1) in edges:
        left, _, right, bottom = boxes[src]
        assert left <= x0 <= right and abs(y0 - bottom) <= tol, (src, dst, x0, y0, boxes[src])
        left, top, right, _ = boxes[dst]
        assert left <= x1 <= right and abs(y1 - top) <= tol, (src, dst, x1, y1, boxes[dst])


@pytest.mark.parametrize("engine_name", _usable_engines())
def test_straight_edges_run_through_the_node_centres(engine_name: str) -> None:
    """A chain is drawn as one column: every edge is vertical through the box centres."""
    chain = [NodeSpec("a", [], GainStage(GainCfg()))]
    chain += [NodeSpec(n, [p], GainStage(GainCfg())) for p, n in zip("abc", "bcd", strict=True)]
    boxes, edges = _boxes_and_edges(render.nodes_svg(chain, engine=engine_name))  # type: ignore[arg-type]
    for src, dst, (x0, _), (x1, _) in edges:
        centre = (boxes[src][0] + boxes[src][2]) / 2
        assert abs(x0 - centre) < 1.0 and abs(x1 - centre) < 1.0, (src, dst, x0, x1, centre)


def test_a_status_change_on_a_100_node_dag_reuses_its_layout() -> None:
    """The layout is memoised per structure, so a status change only rewrites the node groups:
    no layout engine runs again (its speed is a benchmark's business, not a test's)."""
    rng = np.random.default_rng(7)
    nodes = [NodeSpec("n0", [], GainStage(GainCfg()))]
    nodes += [
        NodeSpec(f"n{i}", [f"n{int(rng.integers(i))}"], GainStage(GainCfg())) for i in range(1, 100)
    ]
    plan = make_plan(nodes, SimpleState(payload=1.0))
    render.dag_svg(plan, {})  # cold: lays out once
    laid_out = render.layout.cache_info().misses
    for run in range(5):
        statuses = {n.id: "ran" for n in nodes} | {f"n{run * 10}": "running"}
        reasons = {n.id: "config changed" for n in nodes}
        svg = render.dag_svg(plan, statuses, reasons)
        assert "status-running" in classes(svg)[f"n{run * 10}"]
    assert render.layout.cache_info().misses == laid_out


def test_layout_is_memoised_per_structure() -> None:
    structure = render.structure_of(amplifier_chain())
    first = render.layout(structure, "layered")
    assert render.layout(structure, "layered") is first
    relabelled = [n.replace(op_name="Laser") if n.id == "seed" else n for n in amplifier_chain()]
    assert render.structure_of(relabelled) != structure


def test_legend_lists_every_status() -> None:
    root = ET.fromstring(render.nodes_svg(amplifier_chain()))
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "pp-legend")
    text = " ".join(legend.itertext())
    for status in render.STATUS_COLOURS:
        assert render.LEGEND_TEXT.get(status, status) in text
    assert "cache hit" in text


def test_tooltip_names_label_status_and_reason() -> None:
    svg = render.dag_svg(
        amplifier_chain(), {"seed": "stale"}, {"seed": "config changed"}, engine="layered"
    )
    title = node_groups(svg)["seed"].find(f"{SVG}title")
    assert title is not None
    assert title.text == "seed (Oscillator)\nstatus: stale\nwhy: config changed"


def test_fallback_layout_puts_parents_above_children() -> None:
    lay = render.layout(render.structure_of(amplifier_chain()), "layered")
    assert lay.engine == "layered"
    y = {box.id: box.y for box in lay.nodes}
    assert y["seed"] < y["preamp"] < y["booster"] < y["compressor__N-512"]
    assert y["booster"] == y["monitor"]
    assert 'data-engine="layered"' in render.nodes_svg(amplifier_chain(), engine="layered")


def test_pygraphviz_layout_is_used_when_available() -> None:
    pytest.importorskip("pygraphviz")
    svg = render.nodes_svg(amplifier_chain(), engine="pygraphviz")
    assert 'data-engine="pygraphviz"' in svg
    assert set(node_groups(svg)) == {n.id for n in amplifier_chain()}


def test_plan_shows_itself_as_svg() -> None:
    plan = make_plan(amplifier_chain(), SimpleState(payload=1.0))
    svg = plan._repr_svg_()
    assert set(node_groups(svg)) == set(plan.order)


def test_result_html_has_dag_summary_and_metrics() -> None:
    result = DagExecutor().run(SimpleState(payload=1.0), amplifier_chain())
    page = result._repr_html_()
    assert result.summary() in page
    assert "status-ran" in page
    assert "preamp" in page and "energy" in page
    assert '<table class="pp-metrics">' in page


def test_importing_the_package_loads_no_jupyter_modules() -> None:
    code = (
        "import sys, phys_pipeline, phys_pipeline.render; "
        "heavy = {'ipywidgets', 'anywidget', 'pygraphviz', 'graphviz', 'matplotlib'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- folded sweeps ------------------------------------------------------------------------------


def swept_amplifier(gains: tuple[float, ...] = (3.0, 5.0, 8.0)) -> list[NodeSpec]:
    """seed -> preamp -> booster (gain swept) -> compressor -> report (gathers every
    variant), preamp -> monitor: booster and compressor get a variant per gain."""
    chain = [
        NodeSpec("seed", [], GainStage(GainCfg()), op_name="Oscillator"),
        NodeSpec("preamp", ["seed"], GainStage(GainCfg(gain=2.0))),
        NodeSpec("booster", ["preamp"], GainStage(GainCfg(gain=5.0))),
        NodeSpec("compressor", ["booster"], GainStage(GainCfg(gain=0.9))),
        NodeSpec("monitor", ["preamp"], GainStage(GainCfg(gain=0.01))),
        NodeSpec("report", ["compressor"], GainStage(GainCfg())),
    ]
    spec = SweepSpec("booster", {"gain": list(gains)})
    return expand_sweep(chain, [spec], gather=["report"])


def group_elements(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {
        g.get("data-group"): g for g in root.iter(f"{SVG}g") if "pp-group" in g.get("class", "")
    }


def edge_pairs(svg: str) -> set[tuple[str | None, str | None]]:
    root = ET.fromstring(svg)
    return {
        (g.get("data-src"), g.get("data-dst"))
        for g in root.iter(f"{SVG}g")
        if "pp-edge" in g.get("class", "")
    }


def test_sweep_groups_gather_the_variants_of_each_swept_node() -> None:
    nodes = swept_amplifier()
    groups = render.sweep_groups(nodes)
    assert groups == {
        "booster": ("booster__gain-3.0", "booster__gain-5.0", "booster__gain-8.0"),
        "compressor": ("compressor__gain-3.0", "compressor__gain-5.0", "compressor__gain-8.0"),
    }
    plan = make_plan(nodes, SimpleState(payload=1.0))
    assert render.sweep_groups(plan) == groups  # a Plan groups as its nodes do
    assert render.sweep_groups(swept_amplifier(gains=(3.0,))) == {}  # one variant: no group


def test_a_base_id_naming_another_node_is_never_folded() -> None:
    """A folded box takes its base id, so a group whose base id is some other node's stays
    unfolded: two boxes never share an id."""
    nodes = [
        NodeSpec("booster", [], GainStage(GainCfg())),
        *(
            NodeSpec(f"copy{i}", ["booster"], GainStage(GainCfg()), sweep=SweepOrigin("booster"))
            for i in range(3)
        ),
    ]
    assert render.sweep_groups(nodes) == {}


def test_a_folded_group_is_one_stacked_box_with_its_count(engine: str) -> None:
    nodes = swept_amplifier()
    svg = render.dag_svg(nodes, engine=engine, fold=render.sweep_groups(nodes))
    assert set(node_groups(svg)) == {"seed", "preamp", "monitor", "report"}
    groups = group_elements(svg)
    assert set(groups) == {"booster", "compressor"}
    booster = groups["booster"]
    assert booster.get("data-count") == "3"
    assert booster.get("id") == "group-booster"
    assert next(booster.iter(f"{SVG}text")).text == "booster \u00d73"
    cards = [r.get("class") for r in booster.iter(f"{SVG}rect")]
    assert cards == ["pp-card", "pp-card", None]  # two cards behind the front one
    assert edge_pairs(svg) == {  # the variants' edges, each drawn once
        ("seed", "preamp"),
        ("preamp", "booster"),
        ("preamp", "monitor"),
        ("booster", "compressor"),
        ("compressor", "report"),
    }


def test_unfolding_a_group_draws_its_variants_and_keeps_the_others_folded() -> None:
    nodes = swept_amplifier()
    svg = render.dag_svg(nodes, fold=["compressor"])
    assert set(group_elements(svg)) == {"compressor"}
    assert {"booster__gain-3.0", "booster__gain-5.0", "booster__gain-8.0"} <= set(node_groups(svg))
    assert ("booster__gain-5.0", "compressor") in edge_pairs(svg)
    everything = render.dag_svg(nodes)  # nothing folded unless asked
    assert not group_elements(everything) and len(node_groups(everything)) == len(nodes)


def test_folding_is_part_of_the_memoised_structure() -> None:
    nodes = swept_amplifier()
    structure = render.structure_of(nodes)
    groups = render.sweep_groups(nodes)
    folded = render.fold(structure, groups)
    assert render.fold(structure, {}) is structure
    assert render.DrawnNode("booster", "GainStage", 3) in folded[0]
    assert len(folded[0]) == len(structure[0]) - 4
    assert render.layout(folded, "layered") is render.layout(
        render.fold(structure, groups), "layered"
    )


@pytest.mark.parametrize(
    ("members", "worst"),
    [
        (["ran", "failed", "running", "stale"], "failed"),
        (["ran", "running", "stale", "hit"], "running"),
        (["hit", "stale", "ran"], "stale"),
        (["hit", "ran", "cached"], "cached"),
        (["hit", "ran"], "ran"),
        (["hit", "hit"], "hit"),
        ([], "not run"),
    ],
)
def test_a_folded_group_shows_the_worst_status_of_its_variants(
    members: list[str], worst: str
) -> None:
    assert render.worst_status(members) == worst
    if members:
        nodes = swept_amplifier(gains=tuple(float(g) for g in range(1, len(members) + 1)))
        variants = render.sweep_groups(nodes)["booster"]
        statuses = dict(zip(variants, members, strict=True))
        svg = render.dag_svg(nodes, statuses, fold=["booster"])
        assert render.status_class(worst) in group_elements(svg)["booster"].get("class", "")


def test_a_folded_group_tooltip_counts_statuses_and_reasons() -> None:
    nodes = swept_amplifier()
    variants = render.sweep_groups(nodes)["booster"]
    statuses = dict(zip(variants, ["ran", "stale", "stale"], strict=True))
    reasons = {variants[1]: "config field gain changed", variants[2]: "config field gain changed"}
    svg = render.dag_svg(nodes, statuses, reasons, fold=["booster"])
    title = group_elements(svg)["booster"].find(f"{SVG}title")
    assert title is not None
    assert title.text == (
        "booster \u00d73 (sweep variants)\nstatus: stale\n2 stale, 1 ran\n"
        "why: config field gain changed (2 of 3)"
    )


@pytest.mark.parametrize("engine_name", _usable_engines())
def test_folded_boxes_and_their_cards_lie_inside_the_picture(engine_name: str) -> None:
    nodes = swept_amplifier()
    svg = render.dag_svg(nodes, engine=engine_name, fold=render.sweep_groups(nodes))  # type: ignore[arg-type]
    root = ET.fromstring(svg)
    _, _, width, height = (float(v) for v in root.get("viewBox", "").split())
    for g in group_elements(svg).values():
        for rect in g.iter(f"{SVG}rect"):
            x, y = float(rect.get("x", 0)), float(rect.get("y", 0))
            w, h = float(rect.get("width", 0)), float(rect.get("height", 0))
            assert x >= 0 and x + w <= width and y >= 0 and y + h <= height, (x, y, w, h)


def test_every_colour_reads_a_jupyterlab_variable_with_a_fallback() -> None:
    """Themes: text, lines, background and status hues come from JupyterLab's variables; each
    has a fallback (a picture in an <img> or a downloaded file has no variables)."""
    style = SVG_STYLE
    assert not re.search(r"var\(--[a-z0-9-]+\)", style)  # never a var() without a fallback
    assert ".pp-dag text{fill:var(--jp-ui-font-color1," in style
    assert ".pp-dag .pp-bg{fill:var(--jp-layout-color1," in style
    assert "stroke:var(--jp-ui-font-color2," in style  # edges
    assert (
        "color-mix(in srgb,var(--jp-error-color1,#d32f2f) 40%,var(--jp-layout-color1,#fff))"
        in style
    )
    assert "stroke:var(--jp-warn-color1,#f57c00)" in style


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_status_fills_of_a_static_picture_keep_their_text_legible() -> None:
    """Where no theme variables exist, boxes take the light theme's tints under its text
    (black at 87% on the tint, about #212121): a WCAG contrast ratio of 4.5 at least."""
    text = _luminance("#212121")
    for status, (fill, _) in render.STATUS_COLOURS.items():
        ratio = (_luminance(fill) + 0.05) / (text + 0.05)
        assert ratio >= 4.5, (status, fill, ratio)
