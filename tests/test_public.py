"""The public surface: names re-exported by shmring, and typing files."""

from __future__ import annotations

import importlib.resources

import shmring


def test_public_names_are_exactly_these() -> None:
    assert sorted(shmring.__all__) == sorted(
        [
            "Array",
            "ClosedError",
            "Endpoint",
            "LayoutError",
            "Queue",
            "Ring",
            "RoleError",
            "ShmringError",
            "Statistics",
            "__version__",
        ]
    )
    for name in shmring.__all__:
        assert hasattr(shmring, name)


def test_errors_derive_as_documented() -> None:
    assert issubclass(shmring.LayoutError, shmring.ShmringError)
    assert issubclass(shmring.LayoutError, ValueError)
    assert issubclass(shmring.RoleError, shmring.ShmringError)
    assert issubclass(shmring.ClosedError, shmring.ShmringError)
    assert issubclass(shmring.ClosedError, ValueError) and issubclass(shmring.ClosedError, OSError)


def test_package_ships_type_information() -> None:
    files = importlib.resources.files("shmring")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_core.pyi").is_file()
