"""User-given patient/study groups (``--groups FILE.csv``): parsing and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.data.scan import scan
from bench.data.user_groups import UserGroups, read_user_groups
from bench.errors import BenchError
from conftest import make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Classes a and b, 6 PNGs each, plus a/notes.txt (skipped by the scan)."""
    root = make_folder(tmp_path_factory.mktemp("ug") / "data", {"a": 6, "b": 6}, size=16)
    (root / "a" / "notes.txt").write_text("not an image\n")
    return root, scan(root)


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "groups.csv"
    path.write_bytes(text.encode(encoding))
    return path


def _refused(path: Path, index) -> str:
    with pytest.raises(BenchError) as info:
        read_user_groups(path, index)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert str(path) in message
    return message


def test_valid_file_relative_absolute_bom_extra_column_quoting(tmp_path, data):
    root, index = data
    text = (
        "\ufeff Path ,notes, GROUP \r\n"
        "a/img_000.png,first,p1\r\n"
        f"{root / 'a' / 'img_001.png'},abs,p1\r\n"
        "\r\n"
        ",,\r\n"
        './a/img_002.png,dot,"p2, visit 1"\r\n'
        "b\\img_000.png,backslash,  p2, visit 1  \r\n"
    )
    # the last row has 4 cells: its group column is "  p2" (the rest is ignored)
    groups = read_user_groups(_write(tmp_path, text), index)
    assert isinstance(groups, UserGroups)
    assert groups.group_of == {
        "a/img_000.png": "p1",
        "a/img_001.png": "p1",
        "a/img_002.png": "p2, visit 1",
        "b/img_000.png": "p2",
    }
    assert groups.missing == 12 - 4
    assert groups.source == str(tmp_path / "groups.csv")
    assert groups.members() == {
        "p1": ["a/img_000.png", "a/img_001.png"],
        "p2": ["b/img_000.png"],
        "p2, visit 1": ["a/img_002.png"],
    }


def test_every_image_listed_gives_no_missing(tmp_path, data):
    _, index = data
    rows = "".join(f"{r.path},g{i % 3}\n" for i, r in enumerate(index.records))
    groups = read_user_groups(_write(tmp_path, "path,group\n" + rows), index)
    assert groups.missing == 0 and len(groups.members()) == 3


def test_missing_file_and_folder(tmp_path, data):
    _, index = data
    assert "does not exist" in _refused(tmp_path / "nope.csv", index)
    (tmp_path / "dir.csv").mkdir()
    assert "is a folder" in _refused(tmp_path / "dir.csv", index)


def test_unreadable_file(tmp_path, data, monkeypatch):
    _, index = data
    path = _write(tmp_path, "path,group\n")

    import bench.data.user_groups as user_groups

    def denied(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(user_groups, "read_regular", denied)  # root reads any file: deny the read itself
    message = _refused(path, index)
    assert "cannot read" in message and "Permission denied" in message


def test_latin1_is_refused_as_not_utf8(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\na/img_000.png,Müller\n", "latin-1"), index)
    assert "is not UTF-8 text" in message and "line 2" in message and "UTF-8 CSV" in message


def test_utf16_is_refused_with_a_hint(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\na/img_000.png,p1\n", "utf-16"), index)
    assert "not UTF-8" in message and "UTF-16" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("file,patient\na/img_000.png,p1\n", ["no 'path' column", "'file', 'patient'"]),
        ("path,patient\na/img_000.png,p1\n", ["no 'group' column", "'path', 'patient'"]),
        ("path;group\na/img_000.png;p1\n", ["no 'path' column", "comma-separated"]),
        ("path,group,PATH\n", ["2 'path' columns"]),
        ("", ["is empty"]),
        ("\n  \n,\n", ["is empty"]),
        ("path,group\n\n", ["header but no rows"]),
    ],
)
def test_bad_header_or_empty(tmp_path, data, text, expected):
    _, index = data
    message = _refused(_write(tmp_path, text), index)
    for part in expected:
        assert part in message


def test_nonexistent_paths_first_row_and_count(tmp_path, data):
    _, index = data
    text = "path,group\na/img_000.png,p1\na/img_999.png,p1\nb/zzz.png,p2\nc/x.png,p3\n"
    message = _refused(_write(tmp_path, text), index)
    assert "line 3 names 'a/img_999.png', which does not exist in the data folder" in message
    assert "(and 2 more rows like it)" in message
    assert "fix the path (relative to the data folder, like 'a/img_000.png') or remove the row" in message


def test_case_and_folder_prefix_mistakes_get_a_suggestion(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\nA/IMG_000.PNG,p1\n"), index)
    assert "did you mean 'a/img_000.png'?" in message
    message = _refused(_write(tmp_path, "path,group\ndata/b/img_001.png,p1\n"), index)
    assert "did you mean 'b/img_001.png'?" in message


def test_existing_non_image_gets_skipped_wording(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\na/img_000.png,p1\na/notes.txt,p1\n"), index)
    assert "line 3 names 'a/notes.txt', which the scan skipped as unreadable or not an image: " in message
    assert "not an image (content not recognised); remove the row" in message


def test_folder_as_path(tmp_path, data):
    _, index = data
    assert "line 2 names 'a', which is a folder" in _refused(_write(tmp_path, "path,group\na,p1\n"), index)


def test_paths_outside_the_data_folder(tmp_path, data):
    _, index = data
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x")
    text = f"path,group\n{outside},p1\n../data/a/img_000.png,p1\n"
    message = _refused(_write(tmp_path, text), index)
    shown = str(outside) if len(str(outside)) <= 80 else str(outside)[:77] + "..."  # long paths are shortened
    assert f"line 2 names '{shown}', which is outside the data folder" in message
    assert "(and 1 more row like it)" in message


def test_empty_group_and_empty_path(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\na/img_000.png,p1\na/img_001.png,   \n"), index)
    assert "line 3 ('a/img_001.png') has an empty group" in message
    message = _refused(_write(tmp_path, "path,group\na/img_000.png\n"), index)  # short row
    assert "line 2 ('a/img_000.png') has an empty group" in message
    message = _refused(_write(tmp_path, "path,group\n  ,p1\n"), index)
    assert "line 2 has an empty path" in message


def test_listed_twice_names_both_lines(tmp_path, data):
    root, index = data
    text = f"path,group\na/img_000.png,p1\nb/img_000.png,p2\n\n./a/img_000.png,p1\n{root}/b/img_000.png,p9\n"
    message = _refused(_write(tmp_path, text), index)
    assert "'a/img_000.png' is listed twice, on lines 2 and 5 (both in group 'p1')" in message
    assert "(and 1 more row like it)" in message and "keep one row per image" in message
    message = _refused(_write(tmp_path, "path,group\nb/img_000.png,p2\nb/img_000.png,p9\n"), index)
    assert "on lines 2 and 3 (groups 'p2' and 'p9')" in message


def test_unclosed_quote_is_refused(tmp_path, data):
    _, index = data
    text = 'path,group\na/img_000.png,"p1\na/img_001.png,p2\n'
    message = _refused(_write(tmp_path, text), index)
    assert "line 2 has a field spanning several lines" in message
    # the quote is never closed on the last row: the field swallows only the line end
    message = _refused(_write(tmp_path, 'path,group\na/img_000.png,p1\na/img_001.png,"p2\n'), index)
    assert "line 3 has a field spanning several lines" in message


def test_long_values_are_shortened_in_messages(tmp_path, data):
    _, index = data
    message = _refused(_write(tmp_path, "path,group\n" + "x" * 5000 + ",p1\n"), index)
    assert "..." in message and len(message) < 600
