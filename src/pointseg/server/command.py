"""``pointseg serve`` command (being built under issue 3)."""
import typer


def serve_command() -> None:
    """Start the interactive web app (not built yet)."""
    raise typer.Exit("pointseg serve is not available yet")
