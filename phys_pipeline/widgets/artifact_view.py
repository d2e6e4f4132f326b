"""ArtifactView: the last run's figures, metrics and sweep table, for the selected node (or all)
and for the watched nodes that stay on screen whatever is selected.

Output is written as ready-made display-data dicts (``Output.outputs``), not captured with
``with output:``, because auto-runs refresh it from a timer thread where capturing does not
work; figures are rendered to PNG and closed, so inline backends do not show them again.

Each node's artifacts are drawn once per result (lazy ones are called when first shown), and
the PNGs are kept beside the node's cache entry (``DagCache.put_figures``): lazy artifacts are
not cached, so a result loaded after a restart comes without them, and the view shows the kept
figures instead of asking for a rerun. Only drawing stores figures; a run never does. A hit
from the memory tier hands out the very lazy artifacts drawn before, and the view shows what
they drew then (``_Drawings``) instead of drawing them again. After a run each panel's metrics
come first, then its figures are drawn (matplotlib: most of an edit's way to the plot), the
figures of the run before greyed meanwhile; the kernel draws the first half of the new ones
while a process beside it draws the second half, where it can draw them as the kernel would
(``_drawing``), and what either drew is kept and guarded alike.

Figures sit on a light card of their own, whatever the theme, and are saved as drawn: they keep
the stage's colours (dark on white by default, which a dark background would swallow), and a
PNG from the cache cannot follow a theme chosen after it was drawn. Everything else in the
panel takes its colours from the JupyterLab theme (``artifact_view.css``).
"""

from __future__ import annotations

import base64
import html
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import ipywidgets as w

from ..cache.figures import Figures
from ..dag import Plan
from ..errors import CacheError
from ..executor import DagRunResult
from ..fingerprint import stale_parts
from ..record import resolve_artifact
from ..session import LiveSession
from ..types import NodeStatus, StageResult
from ..views import metrics_html, sweep_png, table_html
from ._drawing import PNG_MAGIC, Batch, DrawingProcess, Drawn, draw, shared_drawing_process
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "PNG_MAGIC",
    "ArtifactView",
    "display_data",
]

_CSS = (Path(__file__).parent / "artifact_view.css").read_text(encoding="utf-8")
_EXTENSIONS = {"image/png": "png", "image/svg+xml": "svg"}
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._=+-]+")
_STALE_BADGE = (
    '<span class="pp-badge pp-stale-badge" title="edited since this result was computed: '
    'rerun to update">stale</span>'
)


class _Drawings:
    """What a view drew of each artifact of a cache entry, by the entry's key and the artifact
    object itself (its identity, held weakly): a cache hit from the memory tier hands out the
    very callables of the result computed under its key, and what they drew shows that
    result, so a revisited setup shows its plots without drawing them again. Only a hit looks
    here: a stage may hand out one object in every result, drawn anew each time (a figure it
    keeps to draw into), so what it drew for one key, or before a rerun, is not what it holds
    now. The ``maxsize`` drawn last are kept."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, int], tuple[weakref.ref[Any], Drawn]] = OrderedDict()

    def get(self, key: str, artifact: Any) -> Drawn | None:
        item = self._items.get((key, id(artifact)))
        if item is None or item[0]() is not artifact:  # none, or another object's old id
            return None
        self._items.move_to_end((key, id(artifact)))
        return item[1]

    def put(self, key: str, artifact: Any, drawn: Drawn) -> None:
        try:
            ref = weakref.ref(artifact)
        except TypeError:  # bytes, str: nothing to draw again anyway
            return
        self._items[key, id(artifact)] = (ref, drawn)
        self._items.move_to_end((key, id(artifact)))
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)


def _output(name: str, drawn: Drawn, *, stale: bool = False) -> dict[str, Any]:
    """An nbformat display-data output of one drawn artifact. An image is a card with a
    download link (HTML) plus the bare image, for front ends that show no HTML."""
    if drawn.is_image:
        encoded = base64.b64encode(drawn.data).decode("ascii")
        url = f"data:{drawn.mime};base64,{encoded}"
        file_name = f"{_UNSAFE_IN_FILE_NAMES.sub('_', name)}.{_EXTENSIONS[drawn.mime]}"
        label = html.escape(name)
        card = (
            f'<div class="pp-figure{" pp-stale" if stale else ""}">'
            f'<div class="pp-figure-card"><img src="{url}" alt="{label}"></div>'
            f'<a class="pp-download" download="{html.escape(file_name)}" href="{url}" '
            f'title="download {html.escape(file_name)}">download {_EXTENSIONS[drawn.mime].upper()}'
            "</a></div>"
        )
        data = {"text/html": card, drawn.mime: encoded, "text/plain": f"<image {name}>"}
    else:
        data = dict(drawn.data)
        if stale:
            shown = data.get("text/html") or f"<pre>{html.escape(data['text/plain'])}</pre>"
            data["text/html"] = f'<div class="pp-stale">{shown}</div>'
    return {"output_type": "display_data", "data": data, "metadata": {}}


def display_data(value: Any, *, name: str = "figure") -> dict[str, Any]:
    """One artifact value as an nbformat display-data output: figures and PNG bytes as an
    image with a download link (saved as ``<name>.png``), everything else as text."""
    return _output(name, draw(value))


def _caption(text: str, *, stale: bool = False) -> dict[str, Any]:
    shown = html.escape(text)
    if stale:
        shown = f'<span class="pp-stale">{shown}</span>{_STALE_BADGE}'
    return {
        "output_type": "display_data",
        "data": {"text/html": f"<b>{shown}</b>", "text/plain": text},
        "metadata": {},
    }


def _code_changed(result: DagRunResult, node_id: str) -> bool:
    """Whether the code of the stage that computed ``node_id``, or a global it reads, is no
    longer what the run's plan keyed it by."""
    planned = result.plan.nodes[node_id]
    fingerprint = planned.fingerprint
    pinned = planned.code_version if planned.code_version != fingerprint.digest else None
    return bool(stale_parts(result.plan.specs[node_id].stage, fingerprint, pinned))


