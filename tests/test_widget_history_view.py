"""HistoryView: a row per run, a pinned run compared with the last one, a metric over the
runs, kept figures side by side, and Restore."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL
from theme_css import colour_variables

from phys_pipeline.history import RunHistory
from phys_pipeline.session import LiveSession
from phys_pipeline.widgets import ArtifactView, HistoryView
from phys_pipeline.widgets.artifact_view import PNG_MAGIC


def three_runs(session: LiveSession) -> None:
    """Run 1 as built; run 2 with a longer fibre; run 3 with a longer pulse and more dispersion."""
    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    session.update("pulse", fwhm_ps=2.0)
    session.set_policy(dispersion_scale=2.0)
    session.run()


def cells(view: HistoryView, number: int) -> list[str]:
    """The text cells of run ``number``'s row."""
    (row,) = [row for row in view.rows if row.number == number]
    return [
        cell.value for cell in row.cells if hasattr(cell, "value") and isinstance(cell.value, str)
    ]


def comparison_rows(view: HistoryView) -> dict[str, list[str]]:
    """metric -> [pinned, last, change, relative] as the comparison table shows them."""
    found = re.findall(
        r"<tr[^>]*><td>([^<]+)</td>((?:<td>[^<]*</td>){4})</tr>", view.comparison.value
    )
    return {key: re.findall(r"<td>([^<]*)</td>", rest) for key, rest in found}


def test_each_run_gets_a_row_newest_first_with_its_changes_counts_and_sink_metrics(
    session: LiveSession,
) -> None:
    view = HistoryView(session)
    assert view.rows == [] and "no runs yet" in view.title.value
    three_runs(session)
    assert [row.number for row in view.rows] == [3, 2, 1]
    assert "3 runs" in view.title.value
    assert view.watched == ["duration.phase_span", "spectrum.bins"]  # the sinks' metrics
    number, _, changes, counts, took, phase_span, bins = cells(view, 3)
    assert number == "3"
    assert "pulse.fwhm_ps: 1.0 → 2.0" in changes
    assert "policy dispersion_scale: 1.0 → 2.0" in changes
    assert counts == "3 ran, 2 hit" and took.endswith("ms")
    assert float(phase_span) == pytest.approx(
        session.history[-1].metrics["duration.phase_span"], rel=1e-5
    )
    assert bins == "256"
    assert "fibre.length_m: 1.0 → 2.0" in cells(view, 2)[2]
    assert cells(view, 2)[3] == "2 ran, 3 hit"
    assert "first run" in cells(view, 1)[2] and cells(view, 1)[3] == "5 ran, 0 hit"
    newest = view.rows[0]
    session.update("fibre", length_m=3.0)
    session.run()
    assert [row.number for row in view.rows] == [4, 3, 2, 1]
    assert view.rows[1] is newest  # rows are made once per run, not on every refresh
    assert "pp-last" in view.rows[0].cells[0]._dom_classes
    assert "pp-last" not in newest.cells[0]._dom_classes


def test_a_failed_node_is_counted_in_its_run_row(session: LiveSession) -> None:
    view = HistoryView(session)
    session.update("fibre", broken=True)
    session.run()
    assert cells(view, 1)[3] == '3 ran, 0 hit, <span class="pp-error">1 failed, 1 skipped</span>'


def test_watched_metrics_choose_the_columns(session: LiveSession) -> None:
    view = HistoryView(session, watched=["fibre.gdd_ps2"])
    three_runs(session)
    assert cells(view, 3)[-1] == "-0.08" and cells(view, 1)[-1] == "-0.02"
    assert "fibre<br>gdd_ps2" in [c.value for c in view.table.children[:8]]
    view.watched = None  # back to the sinks' metrics
    assert len(cells(view, 3)) == 7 and cells(view, 3)[-1] == "256"


def test_a_long_history_lists_its_newest_runs_only(session: LiveSession) -> None:
    view = HistoryView(session, max_rows=2)
    three_runs(session)
    assert [row.number for row in view.rows] == [3, 2]
    assert view.older.value == "1 older run(s) not listed: session.history has them all"


