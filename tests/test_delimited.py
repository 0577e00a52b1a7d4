"""fiveflow.delimited.read_delimited: the strict reader of every user table (issue 16, hostile inputs)."""

from __future__ import annotations

import logging

import pytest

from fiveflow.delimited import TableError, read_delimited


def write(tmp_path, name: str, data: bytes | str):
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def test_unquoted_comma_is_an_error_naming_file_line_and_fix(tmp_path):
    p = write(tmp_path, "r.csv", "patient_id,text\nTCGA-AA-0001,Adenocarcinoma, grade 2, pleura free\n")
    with pytest.raises(
        TableError,
        match=r"r\.csv: line 2: 4 comma-separated field\(s\) where the header \(line 1\) "
        r"has 2 .*Fix: quote fields that contain the delimiter, e\.g\. \"a, b\"",
    ):
        read_delimited(p)


def test_trailing_comma_on_rows_and_header(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,label,path\nP1,LUAD,s1.svs,\n")
    with pytest.raises(TableError, match=r"s\.csv: line 2: 4 .*trailing comma"):
        read_delimited(p)
    p = write(tmp_path, "s.csv", "patient_id,label,path,\nP1,LUAD,s1.svs,\n")
    with pytest.raises(TableError, match=r"s\.csv: line 1: the header has an empty column name.*trailing comma"):
        read_delimited(p)


def test_too_few_fields_is_an_error(tmp_path):
    p = write(tmp_path, "r.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(TableError, match=r"line 3: 2 comma-separated field\(s\).*has 3.*missing fields"):
        read_delimited(p)


def test_quoted_commas_quotes_and_newlines_are_kept(tmp_path):
    p = write(tmp_path, "r.csv", 'patient_id,text\nP1,"Adenocarcinoma, grade 2"\nP2,"line one\nline two, ""quoted"""\n')
    df = read_delimited(p)
    assert list(df.columns) == ["patient_id", "text"] and df.index.tolist() == [0, 1]  # no implicit index
    assert df["text"].tolist() == ["Adenocarcinoma, grade 2", 'line one\nline two, "quoted"']
    assert df.attrs["lines"] == [2, 3]


def test_line_numbers_count_physical_lines_after_a_multiline_field_and_blank_lines(tmp_path):
    p = write(tmp_path, "r.csv", 'a,b\n"x\n\ny",1\n\n2,3\n4,5,6\n')
    with pytest.raises(TableError, match=r"r\.csv: line 7: 3 comma"):
        read_delimited(p)
    p = write(tmp_path, "r.csv", 'a,b\r\n"x\r\ny",1\r\n\r\n2,3\r\n')
    df = read_delimited(p)
    assert df.values.tolist() == [["x\r\ny", "1"], ["2", "3"]] and df.attrs["lines"] == [2, 5]


def test_unclosed_quote_names_the_line_where_it_opens(tmp_path):
    p = write(tmp_path, "r.csv", 'a,b\n1,2\n3,"never closed\n4,5\n')
    with pytest.raises(TableError, match=r"r\.csv: line 3: cannot parse"):
        read_delimited(p)


def test_blank_lines_skipped_header_only_and_values_are_str(tmp_path):
    p = write(tmp_path, "r.csv", "\na,b\n\n01,\n\n  \n")
    df = read_delimited(p)
    assert df.values.tolist() == [["01", ""]] and df.attrs["lines"] == [4]
    assert all(isinstance(v, str) for v in df.to_numpy().ravel())
    p = write(tmp_path, "h.csv", "a, b \n")
    df = read_delimited(p)
    assert df.empty and list(df.columns) == ["a", "b"]


@pytest.mark.parametrize(
    "header, match",
    [
        ("a,a", r"line 1: column name\(s\) \['a'\] appear more than once"),
        ("a,,b", r"line 1: the header has an empty column name \(column 2 of 3\)"),
    ],
)
def test_bad_header(tmp_path, header, match):
    with pytest.raises(TableError, match=match):
        read_delimited(write(tmp_path, "r.csv", header + "\n1,2,3\n"))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", r"e\.csv: the file is empty"),
        (b"\n \n", r"e\.csv: the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"e\.csv: binary content \(NUL bytes\)"),
        ("a,b\n1,2\n".encode("utf-16"), r"binary content.*UTF-16"),
        (b"a,b\n\x81\x8d,1\n", r"cannot decode"),
        (b"\xf0\x01\x0b\xe3eJ\x84\xaa\xfb^\xf0\xe9#W", r"binary content \(control byte '\\x01' at offset 1\)"),
        (b"a,b\x0bc\n1,2\n", r"line 1: column name 'b\\x0bc' has control characters"),
    ],
)
def test_empty_binary_and_undecodable_files(tmp_path, data, match):
    with pytest.raises(TableError, match=match):
        read_delimited(write(tmp_path, "e.csv", data))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="samples sheet not found"):
        read_delimited(tmp_path / "nope.csv", what="samples sheet")
    with pytest.raises(TableError, match="a folder"):
        read_delimited(tmp_path)


