"""CoRE Link Format (RFC 6690) parsing/formatting and LwM2M Register payloads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.errors import BadRequest
from lwm2m.link_format import Link, LinkFormatError, format_links, parse_links, registration_objects
from lwm2m.path import Path

# TS Core (1.0 and 1.1) registration examples.
CORE_EXAMPLE = "</1/0>,</2/0>,</2/1>,</2/2>,</2/3>,</2/4>,</3/0>,</4/0>,</5/0>"
CORE_EXAMPLE_ROOT = '</>;rt="oma.lwm2m";ct=11543,</1/101>,</1/102>,</2/0>,</2/1>,</2/2>,</3/0>,</4/0>,</5>'
CORE_11_EXAMPLE = ('</>;rt="oma.lwm2m";ct="60 110 112 11542 11543",</1>;ver=1.1,</1/0>,</2/0>,</3>;ver=1.1,'
                   '</3/0>,</4/0>,</5>,</3442>;ver=1.1,</3442/0>')


def test_core_registration_example() -> None:
    links = parse_links(CORE_EXAMPLE)
    assert [link.uri for link in links] == ["/1/0", "/2/0", "/2/1", "/2/2", "/2/3", "/2/4", "/3/0", "/4/0", "/5/0"]
    assert all(link.attributes == () for link in links)
    assert links[6].path == Path(3, 0)
    assert format_links(links) == CORE_EXAMPLE
    root, cts, objects = registration_objects(links)
    assert (root, cts) == ("/", ())
    assert objects == {
        1: {"version": None, "instances": (0,)},
        2: {"version": None, "instances": (0, 1, 2, 3, 4)},
        3: {"version": None, "instances": (0,)},
        4: {"version": None, "instances": (0,)},
        5: {"version": None, "instances": (0,)},
    }


def test_core_example_with_root_link() -> None:
    links = parse_links(CORE_EXAMPLE_ROOT)
    assert links[0] == Link("/", (("rt", "oma.lwm2m"), ("ct", "11543")))
    assert links[0].path is None and links[0].get("rt") == "oma.lwm2m" and links[0].get("ct") == "11543"
    assert links[-1].path == Path(5)
    assert format_links(links) == CORE_EXAMPLE_ROOT
    root, cts, objects = registration_objects(CORE_EXAMPLE_ROOT)
    assert (root, cts) == ("/", (11543,))
    assert objects[1] == {"version": None, "instances": (101, 102)}
    assert objects[5] == {"version": None, "instances": ()}
    assert sorted(objects) == [1, 2, 3, 4, 5]


def test_core_11_example_with_versions() -> None:
    links = parse_links(CORE_11_EXAMPLE)
    assert links[0].get("ct") == "60 110 112 11542 11543"
    assert links[1] == Link("/1", (("ver", "1.1"),))
    assert format_links(links) == CORE_11_EXAMPLE
    root, cts, objects = registration_objects(links)
    assert cts == (60, 110, 112, 11542, 11543)
    assert objects[1] == {"version": "1.1", "instances": (0,)}
    assert objects[3] == {"version": "1.1", "instances": (0,)}
    assert objects[2] == {"version": None, "instances": (0,)}
    assert objects[3442] == {"version": "1.1", "instances": (0,)}


def test_alternate_root_path() -> None:
    text = '</lwm2m>;rt="oma.lwm2m",</lwm2m/1/0>,</lwm2m/3>;ver=1.1,</lwm2m/3/0>,</lwm2m/33100/0>,</other/thing>'
    root, cts, objects = registration_objects(parse_links(text))
    assert (root, cts) == ("/lwm2m", ())
    assert objects == {1: {"version": None, "instances": (0,)}, 3: {"version": "1.1", "instances": (0,)},
                       33100: {"version": None, "instances": (0,)}}


def test_quoted_values_attributes_without_value_and_whitespace() -> None:
    text = ('</a>;title="a,b;c";obs ;ssid=101,\n  </b>;if="x \\"y\\" \\\\z";sz=12 ,\r\n'
            '\t</3/0/1>;pmin=10;pmax=60;gt=5.5;st=-1')
    links = parse_links(text)
    assert links[0] == Link("/a", (("title", "a,b;c"), ("obs", None), ("ssid", "101")))
    assert links[0].get("obs") is None and links[0].has("obs") and not links[0].has("nope")
    assert links[0].get("nope", "dflt") == "dflt"
    assert links[1].get("if") == 'x "y" \\z'
    assert links[2].path == Path(3, 0, 1) and links[2].get("st") == "-1"
    again = format_links(links)
    assert again == ('</a>;title="a,b;c";obs;ssid=101,</b>;if="x \\"y\\" \\\\z";sz=12,'
                     '</3/0/1>;pmin=10;pmax=60;gt=5.5;st=-1')
    assert parse_links(again) == links
    assert str(links[0]) == '</a>;title="a,b;c";obs;ssid=101'


def test_bytes_and_empty_input() -> None:
    assert parse_links(b"</1/0>,</3/0>") == (Link("/1/0"), Link("/3/0"))
    assert parse_links("") == () and parse_links(" \n ") == () and parse_links(b"") == ()
    assert format_links(()) == ""


@pytest.mark.parametrize(
    ("uri", "path"),
    [("/", None), ("/3", Path(3)), ("/3/0", Path(3, 0)), ("/3/0/1/2", Path(3, 0, 1, 2)), ("/3/0/", Path(3, 0)),
     ("/lwm2m", None), ("/lwm2m/3/0", None), ("3/0", None), ("//3", None), ("/3//0", None), ("/1/2/3/4/5", None),
     ("/70000", None), ("/٣", None), ("/-1", None)],
)
def test_link_path(uri: str, path: Path | None) -> None:
    assert Link(uri).path == path


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("/1/0", 0, "'<'"),
        ("</1/0>,", 7, "'<'"),
        ("<>", 1, "a URI"),
        ("</1/0", 1, "'>'"),
        ("</1 0>", 3, "URI character"),
        ("</1>;;a", 5, "attribute name"),
        ("</1>;", 5, "attribute name"),
        ("</1>;=5", 5, "attribute name"),
        ("</1>;ct=", 8, "a value"),
        ("</1>;ct=,</2>", 8, "a value"),
        ('</1>;title="abc', 11, "'\"' closing"),
        ('</1>;title="abc\\"', 11, "'\"' closing"),
        ("</1> </2>", 5, "','"),
        ("</1>;ct=60 110", 11, "','"),
        ("</1>x", 4, "','"),
        ('</1>;ct=1"2"', 9, "','"),
        ("</1>;tïtle=1", 6, "','"),
    ],
)
def test_malformed_input_names_position(text: str, offset: int, expected: str) -> None:
    with pytest.raises(LinkFormatError) as info:
        parse_links(text)
    assert isinstance(info.value, BadRequest)
    assert f"offset {offset}:" in info.value.message, info.value.message
    assert expected in info.value.message


def test_invalid_utf8() -> None:
    with pytest.raises(LinkFormatError, match="not valid UTF-8 at byte 6"):
        parse_links(b"</1/0>\xff")


def test_format_rejects_unwritable_links() -> None:
    for link in (Link(""), Link("/a b"), Link("/a>"), Link("/a", (("bad name", "1"),)), Link("/a", (("", None),))):
        with pytest.raises(LinkFormatError):
            format_links([link])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("</3/0/1>", "</3/0/1>"),
        ("</70000/0>", "</70000/0>"),
        ("</3>;ver=one", "ver='one'"),
        ("</3>;ver", "ver=None"),
        ('</>;rt="oma.lwm2m";ct="60 x"', "ct='60 x'"),
        ('</>;rt="oma.lwm2m";ct', "needs a value"),
    ],
)
def test_registration_objects_rejects(text: str, needle: str) -> None:
    with pytest.raises(LinkFormatError) as info:
        registration_objects(text)
    assert needle in info.value.message


def test_registration_objects_ignores_other_resources_and_merges() -> None:
    root, cts, objects = registration_objects("</3/0>,</3/1>,</3/0>,</3>;ver=1.2,</rd>,</.well-known/core>")
    assert (root, cts) == ("/", ())
    assert objects == {3: {"version": "1.2", "instances": (0, 1)}}


# --- properties ----------------------------------------------------------------------------

_PARMNAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"
_URI_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters='<>"\x7f')

links_strategy = st.lists(
    st.builds(
        Link,
        uri=st.text(_URI_CHARS, min_size=1, max_size=12),
        attributes=st.lists(
            st.tuples(st.text(_PARMNAME_CHARS, min_size=1, max_size=6),
                      st.none() | st.text(max_size=10) | st.from_regex(r"[0-9]{1,5}", fullmatch=True)),
            max_size=4,
        ).map(tuple),
    ),
    max_size=5,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(links_strategy)
def test_format_parse_round_trip(links: tuple[Link, ...]) -> None:
    text = format_links(links)
    assert parse_links(text) == links
    assert format_links(parse_links(text)) == text
    assert parse_links(text.encode("utf-8")) == links


_TOKENS = list('<>/;,="\\ \n\t01a3.') + ["", "oma.lwm2m", "</", ">;", ";ver=1.1", ";obs", ",</3/0>"]


@st.composite
def mutated_links(draw: st.DrawFn) -> str:
    """Valid link text with a few characters replaced, deleted or inserted."""
    text = format_links(draw(links_strategy))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(text)))
        token = draw(st.sampled_from(_TOKENS))
        keep = draw(st.booleans())
        text = text[:pos] + token + text[pos + (0 if keep else 1):]
    return text


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), mutated_links()))
def test_parse_arbitrary_text_only_raises_link_format_error(text: str) -> None:
    try:
        links = parse_links(text)
    except LinkFormatError:
        return
    assert all(isinstance(link, Link) for link in links)
    assert parse_links(format_links(links)) == links
    try:
        registration_objects(links)
    except LinkFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_parse_arbitrary_bytes_only_raises_link_format_error(data: bytes) -> None:
    try:
        parse_links(data)
    except LinkFormatError:
        pass
