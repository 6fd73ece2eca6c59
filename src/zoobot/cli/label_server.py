"""zoobot label-server: serve the local labelling page of a web-oracle experiment."""

import logging
from pathlib import Path

import typer

from zoobot.cli.app import app, fail

logger = logging.getLogger(__name__)


@app.command("label-server")
def label_server_command(
    experiment_dir: Path = typer.Argument(..., help="An experiment made with --oracle web."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 opens the page to your network."),
    port: int = typer.Option(8000, help="Port to listen on."),
    threads: int = typer.Option(8, "--server-threads", help="Requests served at once."),
) -> None:
    """Serve the page on which people classify the galaxies the loop requested.

    Each person gives a name; each finished classification is one vote, counted once per person
    and galaxy. `zoobot run` collects the votes.
    """
    if not 0 < port < 65536:
        fail(f"--port: expected 1 to 65535, got {port}")
    if threads < 1:
        fail(f"--server-threads: expected at least 1, got {threads}")
    from waitress import serve

    from zoobot.labelling.app import open_labelling_app

    try:
        page = open_labelling_app(experiment_dir)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: anyone who can reach this machine can vote", host)
    logger.info("labelling page for %s at http://%s:%d/ (Ctrl-C stops it)", experiment_dir, host, port)
    serve(page, host=host, port=port, threads=threads, ident="zoobot")
