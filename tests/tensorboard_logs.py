"""Reading a training run's TensorBoard log in the tests."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tensorboard_log(run_dir: Path) -> EventAccumulator:
    """The run's one TensorBoard event file under ``run_dir`` (searched recursively), loaded."""
    (events,) = Path(run_dir).rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return acc


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's log -> [(step, value)]."""
    acc = tensorboard_log(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
