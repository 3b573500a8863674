"""The object model: shipped DDF files, the DDF parser's errors, value checks."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path as FsPath

import pytest

from lwm2m.errors import BadRequest, LwM2MError, MethodNotAllowed, NotFound
from lwm2m.model import (ObjectModel, ObjectRegistry, Operations, ResourceModel, ResourceType,
                                   default_registry)
from lwm2m.model.ddf import DdfError, load_ddf_file, parse_ddf
from lwm2m.model.values import check_value, numeric_range, parse_cli_value
from lwm2m.path import ObjLink, Path

OBJECTS = resources.files("lwm2m.model").joinpath("objects")
SHIPPED = sorted(e.name for e in OBJECTS.iterdir() if e.name.endswith(".xml"))


def P(text: str) -> Path:
    return Path.parse(text)


def obj_of(registry: ObjectRegistry, oid: int) -> ObjectModel:
    model = registry.get(oid)
    assert model is not None, oid
    return model


def res_of(registry: ObjectRegistry, oid: int, rid: int) -> ResourceModel:
    model = registry.resource(oid, rid)
    assert model is not None, (oid, rid)
    return model


@pytest.fixture(scope="module")
def registry() -> ObjectRegistry:
    return default_registry()


# --- shipped files ------------------------------------------------------------------------


def test_shipped_files_are_the_expected_set() -> None:
    assert SHIPPED == ["0.xml", "1.xml", "3.xml", "33100.xml", "33101.xml", "4.xml", "5.xml", "9.xml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_file_loads(name: str) -> None:
    with resources.as_file(OBJECTS.joinpath(name)) as fs_path:
        models = load_ddf_file(fs_path)
    assert len(models) == 1
    model = models[0]
    assert f"{model.id}.xml" == name
    assert model.resources and all(r.name for r in model.resources.values())
    assert list(model.resources) == sorted(model.resources)


@pytest.mark.parametrize("name", [n for n in SHIPPED if not n.startswith("331")])
def test_oma_files_keep_their_license_header(name: str) -> None:
    text = OBJECTS.joinpath(name).read_text(encoding="utf-8")
    assert "Open Mobile Alliance" in text and "Redistribution and use in source and binary forms" in text


def test_text_and_bytes_parse_alike() -> None:
    text = OBJECTS.joinpath("3.xml").read_text(encoding="utf-8")
    assert parse_ddf(text) == parse_ddf(text.encode("utf-8"))
    assert "’" in parse_ddf(text)[0].resources[11].description  # non-ASCII kept


def test_default_registry_versions(registry: ObjectRegistry) -> None:
    versions = {o.id: o.version for o in registry}
    assert versions == {0: "1.1", 1: "1.1", 3: "1.1", 4: "1.1", 5: "1.1", 9: "1.1", 33100: "1.0", 33101: "1.0"}
    assert obj_of(registry, 3).urn == "urn:oma:lwm2m:oma:3:1.1"
    assert obj_of(registry, 4).lwm2m_version == "1.0"  # the 4.xml 1.1 file has no <LWM2MVersion>


def test_default_registry_is_fresh_each_call_but_models_are_cached() -> None:
    a, b = default_registry(), default_registry()
    assert a is not b and a.get(3) is b.get(3)
    a.objects.pop(3)
    assert 3 in default_registry()


def test_device_manufacturer(registry: ObjectRegistry) -> None:
    res = registry.resource(3, 0)
    assert res is not None
    assert (res.name, res.type, res.operations, res.multiple, res.mandatory) == (
        "Manufacturer", ResourceType.STRING, Operations.R, False, False)
    reboot = registry.resource(3, 4)
    assert reboot is not None and reboot.type is ResourceType.NONE and reboot.operations.executable
    assert res_of(registry, 3, 13).type is ResourceType.TIME
    assert res_of(registry, 3, 22).type is ResourceType.OBJLNK
    assert obj_of(registry, 3).mandatory and not obj_of(registry, 3).multiple


def test_software_management_update_state(registry: ObjectRegistry) -> None:
    res = registry.resource(9, 7)
    assert res is not None
    assert (res.name, res.type, res.range, res.mandatory) == ("Update State", ResourceType.INTEGER, "0..4", True)
    assert obj_of(registry, 9).multiple
    assert res_of(registry, 9, 21).type is ResourceType.UNSIGNED_INTEGER


def test_security_resources_are_bootstrap_only(registry: ObjectRegistry) -> None:
    assert all(r.operations == Operations.NONE for r in obj_of(registry, 0).resources.values())


def test_ml_capability(registry: ObjectRegistry) -> None:
    obj = registry.get(33100)
    assert obj is not None
    assert (obj.name, obj.multiple, obj.mandatory, obj.lwm2m_version, obj.urn) == (
        "ML Capability", False, False, "1.1", "urn:oma:lwm2m:x:33100")
    assert sorted(obj.resources) == list(range(14))
    assert [r.id for r in obj.resources.values() if r.mandatory] == [0, 1, 2, 3, 4, 5]
    assert {r.id for r in obj.resources.values() if r.multiple} == {7, 9, 10}
    key = obj.resources[12]
    assert (key.name, key.type, key.operations) == ("Package Signing Public Key", ResourceType.OPAQUE, Operations.RW)
    assert "Ed25519" in key.description
    assert obj.resources[0].type is ResourceType.UNSIGNED_INTEGER and obj.resources[0].units == "B"
    assert obj.resources[5].units == "MHz"
    assert all(r.operations == Operations.R for r in obj.resources.values() if r.id != 12)


def test_ml_inference(registry: ObjectRegistry) -> None:
    obj = registry.get(33101)
    assert obj is not None
    assert (obj.name, obj.multiple, obj.urn) == ("ML Inference", False, "urn:oma:lwm2m:x:33101")
    assert sorted(obj.resources) == list(range(12))
    assert [r.id for r in obj.resources.values() if r.mandatory] == [0, 1, 2, 3]
    assert obj.resources[2].type is ResourceType.OPAQUE
    assert obj.resources[5].units == "us"
    for rid in (10, 11):
        assert obj.resources[rid].operations == Operations.E and obj.resources[rid].type is ResourceType.NONE
    assert "0='" in obj.resources[10].description


# --- DDF parser errors ---------------------------------------------------------------------

ITEM = """<Item ID="{rid}"><Name>{name}</Name><Operations>{ops}</Operations>
<MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
<Type>{type}</Type><RangeEnumeration></RangeEnumeration><Units></Units>
<Description>d</Description></Item>"""


def ddf(items: str = "", *, oid: str = "<ObjectID>42000</ObjectID>", extra: str = "") -> str:
    items = items or ITEM.format(rid=0, name="Value", ops="R", type="String")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<LWM2M><Object ObjectType="MODefinition"><Name>Test</Name><Description1>t</Description1>
{oid}<ObjectURN>urn:oma:lwm2m:x:42000</ObjectURN><LWM2MVersion>1.1</LWM2MVersion>
<ObjectVersion>1.0</ObjectVersion><MultipleInstances>Multiple</MultipleInstances>
<Mandatory>Optional</Mandatory>{extra}<Resources>{items}</Resources></Object></LWM2M>"""


