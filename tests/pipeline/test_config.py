"""Configuration: YAML + flags into dataclasses; unknown keys and bad values are clear errors."""

import pytest

from swapstream.core.errors import ConfigError
from swapstream.pipeline.cli import build_parser, main
from swapstream.pipeline.cli import convert as convert_command
from swapstream.pipeline.config import ConvertConfig, fill, load_yaml, merge


def test_yaml_sections_fill_the_stage_settings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("detect: {min_face: 48}\nblend: {color: hist, sharpen: unsharp}\nencode: {crf: 22}\n")
    cfg = fill(ConvertConfig, merge(load_yaml(f), {"swap": {"model": "m"}, "blend": {"color": "none"}}))
    assert cfg.detect.min_face == 48 and cfg.encode.crf == 22
    assert cfg.blend.color == "none" and cfg.blend.sharpen == "unsharp"  # flags win over the file
    assert cfg.align.smoothing is True  # untouched defaults stay


@pytest.mark.parametrize("values, match", [
    ({"detectt": {}}, "unknown setting config.detectt"),
    ({"blend": {"colour": "hist"}}, "unknown setting config.blend.colour"),
    ({"blend": {"color": "sepia"}}, "blend.color='sepia' is not allowed"),
    ({"blend": {"mouth": "open"}}, "blend.mouth='open' is not allowed; set it to one of: auto, keep, swap"),
    ({"blend": {"occlusion": "xseg"}}, "blend.occlusion='xseg' is not allowed; set it to one of: learned"),
    ({"blend": {"detail": 3}}, "blend.detail=3 is not allowed; set it to 0-1"),
    ({"detect": {"min_face": 2}}, "min_face 2"),
])
def test_bad_settings_are_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        fill(ConvertConfig, values)


def test_bad_yaml_is_an_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("detect: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(f)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_cli_help_names_every_command_and_consent(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("extract", "train", "convert", "demo"):
        assert cmd in out
    assert "consent" in out
    args = build_parser().parse_args(["convert", "in.mp4", "out.mp4", "--model", "m"])
    assert args.direction is None and args.func is convert_command.run


def test_the_swap_section_is_shared_and_flat_swap_keys_still_load(tmp_path):
    from swapstream.pipeline.config import LiveConfig, convert_values, live_values

    f = tmp_path / "both.yaml"
    f.write_text("swap: {model: m, engine: onnx}\nblend: {color: hist}\noutputs: {record: r.mp4}\n"
                 "encode: {crf: 20}\n")
    conv = fill(ConvertConfig, convert_values(load_yaml(f)))  # live's outputs left out
    live = fill(LiveConfig, live_values(load_yaml(f)))  # convert's encode left out
    assert conv.swap == live.swap and conv.swap.model == "m" and conv.swap.engine == "onnx"
    assert live.outputs == {"record": "r.mp4"} and conv.encode.crf == 20
    old = tmp_path / "flat.yaml"  # swap keys at the top level, as before the swap section
    old.write_text("model: m\ndirection: b2a\n")
    assert fill(ConvertConfig, load_yaml(old)).swap.direction == "b2a"
    with pytest.raises(ConfigError, match="unknown setting config.swap.colour"):
        fill(ConvertConfig, {"swap": {"colour": "x"}})


def test_the_map_section_fills_convert_and_live_relative_to_the_file(tmp_path):
    from swapstream.pipeline.cli.common import map_values, settings_file
    from swapstream.pipeline.config import LiveConfig, convert_values, live_values

    f = tmp_path / "cast.yaml"
    f.write_text("map: {people/alice: models/alice_to_carol, /abs/bob.jpg: /abs/bob_to_dave}\n")
    conv = fill(ConvertConfig, convert_values(settings_file(str(f))))
    live = fill(LiveConfig, live_values(settings_file(str(f))))
    assert conv.map == live.map == {str(tmp_path / "people/alice"): str(tmp_path / "models/alice_to_carol"),
                                    "/abs/bob.jpg": "/abs/bob_to_dave"}
    assert map_values(["a.jpg=m1", "dir/=m2"]) == {"a.jpg": "m1", "dir/": "m2"}
    for bad, match in ((["a.jpg"], "is not REF=MODEL"), (["=m"], "is not REF=MODEL"),
                       (["a.jpg=m1", "a.jpg=m2"], "gives a.jpg twice")):
        with pytest.raises(ConfigError, match=match):
            map_values(bad)


def test_frames_in_flight_default_to_one_with_the_browser_camera_and_two_else():
    from swapstream.pipeline.config import LiveConfig, live_in_flight

    assert live_in_flight(LiveConfig()) == 2
    assert live_in_flight(LiveConfig(camera="browser")) == 1
    assert live_in_flight(LiveConfig(camera="browser", in_flight=2)) == 2
    assert live_in_flight(fill(LiveConfig, {"in_flight": 3})) == 3
    with pytest.raises(ConfigError, match="in-flight 9"):
        LiveConfig(in_flight=9)
    parsed = build_parser().parse_args(["live", "--model", "m", "--in-flight", "1"])
    assert parsed.in_flight == 1
