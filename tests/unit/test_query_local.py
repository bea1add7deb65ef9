"""Golden tests: the local engine's output for the S3 Select documentation's examples and for
the edge cases of real files, byte for byte as S3 Select would serialise it."""

from __future__ import annotations

import bz2
import gzip
import json

import pytest

from tests.unit.in_memory_s3 import in_memory_bucket
from tests.unit.query_paths import query_path  # noqa: F401 - each test runs on both paths
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, run_query

BUCKET = "golden"

# The S3 Select guide's sample CSV ("Selecting content from objects").
PEOPLE = (
    "Name,PhoneNumber,City,Occupation\n"
    "Sam,(949) 555-6701,Irvine,Solutions Architect\n"
    "Vinod,(949) 555-6702,Los Angeles,Solutions Architect\n"
    "Jeff,(949) 555-6703,Seattle,AWS Evangelist\n"
    "Jane,(949) 555-6704,Chicago,Developer\n"
    "Sean,(949) 555-6705,Chicago,Developer\n"
    "Mary,(949) 555-6706,Chicago,Developer\n"
    "Kate,(949) 555-6707,Chicago,Developer\n"
)
# The aggregate-functions page's S3 Inventory report (no header, GZIP).
INVENTORY = (
    '"DOC-EXAMPLE-BUCKET","example-folder/","0"\n'
    '"DOC-EXAMPLE-BUCKET","example-folder/object1","2011267"\n'
    '"DOC-EXAMPLE-BUCKET","example-folder/object2","1570024"\n'
)
# The SELECT command page's JSON document.
SUSAN = """{"name": "Susan Smith",
"org": "engineering",
"projects":
    [
     {"project_name":"project1", "completed":false},
     {"project_name":"project2", "completed":true}
    ]
}"""


@pytest.fixture(scope="module")
def s3():
    with in_memory_bucket(BUCKET) as client:
        yield client


def query(s3, body: bytes | str, sql: str, rows_format: str = "json", **fmt: str) -> str:
    key = f"k-{abs(hash((body, sql, tuple(fmt.items()))))}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body)
    request = QueryRequest(BUCKET, key, sql, InputFormat(**fmt), rows_format)
    return run_query(s3, request, "local").text


def test_doc_select_where_on_a_quoted_header_name(s3) -> None:
    text = query(s3, PEOPLE, "SELECT * FROM S3Object s WHERE s.\"Name\" = 'Jane'", "csv")
    assert text == "Jane,(949) 555-6704,Chicago,Developer\n"


def test_doc_projection_and_filter_as_json(s3) -> None:
    text = query(s3, PEOPLE, "SELECT s.Name, s.City FROM S3Object s WHERE s.City = 'Chicago'")
    names = [json.loads(line) for line in text.splitlines()]
    assert names[0] == {"Name": "Jane", "City": "Chicago"}
    assert [n["Name"] for n in names] == ["Jane", "Sean", "Mary", "Kate"]


def test_doc_sum_over_a_gzipped_inventory_report(s3) -> None:
    sql = (
        "SELECT SUM(CAST(_3 as INT)) FROM s3object s "
        "WHERE _2 LIKE 'example-folder/%' AND _2 != 'example-folder/';"
    )
    body = gzip.compress(INVENTORY.encode())
    assert query(s3, body, sql, "csv", csv_header="NONE", compression="GZIP") == "3581291\n"
    assert query(s3, body, sql, csv_header="NONE", compression="GZIP") == '{"_1":3581291}\n'


def test_doc_json_attribute_and_list_access(s3) -> None:
    name = query(s3, SUSAN, "Select s.name from S3Object s", kind="JSON", json_type="DOCUMENT")
    assert name == '{"name":"Susan Smith"}\n'
    project = query(
        s3,
        SUSAN,
        "Select s.projects[0].project_name from S3Object s",
        kind="JSON",
        json_type="DOCUMENT",
    )
    assert project == '{"project_name":"project1"}\n'


