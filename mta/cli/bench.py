"""``mta bench``: the pipeline benchmark (mta.bench) as a command."""

from __future__ import annotations

import click
import orjson

from mta.cli.logs import _logging
from mta.cli.settings import _run, settings_options
from mta.config import Settings


@click.command()
@settings_options("amqp_url", "redis_url", "shards")
@click.option(
    "-n", "--messages", "total", default=100_000, show_default=True, help="Messages to publish."
)
@click.option("-b", "--batch", "batch", default=100, show_default=True, help="Messages per batch.")
@click.option(
    "--report-delay-s",
    default=1.0,
    show_default=True,
    help="Simulator: when the final state is known.",
)
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--reporters", default=1, show_default=True, help="Reporter processes.")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Publish at this many messages/s (0 = as fast as possible); paced runs "
    "measure latency without a backlog.",
)
@click.option(
    "--push/--poll",
    default=False,
    show_default=True,
    help="Simulator pushes each final as a receipt (as an SMSC or a webhook does) instead of "
    "answering Report polls.",
)
@click.option(
    "--metrics/--no-metrics",
    default=False,
    show_default=True,
    help="The worker and reporter processes count and serve Prometheus metrics "
    "(MTA_METRICS_LISTEN on a free port): run both ways to see what metrics cost.",
)
@click.option(
    "--partner",
    type=click.Choice(["simulator", "smpp"]),
    default="simulator",
    show_default=True,
    help="simulator, or smpp: the smpp adapter against an SMSC sink in a child process "
    "(mta.smsc_sink) that answers every submit_sm and sends a receipt for each "
    "--report-delay-s later.",
)
@click.option("--binds", default=2, show_default=True, help="smpp: sessions of the account.")
@click.option(
    "--smpp-window", default=50, show_default=True, help="smpp: window of each session."
)
@click.option(
    "--ingress",
    is_flag=True,
    help="smpp: the messages come from one SMPP client (transceiver, window --smpp-window) "
    "through an mta smpp-server process, and every receipt goes back to it as deliver_sm.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object of the figures (fields in docs/cli.md).",
)
def bench(
    settings: Settings,
    total: int,
    batch: int,
    report_delay_s: float,
    workers: int,
    reporters: int,
    rate: float,
    push: bool,
    metrics: bool,
    partner: str,
    binds: int,
    smpp_window: int,
    ingress: bool,
    as_json: bool,
) -> None:
    """Measure the pipeline: publish N messages through worker and reporter processes.

    Starts its own worker(s) and reporter(s) on a fresh prefix with the simulator (latency 0)
    or, with --partner smpp, the smpp adapter against a local SMSC sink with receipts;
    prints publish rate, messages/s into the adapter, finals/s, latencies, CPU per 1,000
    messages and Redis bytes per pending message, then cleans up. A benchmark, not a test.
    """
    from mta.bench import BenchConfig, run_bench

    _logging(False)
    config = BenchConfig(
        total=total,
        batch=batch,
        report_delay_s=report_delay_s,
        workers=workers,
        reporters=reporters,
        rate=rate,
        push=push,
        metrics=metrics,
        partner=partner,
        binds=binds,
        smpp_window=smpp_window,
        ingress=ingress,
    )
    if ingress and partner != "smpp":
        raise click.UsageError("--ingress goes with --partner smpp")
    result = _run(run_bench(settings, config))
    click.echo(orjson.dumps(result.as_dict()).decode() if as_json else result.text())
