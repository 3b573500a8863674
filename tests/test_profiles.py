"""Device profiles: the shipped files load, their numbers match the datasheets, operators can add
and override profiles, and every kind of bad file is an error naming the file, the key and the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import device_profiles as dp
from device_profiles import ProfileError, get_profile, load_profile, load_profiles, match_device

KB, MB = 1024, 1024 * 1024
REQUIRED = {"nrf52840", "nrf5340", "stm32l4r5", "stm32f746", "stm32h743", "esp32", "esp32s3", "esp32c3",
            "rp2040", "apollo3", "samd21", "rpi-zero2w"}
SHIPPED = load_profiles()


@pytest.fixture(autouse=True)
def no_env_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dp.ENV_VAR, raising=False)


def test_every_required_profile_ships_and_loads() -> None:
    assert REQUIRED <= set(SHIPPED)
    for name, p in SHIPPED.items():
        assert p.name == name == Path(p.source).stem
        assert Path(p.source).parent == dp.PROFILE_DIR


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_numbers_are_sane(name: str) -> None:
    p = SHIPPED[name]
    assert 1 <= p.clock_mhz <= 2000
    assert 0 < p.sram_free <= p.sram_total and 0 < p.flash_free <= p.flash_total
    assert p.firmware_sram < p.sram_total and p.firmware_flash < p.flash_total
    assert 0 < p.max_package <= p.flash_free
    assert p.fpu in dp.FPUS and p.runtimes
    for r in p.runtimes:
        assert dp.installed_backends(r.name) and r.ram <= p.sram_free and r.version
    assert p.runtime("tflm") is not None and p.operators
    assert all(op.isupper() for op in p.operators)
    assert p.match_manufacturer and p.match_model


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_profile_cites_its_sources(name: str) -> None:
    p = SHIPPED[name]
    assert p.references and all("https://" in ref for ref in p.references)
    text = Path(p.source).read_text()
    assert "ESTIMATE" in text  # firmware and runtime costs are estimates and say so


# Exact figures from the datasheets cited in each file.
DATASHEET = {
    "nrf52840": dict(sram_total=256 * KB, flash_total=1 * MB, clock_mhz=64, core="cortex-m4f", fpu="sp"),
    "nrf5340": dict(sram_total=512 * KB, flash_total=1 * MB, clock_mhz=128, core="cortex-m33", fpu="sp"),
    "stm32l4r5": dict(sram_total=640 * KB, flash_total=2 * MB, clock_mhz=120, core="cortex-m4f", fpu="sp"),
    "stm32f746": dict(sram_total=320 * KB, flash_total=1 * MB, clock_mhz=216, core="cortex-m7", fpu="sp"),
    "stm32h743": dict(sram_total=1 * MB, flash_total=2 * MB, clock_mhz=480, core="cortex-m7", fpu="dp"),
    "esp32": dict(sram_total=520 * KB, flash_total=4 * MB, clock_mhz=240, core="xtensa-lx6", fpu="sp"),
    "esp32s3": dict(sram_total=512 * KB, flash_total=8 * MB, clock_mhz=240, core="xtensa-lx7", fpu="sp"),
    "esp32c3": dict(sram_total=400 * KB, flash_total=4 * MB, clock_mhz=160, core="riscv32imc", fpu="none"),
    "rp2040": dict(sram_total=264 * KB, flash_total=2 * MB, clock_mhz=133, core="cortex-m0plus", fpu="none"),
    "apollo3": dict(sram_total=384 * KB, flash_total=1 * MB, core="cortex-m4f", fpu="sp"),
    "samd21": dict(sram_total=32768, flash_total=256 * KB, clock_mhz=48, core="cortex-m0plus", fpu="none"),
    "rpi-zero2w": dict(sram_total=512 * MB, clock_mhz=1000, core="aarch64", fpu="dp"),
}


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_datasheet_facts(name: str) -> None:
    p = SHIPPED[name]
    assert {k: getattr(p, k) for k in DATASHEET[name]} == DATASHEET[name]


def test_runtime_choices_follow_the_hardware() -> None:
    assert "pie" in SHIPPED["esp32s3"].extensions and "esp-nn" in SHIPPED["esp32s3"].runtime("tflm").features
    assert "cmsis-nn" in SHIPPED["stm32l4r5"].runtime("tflm").features
    assert "simd" in SHIPPED["rpi-zero2w"].runtime("wamr").features
    samd21, l4 = SHIPPED["samd21"], SHIPPED["stm32l4r5"]
    assert samd21.sram_free < 16 * KB and samd21.runtime("wasm3") is None  # the point: tiny
    assert set(samd21.operators) < set(l4.operators)
    # MLPerf Tiny's four reference models run on its reference board.
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE",
            "ADD", "QUANTIZE", "DEQUANTIZE"} <= set(l4.operators)


def test_free_space_arithmetic() -> None:
    p = SHIPPED["nrf52840"]
    assert p.sram_free == p.sram_total - p.firmware_sram
    assert p.flash_free == p.flash_total - p.firmware_flash - sum(r.flash for r in p.runtimes)
    assert p.runtime("nonexistent") is None
    assert p.figures()["runtimes"]["wasm3"]["flash"] == p.runtime("wasm3").flash


@pytest.mark.parametrize("manufacturer, model, expected", [
    ("Nordic Semiconductor", "nRF52840-QIAA", "nrf52840"),
    ("nordic semiconductor asa", "NRF52840", "nrf52840"),
    ("Nordic Semiconductor", "nRF5340-QKAA", "nrf5340"),
    ("Espressif", "ESP32-S3-WROOM-1", "esp32s3"),      # longest prefix beats esp32's "ESP32"
    ("Espressif Systems", "ESP32-WROOM-32E", "esp32"),
    ("STMicroelectronics", "STM32L4R5ZI", "stm32l4r5"),
    ("Raspberry Pi", "RP2040", "rp2040"),
    ("Raspberry Pi", "Raspberry Pi Zero 2 W Rev 1.0", "rpi-zero2w"),
    ("Microchip", "ATSAMD21G18A", "samd21"),
    ("Nordic Semiconductor", "nRF9160", None),          # known maker, unknown model
    ("Acme Widgets", "nRF52840", None),                 # model prefix alone is not enough
    ("Nordic", "", None),
    (None, "nRF52840", None),
])
def test_match_device(manufacturer: str | None, model: str | None, expected: str | None) -> None:
    found = match_device(manufacturer, model, SHIPPED)
    assert (found.name if found else None) == expected


def test_match_device_loads_shipped_profiles_by_default() -> None:
    assert match_device("Nordic Semiconductor", "nRF52840-QIAA").name == "nrf52840"
    assert match_device("Nobody", "Nothing") is None


VALID = """\
name = "{name}"
title = "Test board"
vendor = "Test Vendor"
core = "cortex-m4f"
clock_mhz = 64
sram_total = 262144
flash_total = 1048576
fpu = "sp"
extensions = ["dsp"]
accelerator = "none"
max_package = 131072
references = ["Test datasheet: https://example.com/ds.pdf"]