def test_minimal_ddf_parses() -> None:
    items = ITEM.format(rid=0, name="A", ops="RW", type="Unsigned Integer") + ITEM.format(
        rid=1, name="B", ops="E", type="none") + ITEM.format(rid=2, name="C", ops="R", type="Objlnk") + ITEM.format(
        rid=3, name="D", ops="R", type="Corelnk") + ITEM.format(rid=4, name="E", ops="E", type="")
    (model,) = parse_ddf(ddf(items).encode(), source="test.xml")
    assert model.id == 42000 and model.multiple and model.version == "1.0"
    assert [r.type for r in model.resources.values()] == [
        ResourceType.UNSIGNED_INTEGER, ResourceType.NONE, ResourceType.OBJLNK, ResourceType.CORELNK, ResourceType.NONE]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (ddf(oid=""), ["bad.xml", "<ObjectID>", "missing"]),
        (ddf(oid="<ObjectID>x1</ObjectID>"), ["object x1", "<ObjectID>", "not a non-negative integer"]),
        (ddf(oid="<ObjectID>70000</ObjectID>"), ["object 70000", "out of range"]),
        (ddf(ITEM.format(rid=3, name="Val", ops="R", type="Strin")),
         ["bad.xml", "object 42000", "resource 3", "<Type>", "'Strin'", "did you mean 'String'"]),
        (ddf(ITEM.format(rid=1, name="A", ops="R", type="String")
             + ITEM.format(rid=1, name="B", ops="R", type="Integer")),
         ["object 42000", "resource 1", "duplicate resource id 1", "'A'", "'B'"]),
        (ddf(ITEM.format(rid="one", name="A", ops="R", type="String")),
         ["resource one", "<Item ID>", "not a non-negative"]),
        (ddf(ITEM.format(rid=-1, name="A", ops="R", type="String")), ["resource -1", "<Item ID>"]),
        (ddf(ITEM.format(rid=65536, name="A", ops="R", type="String")), ["resource 65536", "out of range"]),
        (ddf(ITEM.format(rid=2, name="A", ops="RX", type="String")), ["resource 2", "<Operations>", "'RX'"]),
        (ddf(ITEM.format(rid=2, name="A", ops="R", type="")), ["resource 2", "<Type>", "executable"]),
        (ddf(ITEM.format(rid=2, name="", ops="R", type="String")), ["resource 2", "<Name>", "empty"]),
        (ddf(ITEM.format(rid=2, name="A", ops="R", type="String").replace("Single", "Singel")),
         ["resource 2", "<MultipleInstances>", "'Singel'"]),
        (ddf(ITEM.format(rid=2, name="A", ops="R", type="String").replace("<Mandatory>Optional</Mandatory>", "")),
         ["resource 2", "<Mandatory>", "missing"]),
        (ddf('<Item><Name>A</Name></Item>'), ["resource ?", "<Item>", "missing ID"]),
        (ddf(extra="<Oops/>").replace("<Resources>", "").replace("</Resources>", ""), ["<Resources>", "missing"]),
        (ddf().replace("<LWM2MVersion>1.1</LWM2MVersion>", "<LWM2MVersion>one</LWM2MVersion>"),
         ["<LWM2MVersion>", "'one'"]),
        ("<LWM2M></LWM2M>", ["bad.xml", "no <Object>"]),
        ("<Objects/>", ["root element must be <LWM2M>"]),
        ("<LWM2M><Object>", ["bad.xml", "not well-formed XML", "line 1"]),
        ('<!DOCTYPE x [<!ENTITY a "b">]><LWM2M/>', ["bad.xml", "DOCTYPE"]),
        ('<?xml version="1.0"?>\n<!ENTITY a "b"><LWM2M/>', ["not well-formed"]),  # outside a DOCTYPE
    ],
)
def test_bad_ddf_errors_name_what_is_wrong(text: str, needles: list[str]) -> None:
    with pytest.raises(DdfError) as info:
        parse_ddf(text, source="bad.xml")
    assert isinstance(info.value, BadRequest)
    for needle in needles:
        assert needle in info.value.message, (needle, info.value.message)


