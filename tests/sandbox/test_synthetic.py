"""Synthetic app files: exact sizes, a data part after the marker, and skip-data copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter.sandbox.synthetic import DATA_MARKER, copy_without_data, make_app_file, metadata_length


@pytest.mark.parametrize("size", [0, 10, 4096, 4096 + len(DATA_MARKER), 5_000_000])
def test_file_has_exactly_the_asked_size(tmp_path: Path, size: int) -> None:
    """make_app_file writes exactly N bytes, the same bytes for the same seed."""

    first = make_app_file(tmp_path / "a.qvf", size, seed="s")
    second = make_app_file(tmp_path / "b.qvf", size, seed="s")

    assert first.stat().st_size == size
    assert first.read_bytes() == second.read_bytes()


def test_metadata_ends_at_the_marker(tmp_path: Path) -> None:
    """The metadata part is everything before the marker, found even across read chunks."""
    path = make_app_file(tmp_path / "a.qvf", 3_000_000, metadata_bytes=1_048_570)

    assert metadata_length(path) == 1_048_570
    assert copy_without_data(path, tmp_path / "m.qvf") == 1_048_570
    assert (tmp_path / "m.qvf").read_bytes() == path.read_bytes()[:1_048_570]


def test_file_without_marker_is_all_metadata(tmp_path: Path) -> None:
    """A file without the marker (any real QVF) keeps all its bytes on a skip-data copy."""
    path = tmp_path / "real.qvf"
    path.write_bytes(b"\x00\x01opaque qvf" * 1000)

    assert metadata_length(path) == path.stat().st_size
