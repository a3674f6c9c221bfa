"""CSV rows with their line numbers, header checks, and the reference-row check shared by
`records convert` and the HOD pipeline."""
import pytest

from egovideo_jax.io.csv_rows import CsvRow, csv_records, read_csv_rows
from egovideo_jax.records.convert_csv import BAD_TIMES, MALFORMED, BadRow, parse_row, read_rows


def test_csv_records_keep_line_numbers_and_blank_rows(tmp_path):
    path = tmp_path / 't.csv'
    path.write_text('a,b\n\n"x\ny",2\n')
    assert list(csv_records(path)) == [CsvRow(1, ('a', 'b')), CsvRow(2, ()),
                                       CsvRow(4, ('x\ny', '2'))]


def test_read_csv_rows_checks_the_header_and_field_counts(tmp_path):
    path = tmp_path / 't.csv'
    path.write_text('a,b\n1,2\n\n3\n')
    rows = read_csv_rows(path, ['a'])
    assert next(rows) == (f'{path}, line 2', {'a': '1', 'b': '2'})
    with pytest.raises(ValueError, match=r'line 4: 1 fields, the header has 2'):
        next(rows)
    with pytest.raises(ValueError, match='header lacks columns'):
        list(read_csv_rows(path, ['c']))


def test_reference_rows_skip_the_header_and_strip_fields(tmp_path):
    path = tmp_path / 't.csv'
    path.write_text('video_id,start,end,text\n v1 , 0.5,1.5, takes the cup ,epic\n')
    [row] = read_rows(path)
    clip = parse_row(row)
    assert (clip.line, clip.video_id, clip.start, clip.end, clip.text, clip.source) == (
        2, 'v1', 0.5, 1.5, 'takes the cup', 'epic')


@pytest.mark.parametrize('fields, reason', [
    (('v', '1', '2'), MALFORMED), ((' ', '1', '2', 't'), MALFORMED),
    (('v', 'x', '2', 't'), BAD_TIMES), (('v', '2', '1', 't'), BAD_TIMES),
    (('v', 'nan', '1', 't'), BAD_TIMES)])
def test_bad_reference_rows_name_the_reason(fields, reason):
    with pytest.raises(BadRow) as error:
        parse_row(CsvRow(3, fields))
    assert error.value.reason == reason