def test_duplicate_object_in_one_file() -> None:
    text = ddf()
    body = text[text.index("<Object "):text.index("</LWM2M>")]
    with pytest.raises(DdfError, match="object 42000.*defined twice"):
        parse_ddf(text.replace("</LWM2M>", body + "</LWM2M>"), source="two.xml")


def test_load_ddf_file_names_missing_file(tmp_path: FsPath) -> None:
    with pytest.raises(DdfError, match="nope.xml"):
        load_ddf_file(tmp_path / "nope.xml")
    bad = tmp_path / "vendor.xml"
    bad.write_text(ddf(ITEM.format(rid=0, name="A", ops="R", type="Strin")))
    with pytest.raises(DdfError, match=r"vendor\.xml: object 42000: resource 0: <Type>"):
        load_ddf_file(bad)


# --- check_value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("/3/0/13", 1_700_000_000, 1_700_000_000),
        ("/3/0/13", dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc), 1_714_564_800),
        ("/3/0/14", "UTC+02:00", "UTC+02:00"),
        ("/1/0/1", 300, 300),
        ("/1/0/1", -(2**63), -(2**63)),
        ("/1/0/6", False, False),
        ("/1/0/10", ObjLink(11, 0), ObjLink(11, 0)),
        ("/5/0/0", bytearray(b"\x00\x01"), b"\x00\x01"),
        ("/5/0/1", "coap://example.org/fw", "coap://example.org/fw"),
        ("/5/0/11", 2, 2),
        ("/5/0/13", 2**64 - 1, 2**64 - 1),
        ("/33100/0/12", bytes(32), bytes(32)),
    ],
)
def test_check_value_accepts(registry: ObjectRegistry, path: str, value: object, expected: object) -> None:
    got = check_value(registry, P(path), value)  # type: ignore[arg-type]
    assert got == expected and type(got) is type(expected)
    assert registry.check_value(P(path), value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "value", "error", "needles"),
    [
        ("/99/0/0", 1, NotFound, ["/99/0/0", "object 99"]),
        ("/3/0/99", 1, NotFound, ["/3/0/99", "Device", "no resource 99"]),
        ("/3/0/0", "ACME", MethodNotAllowed, ["/3/0/0", "Manufacturer", "not writable"]),
        ("/3/0/4", "", MethodNotAllowed, ["/3/0/4", "Reboot", "executable"]),
        ("/0/0/0", "coap://x", MethodNotAllowed, ["/0/0/0", "bootstrap"]),
        ("/3/0/13", "1700000000", BadRequest, ["/3/0/13", "Current Time", "expected Time", "str '1700000000'"]),
        ("/3/0/13", 1.5, BadRequest, ["Current Time", "float 1.5"]),
        ("/3/0/13", dt.datetime(2024, 5, 1, 12), BadRequest, ["aware datetime"]),
        ("/1/0/1", True, BadRequest, ["/1/0/1", "Lifetime", "expected Integer", "bool True"]),
        ("/1/0/1", 5.0, BadRequest, ["Lifetime", "expected Integer", "float 5.0"]),
        ("/1/0/1", 2**63, BadRequest, ["Lifetime", "64-bit"]),
        ("/1/0/6", "true", BadRequest, ["Notification Storing", "expected Boolean", "str 'true'"]),
        ("/1/0/6", 1, BadRequest, ["expected Boolean", "int 1"]),
        ("/5/0/0", "abc", BadRequest, ["/5/0/0", "Package", "expected Opaque", "str 'abc'"]),
        ("/1/0/10", "11:0", BadRequest, ["APN Link", "expected Objlnk", "str '11:0'"]),
        ("/5/0/11", 3, BadRequest, ["/5/0/11", "Severity", "outside the range 0..2"]),
        ("/5/0/11", -1, BadRequest, ["outside the range 0..2"]),
        ("/5/0/13", -1, BadRequest, ["/5/0/13", "Maximum Defer Period", "0..2**64-1"]),
        ("/5/0/13", 2**64, BadRequest, ["0..2**64-1"]),
        ("/3/0/13/0", 1, BadRequest, ["/3/0/13/0", "single-instance", "use /3/0/13"]),
        ("/3/0", 1, BadRequest, ["/3/0", "resource"]),
    ],
)
def test_check_value_rejects(registry: ObjectRegistry, path: str, value: object, error: type[LwM2MError],
                             needles: list[str]) -> None:
    with pytest.raises(error) as info:
        check_value(registry, P(path), value)  # type: ignore[arg-type]
    for needle in needles:
        assert needle in info.value.message, (needle, info.value.message)