def test_pinning_a_run_compares_its_metrics_and_setup_with_the_last_run(
    session: LiveSession,
) -> None:
    view = HistoryView(session)
    three_runs(session)
    assert "pin a run" in view.comparison.value
    first, last = session.history.run(1), session.history[-1]
    row = next(row for row in view.rows if row.number == 1)
    row.pin_button.value = True  # the row's Pin toggle
    assert view.pinned == 1 and row.pin_button.description == "pinned"
    assert "pp-pinned" in row.cells[0]._dom_classes
    table = comparison_rows(view)
    before, after = first.metrics["duration.phase_span"], last.metrics["duration.phase_span"]
    shown_before, shown_after, change, relative = table["duration.phase_span"]
    assert float(shown_before) == pytest.approx(before, rel=1e-5)
    assert float(shown_after) == pytest.approx(after, rel=1e-5)
    assert float(change) == pytest.approx(after - before, rel=1e-3)
    assert relative == f"{(after - before) / before:+.2%}" == "+300.00%"
    assert table["fibre.gdd_ps2"][2:] == ["-0.06", "-300.00%"]  # -0.02 -> -0.08
    assert table["spectrum.bins"][2:] == ["+0", "+0.00%"]
    setup = re.findall(r"<li>([^<]*)</li>", view.comparison.value)
    assert setup == [
        "pulse.fwhm_ps: 1.0 → 2.0",
        "fibre.length_m: 1.0 → 2.0",
        "policy dispersion_scale: 1.0 → 2.0",
    ]
    other = next(row for row in view.rows if row.number == 2)
    other.pin_button.value = True  # one pinned run at a time
    assert view.pinned == 2 and row.pin_button.value is False
    assert "pp-pinned" not in row.cells[0]._dom_classes
    assert re.findall(r"<li>([^<]*)</li>", view.comparison.value) == setup[:1] + setup[2:]
    other.pin_button.value = False
    assert view.pinned is None and "pin a run" in view.comparison.value


def test_a_run_not_in_the_history_cannot_be_pinned(session: LiveSession) -> None:
    import traitlets

    view = HistoryView(session)
    session.run()
    with pytest.raises(traitlets.TraitError, match="no run 7 in this history; runs: 1"):
        view.pinned = 7
    assert view.pinned is None


def test_the_metric_plot_is_a_png_that_marks_the_pinned_run(session: LiveSession) -> None:
    view = HistoryView(session)
    assert view.metric_box.layout.display == "none"
    three_runs(session)
    assert view.metric_picker.value == "duration.phase_span"  # the first watched metric
    assert set(view.metric_picker.options) == set(session.history[-1].metrics)
    plain = bytes(view.metric_plot.value)
    assert plain.startswith(PNG_MAGIC) and view.metric_plot.layout.display != "none"
    view.pinned = 1
    marked = bytes(view.metric_plot.value)
    assert marked.startswith(PNG_MAGIC) and marked != plain
    view.metric_picker.value = "fibre.gdd_ps2"
    assert bytes(view.metric_plot.value) not in (plain, marked)
    session.update("fibre", length_m=4.0)
    session.run()
    assert view.metric_picker.value == "fibre.gdd_ps2"  # the choice outlives a run


def test_the_pinned_runs_kept_figures_sit_beside_the_last_runs(session: LiveSession) -> None:
    artifacts = ArtifactView(session)  # draws each run's figures and keeps them in the cache
    view = HistoryView(session, figure_nodes=["fibre", "spectrum"])
    assert view.figure_nodes == ["fibre", "spectrum"]
    session.run()
    session.update("fibre", length_m=5.0)
    session.run()
    view.pinned = 1
    shown = view.figures.value
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", shown)
    assert captions == ["run 1 (pinned)", "run 2 (last)"]
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', shown)
    assert len(images) == 2 and images[0] != images[1]  # two fibre lengths, two phase plots
    assert "fibre.phase" in shown
    assert "no figures kept for spectrum" in shown  # the spectrum draws none
    artifacts.close()


def test_an_unknown_figure_node_is_refused_and_leaves_nothing_subscribed(
    session: LiveSession,
) -> None:
    from phys_pipeline.errors import UnknownNodeError

    with pytest.raises(UnknownNodeError, match="no-such-node"):
        HistoryView(session, figure_nodes=["fibre", "no-such-node"])
    assert session._listeners == []


