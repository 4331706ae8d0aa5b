"""``pointseg evaluate`` command (being built under issue 4)."""
import typer


def evaluate_command() -> None:
    """Evaluate with a simulated user (not built yet)."""
    raise typer.Exit("pointseg evaluate is not available yet")