def test_objlink_out_of_range_cannot_exist() -> None:
    with pytest.raises(BadRequest, match="70000:0"):
        ObjLink(70000, 0)


def test_check_value_read_only_allowed_when_not_a_write(registry: ObjectRegistry) -> None:
    assert check_value(registry, P("/3/0/0"), "ACME", for_write=False) == "ACME"
    assert check_value(registry, P("/3/0/6/1"), 5, for_write=False) == 5
    with pytest.raises(BadRequest, match="outside the range 0..7"):
        check_value(registry, P("/3/0/6/1"), 9, for_write=False)
    with pytest.raises(BadRequest, match="multiple-instance resource.*/3/0/6/0"):
        check_value(registry, P("/3/0/6"), 5, for_write=False)


def test_float_and_corelnk_resources() -> None:
    text = ddf(ITEM.format(rid=0, name="Temp", ops="RW", type="Float").replace("<RangeEnumeration></RangeEnumeration>",
               "<RangeEnumeration>-40..125</RangeEnumeration>")
               + ITEM.format(rid=1, name="Links", ops="RW", type="Corelnk"))
    reg = ObjectRegistry()
    for model in parse_ddf(text):
        reg.add(model)
    assert check_value(reg, P("/42000/0/0"), 21) == 21.0 and isinstance(check_value(reg, P("/42000/0/0"), 21), float)
    assert check_value(reg, P("/42000/0/0"), -40.0) == -40.0
    for bad, needle in [(126, "outside the range -40..125"), (float("nan"), "finite"), ("1.5", "expected Float"),
                        (2**60 + 1, "exactly")]:
        with pytest.raises(BadRequest, match=needle):
            check_value(reg, P("/42000/0/0"), bad)  # type: ignore[arg-type]
    assert check_value(reg, P("/42000/0/1"), "</3/0>,</4>") == "</3/0>,</4>"
    with pytest.raises(BadRequest, match="Corelnk"):
        check_value(reg, P("/42000/0/1"), "3/0")
    assert parse_cli_value(reg, P("/42000/0/0"), "-3.5e1") == -35.0
    with pytest.raises(BadRequest, match="expected Float"):
        parse_cli_value(reg, P("/42000/0/0"), "nan")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0..100", (0, 100)), ("0-255", (0, 255)), ("1..5", (1, 5)), ("-40..125", (-40, 125)), (" 0 .. 3 ", (0, 3)),
     ("0..255 bytes", None), ("16,32,48", None), ("6", None), ("none|sp|dp", None), ("", None), ("5..1", None)],
)
def test_numeric_range(text: str, expected: tuple[int, int] | None) -> None:
    assert numeric_range(text) == expected


