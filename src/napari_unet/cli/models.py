"""``napari-unet models``: list the bundled models."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the bundled models",
                       description="List the models shipped with napari-unet.")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model.checkpoint import bundled_models, read_header
    from ..model.tasks import TaskSpec

    models = bundled_models()
    if not models:
        print("no bundled models installed")
    for name, path in models.items():
        task = TaskSpec.from_dict(read_header(path)["task"])
        print(f"{name:16s} {task.describe()}")
    return 0