def test_utf8_bom_and_cp1252_fallback_with_a_warning(tmp_path, caplog):
    df = read_delimited(write(tmp_path, "u.csv", "\ufeffpatient_id,text\nJosé 01,ok\n".encode()))
    assert list(df.columns) == ["patient_id", "text"] and df.iloc[0, 0] == "José 01"
    with caplog.at_level(logging.WARNING):
        df = read_delimited(write(tmp_path, "w.csv", "patient_id,text\nJosé 01,Résection\n".encode("cp1252")))
    assert df.values.tolist() == [["José 01", "Résection"]]
    assert "not UTF-8; read as cp1252" in caplog.text


def test_tsv_by_extension_or_delimiter(tmp_path):
    df = read_delimited(write(tmp_path, "r.tsv", "a\tb\n1, 2\t3\n"))
    assert df.values.tolist() == [["1, 2", "3"]]
    with pytest.raises(TableError, match=r"line 2: 3 tab-separated"):
        read_delimited(write(tmp_path, "r.tab", "a\tb\n1\t2\t3\n"))
    assert read_delimited(write(tmp_path, "m.txt", "a\tb\n1\t2\n"), "\t").values.tolist() == [["1", "2"]]
    with pytest.raises(TableError, match=r"tab-separated .* named r\.csv.*name it \.tsv"):
        read_delimited(write(tmp_path, "r.csv", "a\tb\n1\t2\n"))


def test_long_fields_are_read(tmp_path):
    text = "word " * 60_000  # past the csv module's default 128 KiB field limit
    df = read_delimited(write(tmp_path, "r.csv", f'patient_id,text\nP1,"{text}"\n'))
    assert df.loc[0, "text"] == text


def test_control_characters_inside_utf8_values_are_kept(tmp_path):
    # Word's soft line break (\x0b) and OCR page breaks (\x0c) occur in real report texts
    df = read_delimited(write(tmp_path, "r.csv", 'patient_id,text\nP1,"page 1\x0cpage 2\x0bend"\n'))
    assert df.loc[0, "text"] == "page 1\x0cpage 2\x0bend"


def test_a_zip_of_one_table_is_read_from_its_member(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "r.csv.zip", "w") as zf:
        zf.writestr("inner/R.tsv", "a\tb\n1\t2\n")
        zf.writestr("__MACOSX/._R.tsv", "junk")
    df = read_delimited(tmp_path / "r.csv.zip")
    assert df.to_dict("records") == [{"a": "1", "b": "2"}]  # the member's .tsv sets the delimiter
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as zf:
        zf.writestr("a.csv", "a\n1\n")
        zf.writestr("b.csv", "a\n2\n")
    with pytest.raises(TableError, match=r"two\.zip: a zip archive with 2 CSV/TSV members \(a\.csv, b\.csv\)"):
        read_delimited(tmp_path / "two.zip")
    (tmp_path / "cut.zip").write_bytes((tmp_path / "r.csv.zip").read_bytes()[:40])
    with pytest.raises(TableError, match=r"cut\.zip: not a readable zip archive .*download it again"):
        read_delimited(tmp_path / "cut.zip")
    with zipfile.ZipFile(tmp_path / "ragged.zip", "w") as zf:
        zf.writestr("t.csv", "a,b\n1,2,3\n")
    with pytest.raises(TableError, match=r"ragged\.zip:t\.csv: line 2"):
        read_delimited(tmp_path / "ragged.zip")