def test_without_kept_figures_the_figure_panel_says_so(session: LiveSession) -> None:
    view = HistoryView(session)  # the sinks, duration and spectrum, draw no figures
    three_runs(session)
    view.pinned = 2
    assert re.findall(r"<img", view.figures.value) == []
    assert "no figures kept for duration, spectrum in run 2 or run 3" in view.figures.value


def test_restore_puts_a_runs_configs_back_and_the_next_run_is_all_hits(
    session: LiveSession,
) -> None:
    view = HistoryView(session)
    three_runs(session)
    next(row for row in view.rows if row.number == 1).restore_button.click()
    assert session.config("fibre").length_m == 1.0
    assert session.config("pulse").fwhm_ps == 1.0
    assert session.policy is not None and session.policy["dispersion_scale"] == 1.0
    assert "restored run 1" in view.message.value
    assert "the next run loads every node from the cache" in view.message.value
    session.run()
    assert set(session.history[-1].hits) == ALL and session.history[-1].ran == []
    assert view.message.value == ""  # the run's row says the rest
    assert cells(view, 4)[3] == "0 ran, 5 hit"


def test_a_refused_restore_is_shown_in_the_panel_and_changes_nothing(
    session: LiveSession, tmp_path: Path
) -> None:
    view = HistoryView(session)
    session.run()
    session.history.save(tmp_path / "history.json")
    data = json.loads((tmp_path / "history.json").read_text())
    data["runs"][0]["nodes"]["fibre"]["config"]["length_m"] = 500.0  # edited by hand: > 100 m
    (tmp_path / "history.json").write_text(json.dumps(data))
    session.history = RunHistory.load(tmp_path / "history.json")
    view.refresh()
    view.rows[0].restore_button.click()  # raises nothing into the kernel
    assert "cannot restore run 1: ConfigError" in view.message.value
    assert "length_m" in view.message.value and "pp-error" in view.message.value
    assert session.config("fibre").length_m == 1.0
    view.restore(7)  # a run the history does not have
    assert view.message.value == (
        '<span class="pp-error">cannot restore run 7: KeyError: no run 7 in this history; '
        "runs: 1</span>"
    )


def test_the_view_wraps_or_scrolls_instead_of_overflowing(session: LiveSession) -> None:
    view = HistoryView(session)
    three_runs(session)
    assert view.layout.max_width == "100%" and view.layout.overflow == "auto"
    scroll = next(c for c in view.children if "pp-history-scroll" in c._dom_classes)
    assert scroll.children == (view.table,)
    assert scroll.layout.overflow == "auto" and scroll.layout.max_width == "100%"
    # the changes column wraps within its bounds; the others take what they need
    assert "minmax(12em, 28em)" in view.table.layout.grid_template_columns


def test_pin_and_restore_come_before_the_metrics_so_a_wide_table_keeps_them_in_view(
    session: LiveSession,
) -> None:
    view = HistoryView(session)
    three_runs(session)
    row = view.rows[0]
    assert row.cells[2:4] == [row.pin_button, row.restore_button]
    headers = [cell.value for cell in view.table.children[: len(row.cells)]]
    assert headers[:5] == ["run", "time", "", "", "changed since the run before"]
    assert headers[-2:] == ["duration<br>phase_span", "spectrum<br>bins"]  # the metrics last
    # a column per cell: four before the changes' (which wraps), then counts, took, metrics
    template = view.table.layout.grid_template_columns
    assert template == "repeat(4, max-content) minmax(12em, 28em) repeat(4, max-content)"
    assert len(row.cells) == 4 + 1 + 4


def test_every_colour_but_the_plot_cards_follows_the_jupyterlab_theme() -> None:
    import phys_pipeline.widgets.history_view as module

    stylesheet = Path(module.__file__).with_name("history_view.css")
    variables = colour_variables(stylesheet)
    assert {name for name in variables if not name.startswith("--jp-")} == {
        "--pp-figure-background"
    }
    css = stylesheet.read_text()
    assert "overflow-x: auto" in css and "overflow-wrap: anywhere" in css


def test_closing_the_view_unsubscribes_it_and_closes_its_rows(session: LiveSession) -> None:
    view = HistoryView(session)
    three_runs(session)
    row = view.rows[0]
    view.close()
    view.close()  # twice is harmless
    assert session._listeners == []
    assert row.pin_button.comm is None and view.table.comm is None