# --- parse_cli_value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("/1/0/1", "86400", 86400),
        ("/1/0/1", " -5 ", -5),
        ("/1/0/1", "0x1F", 31),
        ("/1/0/6", "true", True),
        ("/1/0/6", "FALSE", False),
        ("/1/0/6", "1", True),
        ("/1/0/6", "0", False),
        ("/3/0/13", "1700000000", 1_700_000_000),
        ("/3/0/13", "2024-05-01T12:00:00Z", 1_714_564_800),
        ("/3/0/13", "2024-05-01T14:00:00+02:00", 1_714_564_800),
        ("/3/0/15", "Europe/Helsinki", "Europe/Helsinki"),
        ("/5/0/1", " coap://h/fw ", " coap://h/fw "),
        ("/33100/0/12", "hex:00ff10", b"\x00\xff\x10"),
        ("/33100/0/12", "hex:00:FF:10", b"\x00\xff\x10"),
        ("/33100/0/12", "base64:AP8Q", b"\x00\xff\x10"),
        ("/33100/0/12", "hex:", b""),
        ("/1/0/10", "11:0", ObjLink(11, 0)),
        ("/5/0/13", "3600", 3600),
    ],
)
def test_parse_cli_value(registry: ObjectRegistry, path: str, text: str, expected: object) -> None:
    got = parse_cli_value(registry, P(path), text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("path", "text", "error", "needles"),
    [
        ("/1/0/1", "1.5", BadRequest, ["/1/0/1", "Lifetime", "expected Integer", "'1.5'"]),
        ("/1/0/1", "", BadRequest, ["expected Integer", "''"]),
        ("/1/0/1", "12abc", BadRequest, ["'12abc'"]),
        ("/1/0/6", "yes", BadRequest, ["/1/0/6", "expected Boolean", "'yes'"]),
        ("/3/0/13", "2024-05-01T12:00:00", BadRequest, ["Current Time", "UTC offset", "'2024-05-01T12:00:00'"]),
        ("/3/0/13", "yesterday", BadRequest, ["expected Time", "'yesterday'"]),
        ("/33100/0/12", "00ff", BadRequest, ["Package Signing Public Key", "hex:", "base64:", "'00ff'"]),
        ("/33100/0/12", "hex:0g", BadRequest, ["expected Opaque as hex", "'hex:0g'"]),
        ("/33100/0/12", "base64:!!", BadRequest, ["expected Opaque as base64"]),
        ("/1/0/10", "11-0", BadRequest, ["APN Link", "OBJECT:INSTANCE", "'11-0'"]),
        ("/1/0/10", "11:70000", BadRequest, ["11:70000", "0..65535"]),
        ("/5/0/11", "9", BadRequest, ["Severity", "outside the range 0..2"]),
        ("/5/0/13", "-1", BadRequest, ["Maximum Defer Period", "0..2**64-1"]),
        ("/3/0/0", "ACME", MethodNotAllowed, ["/3/0/0", "Manufacturer", "not writable"]),
        ("/3/0/4", "1", MethodNotAllowed, ["Reboot", "executable"]),
        ("/3/0/77", "1", NotFound, ["/3/0/77"]),
        ("/77/0/1", "1", NotFound, ["/77/0/1", "object 77"]),
    ],
)
def test_parse_cli_value_rejects(registry: ObjectRegistry, path: str, text: str, error: type[LwM2MError],
                                 needles: list[str]) -> None:
    with pytest.raises(error) as info:
        parse_cli_value(registry, P(path), text)
    for needle in needles:
        assert needle in info.value.message, (needle, info.value.message)


