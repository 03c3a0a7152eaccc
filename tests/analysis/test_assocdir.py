"""assocdir.parquet_parts: a Parquet file written one part at a time, atomically."""

from __future__ import annotations

import pandas as pd
import pytest

from plmsae.analysis.assocdir import parquet_parts


def _part(n: int, start: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["sae"] * n,
            "feature": range(start, start + n),
            "q_value": [0.01 * i for i in range(n)],
        }
    )


def test_parts_make_the_table(tmp_path):
    path = tmp_path / "t.parquet"
    parts = [_part(0, 0), _part(3, 0), _part(0, 3), _part(2, 3)]
    with parquet_parts(path, ["source", "feature", "q_value"]) as write:
        for p in parts:
            write(p)
        assert not path.exists()  # in place only when the block ends
    whole = tmp_path / "whole.parquet"  # the same table written at once
    pd.concat(parts, ignore_index=True).to_parquet(whole, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(whole))
    assert len(pd.read_parquet(path)) == 5


def test_no_rows_gives_the_columns(tmp_path):
    path = tmp_path / "t.parquet"
    with parquet_parts(path, ["source", "feature"]) as write:
        write(_part(0, 0))
    back = pd.read_parquet(path)
    assert list(back.columns) == ["source", "feature"] and len(back) == 0


def test_an_error_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    _part(1, 7).to_parquet(path, index=False)
    with pytest.raises(RuntimeError), parquet_parts(path, ["source"]) as write:
        write(_part(2, 0))
        raise RuntimeError("stopped")
    assert pd.read_parquet(path)["feature"].tolist() == [7]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary file left