[firmware]
sram = 65536
flash = 262144

[match]
manufacturer = ["Test Vendor"]
model = ["TB-1"]

[[runtimes]]
name = "tflm"
version = "2024-06"
features = ["cmsis-nn"]
ram = 4096
flash = 65536
operators = ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"]

[[runtimes]]
name = "wasm3"
version = "0.5.0"
ram = 16384
flash = 65536
"""


def write(directory: Path, name: str, text: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(VALID.format(name=name) if text is None else text)
    return path


def test_operator_directory_adds_and_overrides(tmp_path: Path) -> None:
    ops = tmp_path / "ops"
    write(ops, "testboard")
    shipped = Path(SHIPPED["nrf52840"].source).read_text()  # an operator copies and edits a shipped file
    write(ops, "nrf52840", shipped.replace("max_package = 262144", "max_package = 65536", 1))
    profiles = load_profiles([ops])
    assert set(SHIPPED) | {"testboard"} == set(profiles)
    assert profiles["nrf52840"].max_package == 65536
    assert profiles["nrf52840"].source == str(ops / "nrf52840.toml")
    assert profiles["esp32"] == SHIPPED["esp32"]
    assert match_device("Nordic Semiconductor", "nRF52840", profiles).source == str(ops / "nrf52840.toml")
    assert match_device("Test Vendor", "TB-1 rev B", profiles).name == "testboard"
    assert get_profile("testboard", [ops]).runtime("wasm3").features == ()


def test_later_directory_wins_and_env_var_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, env = tmp_path / "a", tmp_path / "b", tmp_path / "env"
    write(first, "testboard")
    write(second, "testboard", VALID.format(name="testboard").replace('title = "Test board"', 'title = "Second"'))
    assert load_profiles([first, second])["testboard"].title == "Second"
    write(env, "testboard", VALID.format(name="testboard").replace('title = "Test board"', 'title = "Env"'))
    write(env, "envboard")
    monkeypatch.setenv(dp.ENV_VAR, f"{env}")
    profiles = load_profiles([first, second])
    assert profiles["testboard"].title == "Env" and "envboard" in profiles  # env dirs come after extra_dirs
    monkeypatch.setenv(dp.ENV_VAR, f"{first}{os.pathsep}")
    assert load_profiles()["testboard"].title == "Test board"


def test_missing_directory_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profiles([tmp_path / "nope"])
    with pytest.raises(ProfileError) as err:
        get_profile("nrf99999")
    assert "nrf99999" in str(err.value) and "nrf52840" in str(err.value) and "samd21" in str(err.value)


BAD = [
    # (what, replace old, with new, key, reason fragment)
    ("unknown key", 'fpu = "sp"', 'fpu = "sp"\nsram_totl = 5', "sram_totl", "unknown key (did you mean 'sram_total'"),
    ("unknown sub-key", "sram = 65536", "sram = 65536\nsramm = 1", "firmware.sramm", "unknown key"),
    ("negative size", "sram_total = 262144", "sram_total = -5", "sram_total",
     "expected a positive integer, got -5"),
    ("float size", "flash_total = 1048576", "flash_total = 1.5", "flash_total", "expected a positive integer"),
    ("firmware > total", "sram = 65536", "sram = 300000", "firmware.sram",
     "firmware SRAM 300000 exceeds sram_total 262144"),
    ("wrong fpu", 'fpu = "sp"', 'fpu = "half"', "fpu", "expected one of 'none', 'sp', 'dp', got 'half'"),
    ("name != stem", 'name = "board"', 'name = "other"', "name", "must equal the file stem 'board'"),
    ("malformed runtime", 'name = "wasm3"', 'name = "ONNX RT"', "runtimes[1].name", "got 'ONNX RT'"),
    ("missing key", 'vendor = "Test Vendor"\n', "", "vendor", "missing required key"),
    ("lower-case operator", '"SOFTMAX"]', '"softmax"]', "runtimes[0].operators", "upper-case operator"),
    ("operators on wasm3", 'version = "0.5.0"', 'version = "0.5.0"\noperators = ["ADD"]',
     "runtimes[1].operators", "runtimes with an operator list (tflm), not wasm3"),
    ("runtimes overflow flash", "flash = 262144", "flash = 1000000", "runtimes", "exceeds flash_total"),
    ("package > free flash", "max_package = 131072", "max_package = 900000", "max_package",
     "exceeds the flash free"),
    ("runtime RAM > free", "ram = 16384", "ram = 250000", "runtimes[1].ram", "exceeds the RAM free for ML"),
    ("empty references", 'references = ["Test datasheet: https://example.com/ds.pdf"]', "references = []",
     "references", "non-empty array"),
]


def test_a_runtime_no_installed_backend_targets_loads_and_is_named(tmp_path: Path) -> None:
    """Firmware may carry a runtime no installed backend targets (a vendor NPU runtime whose plug-in
    is not installed): the board loads, and says which of its runtimes nothing here can use."""
    path = write(tmp_path, "board", VALID.format(name="board").replace('name = "wasm3"', 'name = "onnx"', 1))
    p = load_profile(path)
    assert [r.name for r in p.runtimes] == ["tflm", "onnx"] and dp.installed_backends("onnx") == ()
    assert p.unused_runtimes() == ("onnx",)


@pytest.mark.parametrize("what, old, new, key, reason", BAD, ids=[b[0] for b in BAD])
def test_bad_file_names_file_key_and_reason(tmp_path: Path, what: str, old: str, new: str, key: str,
                                            reason: str) -> None:
    good = VALID.format(name="board")
    assert old in good, what
    path = write(tmp_path, "board", good.replace(old, new, 1))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(f"{path}: key '{key}': "), message
    assert reason in message and err.value.key == key


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "board", VALID.format(name="board").replace('core = "cortex-m4f"', "core = "))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: line 4: invalid TOML"), str(err.value)


def test_a_bad_operator_file_fails_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path, "board", VALID.format(name="board").replace('fpu = "sp"', 'fpu = "quad"'))
    with pytest.raises(ProfileError, match=r"board\.toml: key 'fpu'"):
        load_profiles([tmp_path])


def test_profiles_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SHIPPED["esp32"].sram_total = 1  # type: ignore[misc]