def test_doc_case_insensitive_names_unless_quoted(s3) -> None:
    body = "NAME,age\nann,3\n"
    assert query(s3, body, "SELECT s.name FROM S3Object s") == '{"name":"ann"}\n'
    with pytest.raises(QueryError, match="'name' is not in the CSV header"):
        query(s3, body, 'SELECT s."name" FROM S3Object s')
    with pytest.raises(QueryError, match="ambiguous"):
        query(s3, "a,A\n1,2\n", "SELECT s.a FROM S3Object s")


def test_count_star_is_an_unnamed_first_column(s3) -> None:
    assert query(s3, PEOPLE, "SELECT COUNT(*) FROM S3Object s") == '{"_1":7}\n'
    assert query(s3, PEOPLE, "SELECT count(*) AS n FROM S3Object s", "csv") == "7\n"


def test_aggregates_over_cast_values(s3) -> None:
    body = "k,v\na,1\nb,2\nc,\nd,4\n"
    sql = (
        "SELECT MIN(CAST(s.v AS INT)), MAX(CAST(s.v AS INT)), AVG(CAST(s.v AS FLOAT)), "
        "SUM(CAST(s.v AS INT)), COUNT(s.v) FROM S3Object s WHERE s.v <> ''"
    )
    assert query(s3, body, sql) == '{"_1":1,"_2":4,"_3":2.3333333333333335,"_4":7,"_5":3}\n'
    empty = "SELECT SUM(CAST(s.v AS INT)), COUNT(*) FROM S3Object s WHERE s.k = 'zz'"
    assert query(s3, body, empty) == '{"_1":null,"_2":0}\n'


def test_limit_caps_and_positional_columns_without_header(s3) -> None:
    body = "h1,h2\n1,2\n3,4\n5,6\n"
    assert query(s3, body, "SELECT * FROM S3Object LIMIT 2", csv_header="NONE") == (
        '{"_1":"h1","_2":"h2"}\n{"_1":"1","_2":"2"}\n'
    )
    assert query(s3, body, "SELECT s._2 FROM S3Object s LIMIT 1", csv_header="IGNORE") == (
        '{"_2":"2"}\n'
    )
    with pytest.raises(QueryError, match="columns are named _1, _2"):
        query(s3, body, "SELECT s.h1 FROM S3Object s", csv_header="IGNORE")


def test_quoted_fields_embedded_newlines_and_delimiters(s3) -> None:
    body = 'a,b\n"x, y","line1\nline2"\n"say ""hi""",2\n'
    assert query(s3, body, "SELECT * FROM S3Object s") == (
        '{"a":"x, y","b":"line1\\nline2"}\n{"a":"say \\"hi\\"","b":"2"}\n'
    )
    assert query(s3, body, "SELECT * FROM S3Object s", "csv") == (
        '"x, y","line1\nline2"\n"say ""hi""",2\n'
    )


def test_custom_delimiter_and_quote(s3) -> None:
    body = "a|b\n'1|2'|3\n"
    text = query(s3, body, "SELECT * FROM S3Object s", delimiter="|", quote="'")
    assert text == '{"a":"1|2","b":"3"}\n'


def test_empty_object_and_header_only(s3) -> None:
    assert query(s3, b"", "SELECT * FROM S3Object s") == ""
    assert query(s3, b"", "SELECT COUNT(*) FROM S3Object s") == '{"_1":0}\n'
    assert query(s3, "a,b\n", "SELECT s.a FROM S3Object s") == ""


def test_ragged_rows_omit_missing_fields_and_name_extra_ones(s3) -> None:
    body = "a,b,c\n1\n1,2,3,4\n"
    assert query(s3, body, "SELECT * FROM S3Object s") == (
        '{"a":"1"}\n{"a":"1","b":"2","c":"3","_4":"4"}\n'
    )
    assert query(s3, body, "SELECT s.b FROM S3Object s WHERE s.b IS MISSING") == "{}\n"
    assert query(s3, body, "SELECT s.a, s.c FROM S3Object s", "csv") == "1,\n1,3\n"