def _sinks(plan: Plan) -> list[str]:
    """The nodes no other node reads: what a DAG computes in the end."""
    read = {dep for node in plan.nodes.values() for dep in node.deps}
    return [nid for nid in plan.order if nid not in read]


def _close_tree(widget: w.Widget) -> None:
    """Close a widget and every widget in it (closing a box leaves its children open)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


class _Section(w.VBox):
    """One panel of the view: a title (with a stale badge) and a pin toggle, why plots are
    missing (with a rerun button), the figures and the metrics."""

    def __init__(
        self,
        on_pin: Callable[[str, bool], None],
        on_rerun: Callable[[_Section], None],
        node_id: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.title = w.HTML("")
        self.pin_button = w.ToggleButton(
            value=False,
            description="pin",
            icon="thumb-tack",
            tooltip="keep this node's plots and metrics on screen whatever is selected",
        )
        self.pin_button.add_class("pp-pin-button")
        self.note = w.HTML("")
        self.note.add_class("pp-artifact-note")
        self.rerun_button = w.Button(
            description="Rerun node", icon="refresh", layout=w.Layout(display="none")
        )
        self.rerun_button.add_class("pp-rerun-button")
        self.output = w.Output()
        self.metrics = w.HTML("")
        self.metrics.add_class("pp-metrics-panel")
        head = w.HBox([self.title, self.pin_button])
        head.add_class("pp-section-head")
        super().__init__([head, w.HBox([self.note, self.rerun_button]), self.output, self.metrics])
        self._on_pin = on_pin
        self.pin_button.observe(self._pinned, "value")
        self.rerun_button.on_click(lambda _: on_rerun(self))

    def _pinned(self, change: dict[str, Any]) -> None:
        self.pin_button.description = "pinned" if change["new"] else "pin"
        if self.node_id:
            self._on_pin(self.node_id, change["new"])

    def show_pin(self, pinned: bool | None) -> None:
        """The toggle's state (None: hidden, when the section shows no single node)."""
        self.pin_button.layout.display = "none" if pinned is None else None
        self.pin_button.value = bool(pinned)

    def show_drawing(self, drawing: bool) -> None:
        """Grey the figures shown while the section's new ones are drawn."""
        if drawing:
            self.output.add_class("pp-drawing")
        else:
            self.output.remove_class("pp-drawing")

    def show_rerun(self, note: str) -> None:
        """Say why plots are missing, with the rerun button when the section has one node."""
        self.note.value = note
        shown = bool(note) and self.node_id is not None
        self.rerun_button.layout.display = None if shown else "none"
        if shown:
            self.rerun_button.description = f"Rerun {self.node_id}"


