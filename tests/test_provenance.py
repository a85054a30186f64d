"""The one ledger format and stale-result check shared by checkpoints, the reference cache, BoN-SFT rounds and the
anchor (`trl_bon.provenance`)."""

import pytest

from trl_bon.provenance import StaleResultError, differences, read_record, refuse_if_stale, write_record


def test_differences_are_named_by_dotted_path():
    saved = {"seed": 1, "generation_settings": {"temperature": 1.0, "top_p": 1.0}, "version": "0.1"}
    current = {"seed": 1, "generation_settings": {"temperature": 0.7, "top_p": 1.0}}
    assert differences(saved, current) == [("generation_settings.temperature", 1.0, 0.7, "")]  # `version`: not ours


def test_numbers_agree_within_a_json_round_trip_but_types_count():
    assert differences({"rate": 0.1 + 0.2, "ids": [0.3]}, {"rate": 0.3, "ids": (0.30000000000000004,)}) == []
    assert differences({"flag": 1}, {"flag": True}) == [("flag", 1, True, "")]
    assert differences({"rate": 0.3}, {"rate": 0.31}) == [("rate", 0.3, 0.31, "")]


def test_a_labelled_object_is_compared_by_content_and_shown_by_its_label():
    moved = differences(
        {"model": {"name_or_path": "/a", "config": "h1"}}, {"model": {"name_or_path": "/b", "config": "h1"}}
    )
    assert moved == []  # the same model in another folder
    assert differences(
        {"model": {"name_or_path": "/a", "config": "h1"}}, {"model": {"name_or_path": "/b", "config": "h2"}}
    ) == [("model", "/a", "/b", " (config differ)")]


def test_refusal_names_every_field_both_values_and_the_escape_hatch():
    with pytest.raises(StaleResultError) as error:
        refuse_if_stale(
            {"n": 2, "reward": {"weights": [1.0]}},
            {"n": 3, "reward": {"weights": [2.0]}},
            subject="The thing at /x was made with",
            escape="Delete /x.",
            saved_as="cache has",
            current_as="expected",
        )
    assert str(error.value) == (
        "The thing at /x was made with other settings than this run (fields that differ: 'n', 'reward'): "
        "n: cache has 2, expected 3; reward.weights: cache has [1.0], expected [2.0]. Delete /x."
    )
    assert isinstance(error.value, ValueError)
    refuse_if_stale({"n": 2, "extra": 1}, {"n": 2}, subject="", escape="")  # nothing differs: no error


def test_records_are_written_atomically_and_a_damaged_one_is_named(tmp_path):
    path = tmp_path / "record.json"
    write_record(path, {"a": 1, "b": [1.5]})
    assert read_record(path, "record", "Fix it.") == {"a": 1, "b": [1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    path.write_text('{"a": 1,')
    with pytest.raises(ValueError, match=rf"The record {path} is damaged \(.*\)\. Fix it\."):
        read_record(path, "record", "Fix it.")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_record(path, "record", "Fix it.")