def test_unicode_crlf_and_bom(s3) -> None:
    body = "\ufeffnom,ville\r\nZoë,Zürich\r\n東京,🗼\r\n".encode()
    assert query(s3, body, "SELECT * FROM S3Object s WHERE s.nom LIKE 'Z_ë'") == (
        '{"nom":"Zoë","ville":"Zürich"}\n'
    )
    assert query(s3, body, "SELECT s.ville FROM S3Object s", "csv") == "Zürich\n🗼\n"


def test_gzip_and_bzip2_stream_the_same_rows(s3) -> None:
    plain = "a\n" + "".join(f"{i}\n" for i in range(1000))
    sql = "SELECT COUNT(*) FROM S3Object s WHERE CAST(s.a AS INT) BETWEEN 10 AND 19"
    for compression, packed in (("GZIP", gzip.compress), ("BZIP2", bz2.compress)):
        body = packed(plain.encode())
        assert query(s3, body, sql, compression=compression) == '{"_1":10}\n'
    two_members = gzip.compress(b"a\n1\n") + gzip.compress(b"2\n")
    assert query(s3, two_members, "SELECT * FROM S3Object", "csv", compression="GZIP") == "1\n2\n"


def test_comment_lines_are_skipped_as_s3_select_does(s3) -> None:
    assert query(s3, "a\n#note\n1\n", "SELECT * FROM S3Object", "csv") == "1\n"


def test_json_lines_records_nested_values_and_missing(s3) -> None:
    body = '{"id":1,"tags":["x"],"m":{"k":1.5}}\n\n{"id":2,"m":null}\n'
    assert query(s3, body, "SELECT * FROM S3Object s", kind="JSON") == (
        '{"id":1,"tags":["x"],"m":{"k":1.5}}\n{"id":2,"m":null}\n'
    )
    assert query(s3, body, "SELECT s.m.k, s.tags[0] AS t FROM S3Object s", kind="JSON") == (
        '{"k":1.5,"t":"x"}\n{}\n'
    )
    assert query(s3, body, "SELECT s.id FROM S3Object s WHERE s.m IS NULL", kind="JSON") == (
        '{"id":2}\n'
    )
    where = "SELECT s.id FROM S3Object s WHERE s.id IN (2, 3) OR s.m.k > 2"
    assert query(s3, body, where, kind="JSON") == '{"id":2}\n'


def test_json_document_with_several_root_values(s3) -> None:
    body = '{"a": 1}\n{"a": 2,\n "b": [1, 2]}'
    text = query(s3, body, "SELECT * FROM S3Object[*] d", kind="JSON", json_type="DOCUMENT")
    assert text == '{"a":1}\n{"a":2,"b":[1,2]}\n'


def test_an_empty_json_document_has_no_records_like_an_empty_csv(s3) -> None:
    for body in ("", " \n\t"):
        assert query(s3, body, "SELECT * FROM S3Object", kind="JSON", json_type="DOCUMENT") == ""
    with pytest.raises(QueryError, match="not a valid JSON document: parse error: premature EOF"):
        query(s3, ' "abc', "SELECT * FROM S3Object", kind="JSON", json_type="DOCUMENT")


def test_arithmetic_concatenation_and_decimal_output(s3) -> None:
    body = "a,b\n7,2\n-7,2\n"
    sql = (
        "SELECT CAST(a AS INT) / CAST(b AS INT) AS q, CAST(a AS INT) % CAST(b AS INT) AS r, "
        "CAST(a AS DECIMAL) / 2 AS d, a || '!' AS e FROM S3Object"
    )
    assert query(s3, body, sql) == (
        '{"q":3,"r":1,"d":3.5,"e":"7!"}\n{"q":-3,"r":-1,"d":-3.5,"e":"-7!"}\n'
    )


