"""``pointseg predict``: a rich progress bar over :func:`pointseg.batch.predict_many`, clean Ctrl+C, exit codes.

Exit status: 0 every image labelled; 1 the run completed but some images failed (see summary.csv's
``error`` column); 2 a user error before any work (one line on stderr); 130 cancelled with Ctrl+C
(finished images are kept and recorded: rerun with ``--resume``).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from pointseg.errors import PointsegError


class _RateColumn(ProgressColumn):
    """Images per second since the first image finished (completed futures, not submitted ones)."""

    def render(self, task) -> Text:
        start = task.fields.get("first_done")
        if not start or task.completed < 2:
            return Text("– img/s", style="progress.data.speed")
        rate = (task.completed - 1) / max(1e-6, time.monotonic() - start)
        return Text(f"{rate:.2f} img/s", style="progress.data.speed")


def parse_channels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PointsegError(f"--channels takes channel indices such as 0,1,2, got {text!r}") from None


def run_predict(model, inputs, output, *, overlay, probabilities, ng_area, ng_rule, weights, min_region, workers,
                scheduler, scheduler_file, recursive, resume, channels, tile_above, console: Console,
                engine: str | None = None) -> int:
    from pointseg.batch.cluster import open_client
    from pointseg.batch.engine import predict_many
    from pointseg.batch.inputs import expand_inputs
    from pointseg.batch.tasks import BatchOptions

    options = BatchOptions(overlay=overlay, probabilities=probabilities, ng_area=ng_area, ng_rule=ng_rule,
                           channels=parse_channels(channels), tile_above_pixels=tile_above, engine=engine)
    items = expand_inputs(inputs, recursive=recursive)
    done, failed, resumed = 0, 0, 0
    with open_client(workers, scheduler, scheduler_file) as client:
        if client is not None:
            link = client.dashboard_link or "(no dashboard: install bokeh)"
            console.print(f"Dask cluster with {len(client.nthreads())} worker(s); dashboard: {link}", highlight=False)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("predicting", total=len(items), first_done=None)

            def on_done(result) -> None:
                if progress.tasks[0].fields.get("first_done") is None:
                    progress.update(task, first_done=time.monotonic())
                progress.advance(task)
                if not result.ok:
                    progress.console.print(f"[yellow]skipped[/yellow] {escape(result.item.name)}: "
                                           f"{escape(result.error)}", highlight=False)

            try:
                for result in predict_many(model, items, output, client, options=options, weights=weights,
                                           min_region=min_region, resume=resume, on_done=on_done):
                    done += 1
                    failed += not result.ok
                    if result.resumed:
                        resumed += 1
                        progress.advance(task)
            except KeyboardInterrupt:
                progress.stop()
                console.print(f"cancelled after {done} of {len(items)} image(s); finished ones are kept — "
                              "rerun with --resume to do the rest")
                return 130
    note = f" ({resumed} from the earlier run)" if resumed else ""
    console.print(f"{done - failed} image(s) labelled into [bold]{output}[/bold] (summary.csv){note}"
                  + (f"; {failed} failed (see the error column)" if failed else ""))
    return 1 if failed else 0