LAUGHS = ('<?xml version="1.0" encoding="{enc}"?>\n<!DOCTYPE LWM2M [<!ENTITY a "aaaaaaaaaa">'
          '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n')
EXTERNAL = '<?xml version="1.0" encoding="{enc}"?>\n<!DOCTYPE LWM2M [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n'


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8"])
@pytest.mark.parametrize("prolog", [LAUGHS, EXTERNAL], ids=["entity-expansion", "external-entity"])
def test_a_doctype_is_refused_in_any_encoding(encoding: str, prolog: str) -> None:
    """A byte search for ``<!DOCTYPE`` misses UTF-16/32 (every other byte is NUL); the parser does not."""
    body = ddf(ITEM.format(rid=1, name="&c;" if prolog is LAUGHS else "&x;", ops="R", type="String")).split("\n", 1)[1]
    text = prolog.format(enc=encoding.upper().replace("-LE", "LE").replace("-BE", "BE")) + body
    data = text.encode(encoding)
    assert b"<!DOCTYPE" not in data or encoding == "utf-8"
    with pytest.raises(DdfError) as info:
        parse_ddf(data, source="evil.xml")
    assert "DOCTYPE and ENTITY declarations are not allowed" in info.value.message and "evil.xml" in info.value.message
    plain = ddf(ITEM.format(rid=1, name="fine", ops="R", type="String")).split("\n", 1)[1]  # no DOCTYPE: parses
    decl = '<?xml version="1.0" encoding="{}"?>\n'.format(encoding.upper().replace("-LE", "LE").replace("-BE", "BE"))
    assert parse_ddf((decl + plain).encode(encoding))[0].resources[1].name == "fine"
