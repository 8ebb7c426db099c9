"""``napari-unet train``: placeholder until its issue lands (owned by the train work)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="(not yet available)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("napari-unet train is not available yet")
    return 2