@pytest.mark.parametrize(
    ("body", "sql", "message"),
    [
        (
            "a\n1\nsecret-x\n",
            "SELECT CAST(s.a AS INT) FROM S3Object s",
            "record 2: CAST(a AS INT): this text is not a valid INT",
        ),
        (
            "a\n5551234\n",
            "SELECT * FROM S3Object s WHERE s.a > 3",
            "record 1: a > 3: cannot compare text with int; CAST one side",
        ),
        (
            "a\nsecret-x\n",
            "SELECT SUM(s.a) FROM S3Object s",
            "record 1: SUM(a): SUM needs numbers, got text",
        ),
        (
            "a\n0\n",
            "SELECT 1 / CAST(s.a AS INT) FROM S3Object s",
            "record 1: 1 / CAST(a AS INT): division by zero",
        ),
        (
            "a\nsecret-x\n",
            "SELECT * FROM S3Object s WHERE s.a",
            "record 1: a: WHERE needs a condition, but this gave text",
        ),
        (
            "a\n5551234\n",
            "SELECT * FROM S3Object s WHERE s.a IN (1, 2)",
            "record 1: a IN (...): cannot compare text with int",
        ),
    ],
)
def test_value_errors_name_the_record_and_expression_but_never_the_value(
    s3, body, sql, message
) -> None:
    with pytest.raises(QueryError) as raised:
        query(s3, body, sql)
    assert str(raised.value).startswith(message)
    assert "secret" not in str(raised.value)
    assert "5551234" not in str(raised.value)


def test_malformed_inputs_fail_with_a_reason(s3) -> None:
    with pytest.raises(QueryError, match="not valid GZIP"):
        query(s3, b"not gzip at all", "SELECT * FROM S3Object", compression="GZIP")
    with pytest.raises(QueryError, match="not UTF-8"):
        query(s3, b"a\n\xff\xfe\n", "SELECT * FROM S3Object")
    with pytest.raises(QueryError, match="line 2 is not valid JSON"):
        query(s3, '{"a":1}\n{"a":\n', "SELECT * FROM S3Object", kind="JSON")


@pytest.mark.parametrize(
    "line",
    ['{"a":"x\\ud800y"}', '{"\\uDC00":1}', '{"a":["\\ud83d"]}'],
    ids=["a value", "a key", "in an array"],
)
def test_a_lone_surrogate_escape_is_refused_naming_the_line(s3, line) -> None:
    """RFC 8259 section 8.2: such strings are JSON, but no UTF-8 output can hold them; a pair
    (an emoji) is text, as is a line that only looks like one (an escaped backslash)."""
    text = '{"a":"\\ud83d\\ude00"}\n{"a":"\\\\ud800"}\n'
    assert query(s3, text, "SELECT * FROM S3Object", kind="JSON") == (
        '{"a":"\U0001f600"}\n{"a":"\\\\ud800"}\n'
    )
    with pytest.raises(QueryError, match="line 2 holds a lone surrogate escape"):
        query(s3, '{"a":1}\n' + line + "\n", "SELECT * FROM S3Object", kind="JSON")


def test_a_nan_compares_unordered_against_every_literal(s3) -> None:
    """IEEE 754 (and Python's floats): NaN is neither less, equal nor greater; only != holds.
    A DECIMAL literal (2.5) once raised decimal.InvalidOperation instead of answering."""
    body = '{"a":NaN}\n{"a":1.5}\n'
    for condition, count in [("< 2.5", 1), ("> 2.5", 0), ("= 2.5", 0), ("!= 2.5", 2), ("< 2", 1)]:
        sql = f"SELECT COUNT(*) FROM S3Object s WHERE s.a {condition}"
        assert query(s3, body, sql, kind="JSON") == f'{{"_1":{count}}}\n', condition


def test_a_missing_object_names_the_source(s3) -> None:
    request = QueryRequest(BUCKET, "nope.csv", "SELECT * FROM S3Object", InputFormat())
    with pytest.raises(QueryError, match=f"s3://{BUCKET}/nope.csv does not exist"):
        run_query(s3, request, "local")