def _variants_stale(result: DagRunResult, base: str | None, stale: frozenset[str]) -> bool:
    """Whether a variant the sweep table shows (of ``base``; of every sweep when None) was
    computed under another key than it has now (its keys carry every edit upstream)."""
    return any(
        spec.sweep is not None and nid in stale and base in (None, spec.sweep.base_id)
        for nid, spec in result.plan.specs.items()
    )


class ArtifactView(SessionView, w.VBox):
    """Artifacts and metrics of ``node_id`` (None: every node, up to ``max_items`` artifacts)
    from the session's last run, replaced after each run, below the panels of the ``watched``
    nodes (by default the DAG's sinks), which stay whatever is selected; the pin toggle of a
    panel adds or removes its node. Nodes edited since their result was computed are greyed
    with a "stale" badge until rerun. ``output`` holds the selected figures, ``metrics`` their
    table, ``sweep`` the sweep table (when the DAG has swept nodes); ``note`` says why plots
    are missing after cache hits (no figures kept for them) and ``rerun_button`` (shown then)
    recomputes the selected node. ``panels`` are the watched nodes' sections, by node id.

    ``drawing_process`` draws half of the lazy artifacts a refresh needs while the kernel
    draws the other half (see ``_drawing``): the kernel's shared one by default, None to draw
    everything in the kernel."""

    def __init__(
        self,
        session: LiveSession,
        node_id: str | None = None,
        *,
        watched: Iterable[str] | None = None,
        max_items: int = 24,
        drawing_process: DrawingProcess | Literal["shared"] | None = "shared",
        **kwargs: Any,
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.max_items = max_items
        self.drawing_process = (
            shared_drawing_process() if drawing_process == "shared" else drawing_process
        )
        self.panels: dict[str, _Section] = {}
        # node id -> the result drawn and its artifacts as drawn (or its figures from the cache)
        self._drawn: dict[str, tuple[StageResult, list[tuple[str, Drawn]]]] = {}
        self._drawings = _Drawings()
        self._shown_stale: frozenset[str] = frozenset()
        self._lock = threading.RLock()  # runs refresh from their thread, clicks from the UI's
        with closed_on_failure(self):
            style = w.HTML(f"<style>{_CSS}</style>", layout=w.Layout(display="none"))
            self.watched_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
            self.watched_box.add_class("pp-watched")
            self.main = _Section(self._pin_toggled, self._rerun)
            self.main.output.add_class("pp-artifacts")
            # the selected node's widgets, by the names they had before watched panels came
            self.title, self.note, self.output = self.main.title, self.main.note, self.main.output
            self.metrics, self.rerun_button = self.main.metrics, self.main.rerun_button
            self.pin_button = self.main.pin_button
            self.sweep = w.HTML("")
            self.sweep.add_class("pp-sweep-table")
            self.sweep_plot = w.Image(format="png", layout=w.Layout(display="none"))
            self.sweep_plot.add_class("pp-sweep-plot")
            super().__init__(**kwargs)
            self.add_class("pp-artifact-view")
            self.children = [style, self.watched_box, self.main, self.sweep, self.sweep_plot]
            self._watched = self._checked(
                _sinks(session.current_plan) if watched is None else watched
            )
            self.refresh()
            self._follow(session)

    # --- what is shown ------------------------------------------------------------------------

    @property
    def watched(self) -> list[str]:
        """The nodes whose plots and metrics stay on screen whatever node is selected."""
        return list(self._watched)

    @watched.setter
    def watched(self, node_ids: Iterable[str]) -> None:
        self._watched = self._checked(node_ids)
        self.refresh()

    def pin(self, node_id: str) -> None:
        """Watch ``node_id`` (UnknownNodeError if the session has no such node)."""
        if node_id not in self._watched:
            self.watched = [*self._watched, node_id]

    def unpin(self, node_id: str) -> None:
        if node_id in self._watched:
            self.watched = [nid for nid in self._watched if nid != node_id]

    def _checked(self, node_ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(node_ids))
        for nid in ids:
            self.session.node(nid)  # an unknown id raises UnknownNodeError naming it
        return ids

    def _pin_toggled(self, node_id: str, pinned: bool) -> None:
        (self.pin if pinned else self.unpin)(node_id)

    def show(self, node_id: str | None) -> None:
        """Switch to one node's artifacts (None or "": all nodes)."""
        self.node_id = node_id or None
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            result = self.session.last_result
            results = result.results if result is not None else {}
            self._drawn = {n: d for n, d in self._drawn.items() if results.get(n) is d[0]}
            stale = self._stale(result)
            self._shown_stale = stale
            filling = [*self._show_main(result, stale), *self._show_watched(result, stale)]
            if result is not None:
                # the numbers first (drawing takes longer), beside the figures shown before,
                # greyed while the new ones are drawn
                to_draw: dict[int, Any] = {}
                for section, node_ids in filling:
                    self._show_metrics(section, result, node_ids, stale)
                    drawing = self._to_draw(result, node_ids)
                    section.show_drawing(bool(drawing))
                    to_draw.update((id(artifact), artifact) for artifact in drawing)
                with self._drawn_beside(list(to_draw.values())) as beside:
                    for section, node_ids in filling:
                        self._fill(section, result, node_ids, stale, beside)
                        section.show_drawing(False)
            base = self._sweep_base(result) if result is not None else ""
            table = self._sweep_html(result, base) if result is not None else ""
            swept_stale = result is not None and _variants_stale(result, base, stale)
            if table and swept_stale:
                table = f'<div class="pp-stale">{table}</div>{_STALE_BADGE}'
            self.sweep.value = table
            mark = self.sweep_plot.add_class if swept_stale else self.sweep_plot.remove_class
            mark("pp-stale")
            self._show_sweep_plot(sweep_png(result, base) if base != "" else None)

    def _stale(self, result: DagRunResult | None) -> frozenset[str]:
        """Nodes of ``result`` computed under another key than the session's plan gives them
        now: edited since (``NodeStatus.STALE``), or a setup restored since that the cache
        holds but no run has loaded yet; not a node whose edit was undone."""
        if result is None:
            return frozenset()
        now = self.session.current_plan.nodes
        return frozenset(
            nid for nid, run in result.runs.items() if nid in now and now[nid].key != run.cache_key
        )

    def _show_main(
        self, result: DagRunResult | None, stale: frozenset[str]
    ) -> list[tuple[_Section, list[str]]]:
        """The main section's title; returns it with the nodes to fill it with."""
        main = self.main
        main.node_id = self.node_id
        main.show_pin(self.node_id in self._watched if self.node_id else None)
        where = f"node {self.node_id!r}" if self.node_id else "all nodes"
        if result is None:
            main.title.value = f"<i>artifacts of {html.escape(where)}: run the DAG first</i>"
            main.output.outputs = ()
            main.metrics.value = ""
            main.show_rerun("")
            return []
        badge = _STALE_BADGE if self.node_id in stale else ""
        main.title.value = f"<b>artifacts of {html.escape(where)}</b>{badge}"
        if self.node_id:
            node_ids = [self.node_id]
        else:  # watched nodes first: the ones a long list must not cut off
            node_ids = [*self._watched, *result.execution_order]
            node_ids = list(dict.fromkeys(nid for nid in node_ids if nid in result.runs))
        return [(main, node_ids)]

    def _show_watched(
        self, result: DagRunResult | None, stale: frozenset[str]
    ) -> list[tuple[_Section, list[str]]]:
        """One panel per watched node, hidden while its node is the selected one; none when all
        nodes are shown (they are all in the list below). Returns the panels on screen with a
        result to fill them with."""
        filling: list[tuple[_Section, list[str]]] = []
        for nid in [nid for nid in self.panels if nid not in self._watched]:
            _close_tree(self.panels.pop(nid))
        for nid in self._watched:
            if nid not in self.panels:
                self.panels[nid] = _Section(self._pin_toggled, self._rerun, nid)
                self.panels[nid].add_class("pp-node-panel")
        self.watched_box.children = [self.panels[nid] for nid in self._watched]
        self.watched_box.layout.display = "none" if self.node_id is None else None
        for nid, panel in self.panels.items():
            panel.show_pin(True)
            panel.layout.display = "none" if nid == self.node_id else None
            badge = _STALE_BADGE if nid in stale else ""
            panel.title.value = f"<b>{html.escape(nid)}</b>{badge}"
            if self.node_id is None or nid == self.node_id:
                continue  # not on screen: drawn when it is
            if result is None or nid not in result.runs:
                never = self.session.status.get(nid, NodeStatus.NOT_RUN) is NodeStatus.NOT_RUN
                said = "not run yet" if never else "not in the last run: run it to see it here"
                panel.output.outputs = ()
                panel.metrics.value = f'<p class="pp-metrics pp-empty">{said}</p>'
                panel.show_rerun("")
            else:
                filling.append((panel, [nid]))
        return filling

    def _fill(
        self,
        section: _Section,
        result: DagRunResult,
        node_ids: list[str],
        stale: frozenset[str],
        beside: Batch,
    ) -> None:
        """Figures and the missing-plots note of ``node_ids`` in ``section`` (those ``beside``
        holds drawn in the drawing process)."""
        outputs: list[dict[str, Any]] = []
        shown = more = plotless = 0
        for nid in node_ids:
            found = result.results.get(nid)
            if found is None:
                continue
            if shown >= self.max_items:  # past the limit: counted, not drawn
                more += len(found.artifacts)
                continue
            drawn = self._drawing(result, nid, found, beside)
            plotless += not drawn and result.runs[nid].status is NodeStatus.HIT
            for name, item in drawn:
                if shown >= self.max_items:
                    more += 1
                    continue
                shown += 1
                outputs.append(_caption(f"{nid}.{name}", stale=nid in stale))
                outputs.append(_output(f"{nid}.{name}", item, stale=nid in stale))
        if more:
            outputs.append(_output("", draw(f"{more} more; select a node to see its own")))
        alone = section.node_id
        if alone and alone not in result.results:
            run = result.runs.get(alone)
            why = f"{run.status}: {run.error or run.reason}" if run else "not in the last run"
            outputs.append(_output("", draw(f"node {alone!r} has no result ({why})")))
        section.output.outputs = tuple(outputs)
        if shown or not plotless:
            section.show_rerun("")
        elif section.node_id:
            section.show_rerun(
                "<i>loaded from the cache; plots are not cached: rerun this node to draw them</i>"
            )
        else:
            section.show_rerun(
                f"<i>{plotless} node(s) loaded from the cache; plots are not cached: "
                "select a node and rerun it to draw its plots</i>"
            )

    def _show_metrics(
        self, section: _Section, result: DagRunResult, node_ids: list[str], stale: frozenset[str]
    ) -> None:
        section.metrics.value = metrics_html(
            {
                (nid, key): value
                for nid in node_ids
                if nid in result.results
                for key, value in result.results[nid].metrics.items()
            },
            stale=stale,
        )

    def _to_draw(self, result: DagRunResult, node_ids: list[str]) -> list[Any]:
        """The artifacts filling a section with ``node_ids`` draws, in order: those of results
        not drawn yet that this view has not drawn (up to ``max_items``)."""
        drawing: list[Any] = []
        for nid in node_ids:
            found, kept = result.results.get(nid), self._drawn.get(nid)
            if found is None or (kept is not None and kept[0] is found):
                continue
            drawing += [
                a for a in found.artifacts.values() if self._drawn_before(result, nid, a) is None
            ]
        return drawing[: self.max_items]

    @contextmanager
    def _drawn_beside(self, to_draw: list[Any]) -> Iterator[Batch]:
        """The second half of ``to_draw`` handed to the drawing process, as the kernel draws
        the first: the watched panels' figures come in about half the time. Nothing when
        there is one artifact to draw (the kernel would only wait for it)."""
        process = self.drawing_process
        if process is None or len(to_draw) < 2:
            yield Batch()
            return
        with process.batch(to_draw[(len(to_draw) + 1) // 2 :]) as batch:
            yield batch

    def _drawing(
        self, result: DagRunResult, node_id: str, found: StageResult, beside: Batch
    ) -> list[tuple[str, Drawn]]:
        """The node's artifacts as drawn (each lazy one called once per result, and not again
        for a cache hit that hands out the same callable; ``beside`` has drawn some) and, for
        a result loaded without some, the figures kept in the cache for them. What is drawn
        here is kept in the cache for next time."""
        kept = self._drawn.get(node_id)
        if kept is not None and kept[0] is found:
            return kept[1]
        drawn: list[tuple[str, Drawn]] = []
        fresh: list[tuple[Any, Drawn]] = []  # (artifact, as drawn now)
        for name, artifact in found.artifacts.items():
            item = self._drawn_before(result, node_id, artifact)
            if item is None:
                try:
                    item = beside.drawn(artifact) or draw(resolve_artifact(artifact))
                    fresh.append((artifact, item))
                except Exception as exc:  # noqa: BLE001 - one broken plot must not hide the rest
                    item = draw(f"artifact failed: {type(exc).__name__}: {exc}")
            drawn.append((name, item))
        cache, run = self.session.executor.cache, result.runs[node_id]
        kept_figures: Figures | None = None
        if run.status is NodeStatus.HIT:
            with suppress(CacheError):  # a strict cache's failure: the run reports it anyway
                kept_figures = cache.figures(run.cache_key)
        if kept_figures:
            drawn += [
                (name, Drawn(mime, data))
                for name, (mime, data) in kept_figures.items()
                if name not in found.artifacts
            ]
        to_file = {} if kept_figures else {n: (d.mime, d.data) for n, d in drawn if d.is_image}
        if (fresh or to_file) and self._shows_entry(result, node_id):
            for artifact, item in fresh:
                self._drawings.put(run.cache_key, artifact, item)
            if to_file:
                with suppress(CacheError):  # as when reading them: shown all the same
                    cache.put_figures(run.cache_key, to_file, node_id=node_id)
        self._drawn[node_id] = (found, drawn)
        return drawn

    def _drawn_before(self, result: DagRunResult, node_id: str, artifact: Any) -> Drawn | None:
        """What this view drew of ``artifact`` for the cache entry a hit of ``node_id`` loaded
        (None: not drawn, or the node computed: a result computed now is drawn now)."""
        run = result.runs[node_id]
        if run.status is not NodeStatus.HIT:
            return None
        return self._drawings.get(run.cache_key, artifact)

    def _shows_entry(self, result: DagRunResult, node_id: str) -> bool:
        """Whether what was drawn of ``node_id``'s result shows what its cache entry holds,
        so that it may be kept for the entry (in the cache) and for the artifacts drawn (in
        ``_drawings``): the entry is there (a node that cannot be cached, or whose result a
        sibling spoilt, has none), and the node's config and code are still those it was
        computed with (a lazy artifact drawn after an edit, or after a global its code reads
        changed, draws today's world over the old result). Each result is drawn once, so a
        result computed again under its key (``rerun``) keeps its own figures."""
        key = result.runs[node_id].cache_key
        if result.plan.nodes[node_id].uncacheable:
            return False
        now = self.session.current_plan.nodes.get(node_id)
        if now is None or now.key != key or _code_changed(result, node_id):
            return False
        try:
            return self.session.executor.cache.contains(key)
        except CacheError:
            return False

    def _rerun(self, section: _Section) -> None:
        """Button callback: recompute the section's node; a failure is shown, never raised."""
        if not section.node_id:
            return
        try:
            self.session.rerun(section.node_id)  # its "run" event refreshes this view
        except Exception as exc:  # noqa: BLE001 - a button callback: show, never raise
            section.note.value = (
                f"<span class='pp-error'>rerun failed: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}</span>"
            )

    # --- sweeps -------------------------------------------------------------------------------

    def _show_sweep_plot(self, png: bytes | None) -> None:
        self.sweep_plot.value = png or b""
        self.sweep_plot.layout.display = None if png else "none"

    def _sweep_base(self, result: DagRunResult) -> str | None:
        """The base node whose variants to show (None: all); "" when the DAG has no sweep."""
        specs = result.plan.specs
        if not any(spec.sweep is not None for spec in specs.values()):
            return ""
        if self.node_id and self.node_id in specs:
            sweep = specs[self.node_id].sweep
            return sweep.base_id if sweep else None
        return None

    def _sweep_html(self, result: DagRunResult, base: str | None) -> str:
        if base == "":
            return ""
        from ..sweep import sweep_table

        return "<b>sweep</b>" + table_html(sweep_table(result, base))

    # --- following the session ----------------------------------------------------------------

    def _on_session(self, event: str, session: LiveSession) -> None:
        """After a run, everything; after an edit, only if it changed which nodes are stale
        (what is drawn is kept, so nothing is drawn again)."""
        if event not in ("run", "edit"):
            return
        if event == "edit" and self._stale(session.last_result) == self._shown_stale:
            return
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a listener must not break session.run()
            self.title.value = f"<b>artifacts unavailable</b>: {html.escape(repr(exc))}"

    def close(self) -> None:
        for child in self.children:
            _close_tree(child)
        super().close()
