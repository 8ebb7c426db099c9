"""``napari-unet predict``: placeholder until its issue lands (owned by the predict work)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="(not yet available)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("napari-unet predict is not available yet")
    return 2
